"""tailwise.hessian.summarize against the functions it combines and the dense Hessian."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from _oracles import dense_hessian
from tailwise import hessian
from tailwise._errors import UsageError
from tailwise.hessian import HessianSummary, summarize

Batches = list[tuple[Tensor, Tensor]]
cross_entropy = nn.functional.cross_entropy


def full(batches: Batches) -> tuple[Tensor, Tensor]:
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_eigenvalues_trace_and_density_match_the_dense_hessian(
    tiny_mlp: tuple[nn.Module, Batches],
) -> None:
    model, batches = tiny_mlp
    found = summarize(
        model, cross_entropy, batches, top_k=3, trace=True, density=True, progress=False
    )
    assert isinstance(found, HessianSummary)
    x, y = full(batches)
    dense = dense_hessian(model, cross_entropy, x, y)
    spectrum = torch.linalg.eigvalsh(dense).numpy()[::-1]
    assert found.num_params == 53 and found.solver == "block" and found.converged
    # The block solver stops at residual tol 1e-3 |lambda|: eigenvalue error ~ tol^2 / gap.
    np.testing.assert_allclose(found.eigenvalues, spectrum[:3], rtol=1e-5)
    assert found.loss == pytest.approx(float(cross_entropy(model(x), y).detach()), rel=1e-12)
    assert found.trace is not None and found.trace_std_error is not None
    assert abs(found.trace - float(dense.trace())) < 5 * found.trace_std_error + 1e-8
    assert found.trace_matvecs <= 99
    assert found.density is not None
    assert found.density.nodes.shape == (2, 53)  # min(80, n) steps, 2 runs
    # n Lanczos steps: the largest node is the top eigenvalue
    assert float(np.nanmax(found.density.nodes)) == pytest.approx(spectrum[0], rel=1e-6)


def test_to_dict_is_json_with_the_clis_keys(tiny_mlp: tuple[nn.Module, Batches]) -> None:
    model, batches = tiny_mlp
    plain = summarize(model, cross_entropy, batches, top_k=2, progress=False).to_dict()
    assert list(plain) == [
        "num_params",
        "loss",
        "method",
        "eigenvalues",
        "converged",
        "eigen_matvecs",
        "seconds",
    ]
    everything = summarize(
        model,
        cross_entropy,
        batches,
        top_k=2,
        solver="power",
        trace=True,
        trace_matvecs=9,
        density=True,
        density_iters=5,
        density_runs=3,
        progress=False,
    )
    data = json.loads(json.dumps(everything.to_dict()))
    assert data["method"] == "power" and len(data["eigenvalues"]) == 2
    assert {"trace", "trace_std_error", "density_nodes", "density_weights"} <= set(data)
    assert np.asarray(data["density_nodes"]).shape == (3, 5)
    assert data["eigenvalues"] == list(everything.eigenvalues)


def test_include_selects_parameters_by_regex(tiny_mlp: tuple[nn.Module, Batches]) -> None:
    model, batches = tiny_mlp
    found = summarize(model, cross_entropy, batches, top_k=2, include=r"1\.", progress=False)
    assert found.names == ("layers.1.weight", "layers.1.bias")
    assert found.num_params == 18
    x, y = full(batches)
    block = dense_hessian(model, cross_entropy, x, y, list(found.names))
    expected = torch.linalg.eigvalsh(block).numpy()[::-1][:2]
    np.testing.assert_allclose(found.eigenvalues, expected, rtol=1e-6)
    with pytest.raises(UsageError, match="'nothing' matches no parameter"):
        summarize(model, cross_entropy, batches, include="nothing", progress=False)
    with pytest.raises(UsageError, match="not a regular expression"):
        summarize(model, cross_entropy, batches, include="(", progress=False)


def test_top_k_beyond_the_solver_limit_is_refused(tiny_mlp: tuple[nn.Module, Batches]) -> None:
    """Issue 9 §4: never a silently shorter answer than asked for."""
    model, batches = tiny_mlp
    with pytest.raises(UsageError, match=r"top_k=5 is more than the 2 eigenvalues .* n=3"):
        summarize(model, cross_entropy, batches, top_k=5, include=r"1\.bias$", progress=False)
    found = summarize(model, cross_entropy, batches, top_k=2, include=r"1\.bias$", progress=False)
    assert found.num_params == 3 and len(found.eigenvalues) == 2  # Lanczos: k <= n - 1
    found = summarize(
        model, cross_entropy, batches, top_k=3, solver="power", include=r"1\.bias$", progress=False
    )
    assert len(found.eigenvalues) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_k": 0}, "top_k must be an int >= 1, got 0"),
        ({"solver": "arnoldi"}, "solver must be one of"),
        ({"trace": True, "trace_matvecs": 2}, "trace_matvecs must be an int >= 3"),
        ({"density": True, "density_iters": 0}, "density_iters"),
        ({"density": True, "density_runs": -1}, "density_runs"),
        ({"seed": -1}, "seed"),
        ({"hvp_method": "finite-differences"}, "hvp_method must be one of"),
    ],
)
def test_bad_values_are_usage_errors(
    tiny_mlp: tuple[nn.Module, Batches], options: dict[str, object], message: str
) -> None:
    model, batches = tiny_mlp
    with pytest.raises(UsageError, match=message):
        summarize(model, cross_entropy, batches, progress=False, **options)  # type: ignore[arg-type]


def test_the_callers_model_is_left_as_it_was(
    batch_norm_net: tuple[nn.Module, Batches],
) -> None:
    model, batches = batch_norm_net
    model[3].eval()  # a mix of modes: every module's own flag must come back
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    found = summarize(model, cross_entropy, batches, top_k=2, trace=True, progress=False)
    assert math.isfinite(found.eigenvalues[0])
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_progress_is_a_parameter_of_every_long_function() -> None:
    import inspect

    for function in (
        hessian.top_eigenvalues,
        hessian.hutchinson_trace,
        hessian.hutchpp_trace,
        hessian.spectral_density,
        hessian.summarize,
    ):
        parameter = inspect.signature(function).parameters["progress"]
        assert parameter.default is True, function.__name__
