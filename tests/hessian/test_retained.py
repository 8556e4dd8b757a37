"""Retained gradient graphs of HessianOperator (``retain_graph``) against dense Hessians.

Products through the kept graphs equal the dense float64 Hessian times the vectors over
unequal batches; the graphs are chosen automatically while small, dropped when too large,
refused with ``retain_graph=True`` beyond memory, and rebuilt whenever the model changes
(an optimizer step, an edit through ``.data``, new buffers, a train/eval switch).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from _oracles import dense_hessian
from tailwise._errors import UsageError
from tailwise.hessian import HessianOperator, _budget, top_eigenvalues
from tailwise.hessian.hvp import RetainedGradient
from tailwise.models import MLP, SmallCNN

F64 = torch.float64
cross_entropy = nn.functional.cross_entropy
Batches = list[tuple[Tensor, Tensor]]


class CountingBatches:
    """A re-iterable of batches that counts the passes over it."""

    def __init__(self, batches: Batches) -> None:
        self.batches, self.passes = batches, 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.passes += 1
        yield from self.batches


def mlp_problem() -> tuple[nn.Module, Tensor, Tensor, Batches]:
    """A float64 tanh MLP (53 parameters) and 10 examples in unequal batches of 4, 4, 2."""
    torch.manual_seed(0)
    model = MLP(6, [5], 3, activation="tanh").double().eval()
    x, y = torch.randn(10, 6, dtype=F64), torch.randint(0, 3, (10,))
    return model, x, y, [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]


def cnn_problem() -> tuple[nn.Module, Tensor, Tensor, Batches]:
    """A float64 CNN with eval-mode BatchNorm (non-trivial statistics), batches of 7 and 3."""
    torch.manual_seed(0)
    model = SmallCNN(1, 3, channels=(2, 3)).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    x, y = torch.randn(10, 1, 8, 8, dtype=F64), torch.randint(0, 3, (10,))
    return model, x, y, [(x[:7], y[:7]), (x[7:], y[7:])]


def block(n: int, k: int, seed: int = 1) -> Tensor:
    return torch.randn((n, k), generator=torch.Generator().manual_seed(seed), dtype=F64)


def assert_close(actual: Tensor, expected: Tensor, tol: float = 1e-10) -> None:
    scale = max(1.0, float(expected.abs().max()))
    error = float((actual - expected).abs().max())
    assert error <= tol * scale, f"max abs error {error:.3e} > {tol:.0e} * {scale:.3g}"


@pytest.mark.parametrize("problem", [mlp_problem, cnn_problem])
def test_retained_products_equal_the_dense_hessian(problem: object) -> None:
    model, x, y, batches = problem()  # type: ignore[operator]
    data = CountingBatches(batches)
    op = HessianOperator(model, cross_entropy, data)
    assert op.retain_graph is None and op.retains_graph and op.graph_bytes > 0
    passes = data.passes  # the determinism check's two passes; the first built the graphs
    assert passes == 2
    hessian = dense_hessian(model, cross_entropy, x, y, op.names)
    v = block(op.num_params, 3)
    assert_close(op.matmat(v), hessian @ v)
    assert_close(op.matvec(v[:, 0]), hessian @ v[:, 0])
    assert data.passes == passes  # no pass over the data: the products used the graphs
    fresh = HessianOperator(model, cross_entropy, batches, retain_graph=False)
    assert not fresh.retains_graph and fresh.graph_bytes == 0
    assert_close(op.matmat(v), fresh.matmat(v), tol=1e-12)


def test_graphs_are_built_by_the_first_product_without_the_check() -> None:
    model, x, y, batches = mlp_problem()
    data = CountingBatches(batches)
    op = HessianOperator(model, cross_entropy, data, check_deterministic=False)
    assert data.passes == 0 and op.graph_bytes == 0 and op.retains_graph
    v = block(op.num_params, 2)
    expected = dense_hessian(model, cross_entropy, x, y) @ v
    assert_close(op.matmat(v), expected)
    assert data.passes == 1 and op.graph_bytes > 0
    assert_close(op.matmat(v), expected)
    assert data.passes == 1


def change(model: nn.Module, how: str, x: Tensor, y: Tensor) -> None:
    """Change the parameters (or buffers) of ``model`` in one of the ways users do."""
    if how == "optimizer step":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        optimizer.zero_grad()
        cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    elif how == "edit through .data":  # no version counter moves
        for p in model.parameters():
            p.data.mul_(1.5)
    elif how == "load_state_dict":
        state = {k: v * 0.7 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        model.load_state_dict(state)
    elif how == "new parameter tensor":
        first = next(iter(model.parameters()))
        first.data = first.data * 2.0  # a new storage behind the same Parameter
    elif how == "buffers":
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_var is not None
                module.running_var.mul_(3.0)
    else:
        raise ValueError(how)


@pytest.mark.parametrize(
    "how",
    ["optimizer step", "edit through .data", "load_state_dict", "new parameter tensor", "buffers"],
)
def test_a_changed_model_gets_its_new_hessian(how: str) -> None:
    model, x, y, batches = cnn_problem()
    data = CountingBatches(batches)
    op = HessianOperator(model, cross_entropy, data)
    v = block(op.num_params, 2)
    before = dense_hessian(model, cross_entropy, x, y) @ v
    assert_close(op.matmat(v), before)
    passes = data.passes
    change(model, how, x, y)
    after = dense_hessian(model, cross_entropy, x, y) @ v
    assert float((after - before).abs().max()) > 1e-3  # the change moved the Hessian
    assert_close(op.matmat(v), after)  # the second result is the new Hessian's
    assert data.passes == passes + 1  # rebuilt once, then reused
    assert_close(op.matmat(v), after)
    assert data.passes == passes + 1


def test_a_train_eval_switch_rebuilds_the_graphs() -> None:
    # Dropout: eval mode is deterministic; in train mode (allowed on purpose) each product
    # would draw new masks, and the kept graph of an eval-mode pass would be stale.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x, y = torch.randn(10, 6, dtype=F64), torch.randint(0, 3, (10,))
    op = HessianOperator(model.eval(), cross_entropy, (x, y))
    v = block(op.num_params, 1)
    eval_product = op.matmat(v)
    assert_close(eval_product, dense_hessian(model, cross_entropy, x, y) @ v)
    model.train()
    torch.manual_seed(1)
    train_product = op.matmat(v)  # one draw of the masks, fixed in the new graph
    assert float((train_product - eval_product).abs().max()) > 1e-6
    assert torch.equal(op.matmat(v), train_product)  # the same graph: the same draw
    model.eval()
    assert_close(op.matmat(v), eval_product, tol=1e-12)


def test_train_mode_batch_norm_uses_batch_statistics_and_leaves_the_model_alone() -> None:
    model, x, y, _ = cnn_problem()
    model.train()
    before = {name: b.clone() for name, b in model.named_buffers()}
    op = HessianOperator(model, cross_entropy, (x, y), check_deterministic=False)
    v = block(op.num_params, 2)
    first = op.matmat(v)
    second = op.matmat(v)  # through the kept graph: its saved statistics were not touched
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    reference = copy.deepcopy(model)  # train mode: batch statistics (its own running ones move)
    hessian = dense_hessian(reference, cross_entropy, x, y, op.names)
    assert_close(first, hessian @ v)
    assert torch.equal(first, second) and op.graph_bytes > 0
    model.eval()


def test_automatic_mode_drops_graphs_that_outgrow_their_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, x, y, batches = mlp_problem()
    kept = HessianOperator(model, cross_entropy, batches)
    assert kept.graph_bytes > 0
    # A machine whose share (1/8) holds the first batch's graph but not all three.
    limit = 8 * (kept.graph_bytes * 2 // 3)
    monkeypatch.setattr(_budget, "memory_limit", lambda device: limit)
    data = CountingBatches(batches)
    op = HessianOperator(model, cross_entropy, data, check_deterministic=False)
    v = block(op.num_params, 2)
    expected = dense_hessian(model, cross_entropy, x, y) @ v
    assert_close(op.matmat(v), expected)  # the pass that gave up still gives the product
    assert op.graph_bytes == 0 and not op.retains_graph
    assert_close(op.matmat(v), expected)  # fresh products, one pass each
    assert data.passes == 2
    strict = HessianOperator(model, cross_entropy, batches, retain_graph=True)
    assert strict.graph_bytes > 0  # True ignores the share; only the whole memory counts


def test_forced_retention_beyond_memory_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _, batches = mlp_problem()
    monkeypatch.setattr(_budget, "memory_limit", lambda device: 1024)
    with pytest.raises(UsageError, match=r"retain_graph=True, but the gradient graphs"):
        HessianOperator(model, cross_entropy, batches, retain_graph=True)
    with pytest.raises(UsageError, match="retain_graph must be True, False or None"):
        HessianOperator(model, cross_entropy, batches, retain_graph="yes")  # type: ignore[arg-type]


def test_graph_bytes_grow_with_the_batch() -> None:
    torch.manual_seed(0)
    model = MLP(20, [64, 64], 5).eval()
    sizes = {}
    for batch in (64, 256):
        x, y = torch.randn(batch, 20), torch.randint(0, 5, (batch,))
        graph = RetainedGradient(
            model, cross_entropy, x, y, [n for n, _ in model.named_parameters()]
        )
        sizes[batch] = graph.nbytes
    # The activations (at least 2 x 64 floats per example are saved) dominate.
    assert sizes[64] >= 64 * 2 * 64 * 4
    assert 3.0 <= sizes[256] / sizes[64] <= 4.0


class Unused(nn.Module):
    """A parameter the loss never reads, and a loss linear in the other parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.unused = nn.Linear(3, 2), nn.Parameter(torch.ones(4))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear(x)
        return out


