"""Batch Hessian-vector products against the dense Hessian; no side effects on the model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from _oracles import dense_hessian
from tailwise.hessian import hvp, named_parameters


def split(v: Tensor, model: nn.Module, names: list[str]) -> dict[str, Tensor]:
    params, out, start = dict(model.named_parameters()), {}, 0
    for name in names:
        n = params[name].numel()
        out[name] = v[start : start + n].view_as(params[name])
        start += n
    return out


@pytest.mark.parametrize("method", ["forward-over-reverse", "double-backward"])
@pytest.mark.parametrize("subset", [None, ["2.weight", "2.bias"]])
def test_products_equal_the_dense_hessian(method: str, subset: list[str] | None) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 3, (9,))
    names = list(named_parameters(model, subset))
    hessian = dense_hessian(model, nn.functional.cross_entropy, x, y, names)
    v = torch.randn(hessian.shape[0], dtype=torch.float64)
    product = hvp(
        model,
        nn.functional.cross_entropy,
        x,
        y,
        split(v, model, names),
        params=subset,
        method=method,
    )
    assert list(product) == names
    flat = torch.cat([product[n].flatten() for n in names])
    torch.testing.assert_close(flat, hessian @ v, rtol=1e-10, atol=1e-12)


def test_mse_falls_back_to_double_backward_with_a_warning() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    names = list(named_parameters(model))
    hessian = dense_hessian(model, nn.functional.mse_loss, x, y, names)
    v = torch.randn(hessian.shape[0], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="double backward"):
        product = hvp(model, nn.functional.mse_loss, x, y, split(v, model, names))
    flat = torch.cat([product[n].flatten() for n in names])
    torch.testing.assert_close(flat, hessian @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["forward-over-reverse", "double-backward"])
def test_train_mode_batchnorm_statistics_are_left_unchanged(method: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)
    ).train()
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    before = {n: b.clone() for n, b in model.named_buffers()}
    vectors = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # forward-over-reverse falls back here (in-place BN)
        hvp(model, nn.functional.cross_entropy, x, y, vectors, method=method)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_bad_arguments() -> None:
    model = nn.Linear(2, 2)
    x, y = torch.randn(3, 2), torch.randint(0, 2, (3,))
    with pytest.raises(ValueError, match="unknown parameter"):
        named_parameters(model, ["nope"])
    with pytest.raises(TypeError, match="string"):
        named_parameters(model, "weight")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lack entries"):
        hvp(model, nn.functional.cross_entropy, x, y, {"weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError):
        hvp(model, nn.functional.cross_entropy, x, y, {}, method="finite-differences")
