"""Batch Hessian-vector products against the dense Hessian; no side effects on the model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from _oracles import dense_hessian
from tailwise.hessian import HVPFallback, hvp, named_parameters, restored_buffers


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
        hvp_method=method,
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
        hvp(model, nn.functional.cross_entropy, x, y, vectors, hvp_method=method)
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
        hvp(model, nn.functional.cross_entropy, x, y, {}, hvp_method="finite-differences")


def test_restored_buffers_puts_back_every_buffer_also_after_an_error() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).train()
    before = {n: b.clone() for n, b in model.named_buffers()}
    with restored_buffers(model):
        model(torch.randn(5, 2) + 3)
    with pytest.raises(RuntimeError, match="boom"), restored_buffers(model):
        model(torch.randn(5, 2) - 3)
        raise RuntimeError("boom")
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    assert int(dict(model.named_buffers())["1.num_batches_tracked"]) == 0


def test_a_fallback_remembers_failures_and_plain_calls_do_not() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    v = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    mse = nn.functional.mse_loss

    def warned(**options: object) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hvp(model, mse, x, y, v, **options)  # type: ignore[arg-type]
        return sum("double backward" in str(w.message) for w in caught)

    first = warned()
    if first == 0:
        pytest.skip("forward-mode mse_loss works in this torch: nothing to fall back from")
    assert warned() == 1  # no process-wide memory: every plain call tries and warns
    memory = HVPFallback()
    assert warned(fallback=memory) == 1
    assert memory.failed(model, mse)
    assert warned(fallback=memory) == 0  # remembered: no retry, no second warning


def test_method_is_a_deprecated_alias() -> None:
    model = nn.Linear(2, 2)
    x, y = torch.randn(3, 2), torch.randint(0, 2, (3,))
    v = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    with pytest.warns(DeprecationWarning, match="hvp_method='double-backward'"):
        old = hvp(model, nn.functional.cross_entropy, x, y, v, method="double-backward")
    new = hvp(model, nn.functional.cross_entropy, x, y, v, hvp_method="double-backward")
    assert all(torch.equal(old[n], new[n]) for n in new)