def test_parameters_without_second_derivatives_give_zero_rows() -> None:
    torch.manual_seed(0)
    model = Unused().double()
    x, y = torch.randn(6, 3, dtype=F64), torch.randn(6, 2, dtype=F64)

    def linear_loss(out: Tensor, target: Tensor) -> Tensor:
        return (out * target).mean()  # gradients without a graph: H = 0

    op = HessianOperator(model, linear_loss, (x, y))
    v = block(op.num_params, 2)
    assert torch.equal(op.matmat(v), torch.zeros_like(v))
    mse = HessianOperator(model, nn.functional.mse_loss, (x, y))
    expected = dense_hessian(model, nn.functional.mse_loss, x, y) @ v
    assert_close(mse.matmat(v), expected)
    assert mse.names[0] == "unused"  # a module's own parameters come before its children's
    assert torch.equal(mse.matmat(v)[:4], torch.zeros(4, 2, dtype=F64))


def test_eigenvalues_agree_with_and_without_graphs() -> None:
    model, _, _, batches = cnn_problem()
    kept = top_eigenvalues(model, cross_entropy, batches, k=3, tol=1e-10, progress=False)
    fresh = top_eigenvalues(
        model, cross_entropy, batches, k=3, tol=1e-10, retain_graph=False, progress=False
    )
    np.testing.assert_allclose(kept.eigenvalues, fresh.eigenvalues, rtol=1e-10)
    operator = HessianOperator(model, cross_entropy, batches)
    with pytest.raises(UsageError, match="retain_graph must not be given"):
        top_eigenvalues(operator, k=1, retain_graph=True)


def test_repr_says_whether_graphs_are_kept() -> None:
    model, _, _, batches = mlp_problem()
    assert "retains_graph=True" in repr(HessianOperator(model, cross_entropy, batches))
    off = HessianOperator(model, cross_entropy, batches, retain_graph=False)
    assert "retains_graph=False" in repr(off)
