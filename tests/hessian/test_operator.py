"""HessianOperator (tailwise.hessian.operator) against dense float64 Hessians."""

from __future__ import annotations

import copy
import doctest
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from _oracles import dense_hessian
from tailwise._errors import UsageError
from tailwise.hessian import operator as operator_module
from tailwise.hessian.operator import HessianOperator
from tailwise.models import MLP, SmallCNN

F64 = torch.float64
cross_entropy = nn.functional.cross_entropy


@dataclass
class Case:
    """A small float64 model with 10 samples and its dense full-data Hessian."""

    model: nn.Module
    inputs: Tensor
    targets: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]

    @property
    def batches(self) -> list[tuple[Tensor, Tensor]]:
        """Unequal batches of 4, 4 and 2 samples."""
        x, y = self.inputs, self.targets
        return [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]


def make_case(name: str) -> Case:
    torch.manual_seed(0)
    if name == "mlp":
        model: nn.Module = MLP(6, [5], 3, activation="tanh").double()
        inputs = torch.randn(10, 6, dtype=F64)
    elif name == "cnn":
        model = SmallCNN(1, 3, channels=(2, 3)).double().eval()
        with torch.no_grad():  # non-trivial eval-mode batch norm statistics
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    assert module.running_mean is not None and module.running_var is not None
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
        inputs = torch.randn(10, 1, 8, 8, dtype=F64)
    else:
        raise ValueError(name)
    return Case(model, inputs, torch.randint(0, 3, (10,)), cross_entropy)


CASES = ["mlp", "cnn"]


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> Case:
    return make_case(request.param)


def full_hessian(case: Case, op: HessianOperator) -> Tensor:
    return dense_hessian(case.model, case.loss_fn, case.inputs, case.targets, op.names)


def random_block(n: int, k: int, seed: int = 1) -> Tensor:
    return torch.randn((n, k), generator=torch.Generator().manual_seed(seed), dtype=F64)


def assert_close(actual: Tensor, expected: Tensor, tol: float = 1e-8) -> None:
    scale = max(1.0, float(expected.abs().max()))
    error = float((actual - expected).abs().max())
    assert error <= tol * scale, f"max abs error {error:.3e} > {tol:.0e} * {scale:.3g}"


# --- products against the dense Hessian ---------------------------------------------------


@pytest.mark.parametrize("method", ["forward-over-reverse", "double-backward"])
@pytest.mark.parametrize("vectorize", [True, False])
def test_products_equal_dense_hessian(case: Case, method: str, vectorize: bool) -> None:
    # Fresh products (no retained graphs: tests/hessian/test_retained.py) by each method.
    op = HessianOperator(
        case.model,
        case.loss_fn,
        case.batches,
        hvp_method=method,
        vectorize=vectorize,
        retain_graph=False,
    )
    hessian = full_hessian(case, op)
    assert op.shape == hessian.shape == (op.num_params, op.num_params)
    block = random_block(op.num_params, 4)
    assert_close(op.matmat(block), hessian @ block)
    assert_close(op.matvec(block[:, 0]), hessian @ block[:, 0])
    assert_close(op @ block[:, 1], hessian @ block[:, 1])
    assert_close(op @ block, hessian @ block)
    assert op.num_matvecs == 4 + 1 + 1 + 4


def test_forward_over_reverse_equals_double_backward(case: Case) -> None:
    block = None
    results = []
    for method in ("forward-over-reverse", "double-backward"):
        op = HessianOperator(
            case.model, case.loss_fn, case.batches, hvp_method=method, retain_graph=False
        )
        block = random_block(op.num_params, 3) if block is None else block
        results.append(op.matmat(block))
    assert_close(results[0], results[1], tol=1e-12)


def test_unequal_batches_give_the_full_data_hessian() -> None:
    case = make_case("mlp")
    unequal = HessianOperator(case.model, case.loss_fn, case.batches)
    one_batch = HessianOperator(case.model, case.loss_fn, (case.inputs, case.targets))
    loader = DataLoader(TensorDataset(case.inputs, case.targets), batch_size=4)  # 4, 4, 2
    from_loader = HessianOperator(case.model, case.loss_fn, loader)
    block = random_block(unequal.num_params, 3)
    expected = full_hessian(case, unequal) @ block
    for op in (unequal, one_batch, from_loader):
        assert_close(op.matmat(block), expected, tol=1e-12)
    # Weighting the batches equally (1/3 each) would be wrong for sizes 4, 4, 2:
    per_batch = [HessianOperator(case.model, case.loss_fn, b).matmat(block) for b in case.batches]
    naive = sum(per_batch) / 3
    assert isinstance(naive, Tensor)
    assert float((naive - expected).abs().max()) > 1e-4


def test_parameter_subset_is_the_dense_block(case: Case) -> None:
    full = HessianOperator(case.model, case.loss_fn, case.batches)
    hessian = full_hessian(case, full)
    offsets = np.cumsum([0, *(int(np.prod(shape)) for shape in full.shapes)])
    position = {name: (offsets[i], offsets[i + 1]) for i, name in enumerate(full.names)}
    subset = [full.names[0], full.names[-1]]  # first weight and last bias: not contiguous
    op = HessianOperator(case.model, case.loss_fn, case.batches, params=subset)
    assert op.names == tuple(subset)
    index = torch.cat([torch.arange(*position[name]) for name in subset])
    assert op.num_params == index.numel()
    block = random_block(op.num_params, 3)
    assert_close(op.matmat(block), hessian[index][:, index] @ block)


def test_to_scipy_agrees(case: Case) -> None:
    op = HessianOperator(case.model, case.loss_fn, case.batches)
    hessian = full_hessian(case, op).numpy()
    linear = op.to_scipy()
    assert isinstance(linear, LinearOperator)
    assert linear.shape == hessian.shape and linear.dtype == np.float64
    block = random_block(op.num_params, 3).numpy()
    np.testing.assert_allclose(linear.matvec(block[:, 0]), hessian @ block[:, 0], atol=1e-10)
    np.testing.assert_allclose(linear.rmatvec(block[:, 0]), hessian @ block[:, 0], atol=1e-10)
    np.testing.assert_allclose(linear.matmat(block), hessian @ block, atol=1e-10)
    np.testing.assert_allclose(linear @ block[:, 1], hessian @ block[:, 1], atol=1e-10)
    result = linear.matvec(block[:, 0])
    assert isinstance(result, np.ndarray) and result.dtype == np.float64


def test_loss_and_gradient_are_full_data_means(case: Case) -> None:
    op = HessianOperator(case.model, case.loss_fn, case.batches)
    loss = case.loss_fn(case.model(case.inputs), case.targets)
    grads = torch.autograd.grad(loss, list(case.model.parameters()))
    assert op.loss() == pytest.approx(float(loss.detach()), rel=1e-12)
    assert_close(op.gradient(), torch.cat([g.reshape(-1) for g in grads]), tol=1e-12)


def test_flatten_and_unflatten_round_trip(case: Case) -> None:
    op = HessianOperator(case.model, case.loss_fn, case.batches)
    theta = dict(case.model.named_parameters())
    flat = op.flatten(theta)
    assert flat.shape == (op.num_params,)
    pieces = op.unflatten(flat)
    assert list(pieces) == list(op.names)
    for name, shape in zip(op.names, op.shapes, strict=True):
        assert pieces[name].shape == shape
        assert torch.equal(pieces[name], theta[name])
    with pytest.raises(ValueError, match="no entries"):
        op.flatten({})
    with pytest.raises(ValueError, match="expected a vector"):
        op.unflatten(flat[:-1])


def test_float64_vectors_on_a_float32_model() -> None:
    case = make_case("mlp")
    op64 = HessianOperator(case.model, case.loss_fn, case.batches)
    block = random_block(op64.num_params, 2)
    expected = op64.matmat(block)
    model32 = MLP(6, [5], 3, activation="tanh")
    model32.load_state_dict(case.model.state_dict())
    batches32 = [(x.float(), y) for x, y in case.batches]
    op32 = HessianOperator(model32, case.loss_fn, batches32)
    assert op32.dtype == torch.float32
    result = op32.matmat(block)
    assert result.dtype == F64  # promote_types(float64, float32): the sum stays float64
    assert op32.matmat(block.float()).dtype == torch.float32
    assert_close(result, expected, tol=1e-5)


def test_vmap_failure_falls_back_to_a_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_case("mlp")
    # Products without retained graphs: the path that vectorizes a block with vmap.
    op = HessianOperator(case.model, case.loss_fn, case.batches, retain_graph=False)
    block = random_block(op.num_params, 3)
    expected = full_hessian(case, op) @ block

    def failing_vmap(*args: object, **kwargs: object) -> object:
        raise RuntimeError("no batching rule for this model")

    monkeypatch.setattr(operator_module, "vmap", failing_vmap)
    with pytest.warns(RuntimeWarning, match="one column at a time"):
        assert_close(op.matmat(block), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert_close(op.matmat(block), expected)


def test_forward_mode_failure_still_gives_the_hessian() -> None:
    # torch 2.13's forward-mode mse_loss fails ("ZeroTensors are immutable"): hvp falls back to
    # double backward, and the vmapped block product to a loop.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    x, y = torch.randn(10, 4, dtype=F64), torch.randn(10, 2, dtype=F64)
    mse = nn.functional.mse_loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        op = HessianOperator(model, mse, [(x[:6], y[:6]), (x[6:], y[6:])], retain_graph=False)
        block = random_block(op.num_params, 3)
        result = op.matmat(block)
    assert_close(result, dense_hessian(model, mse, x, y, op.names) @ block)


# --- determinism checks -------------------------------------------------------------------


def dropout_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).double()


def test_dropout_in_train_mode_raises_and_eval_mode_passes() -> None:
    case = make_case("mlp")
    model = dropout_mlp().train()
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        HessianOperator(model, cross_entropy, case.batches)
    HessianOperator(model.eval(), cross_entropy, case.batches)
    HessianOperator(model.train(), cross_entropy, case.batches, check_deterministic=False)


def test_batch_norm_in_train_mode_raises() -> None:
    case = make_case("cnn")
    with pytest.raises(ValueError, match="BatchNorm"):
        HessianOperator(case.model.train(), cross_entropy, case.batches)
    case.model.eval()


@pytest.mark.filterwarnings("ignore:HessianOperator. vmap:RuntimeWarning")  # falls back to a loop
def test_train_mode_batch_norm_on_purpose_leaves_the_statistics_alone() -> None:
    case = make_case("cnn")
    model = case.model.train()
    before = {name: b.clone() for name, b in model.named_buffers()}
    data = (case.inputs, case.targets)  # one batch: H of the loss with its batch statistics
    op = HessianOperator(model, cross_entropy, data, check_deterministic=False, retain_graph=False)
    block = random_block(op.num_params, 2)
    product, gradient, loss = op.matmat(block), op.gradient(), op.loss()
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    reference = copy.deepcopy(model)  # its statistics move: the products' must not
    hessian = dense_hessian(reference, cross_entropy, case.inputs, case.targets, op.names)
    assert_close(product, hessian @ block)
    assert torch.isfinite(gradient).all() and loss > 0
    model.eval()


class FunctionalDropout(nn.Module):
    """Randomness no module type reveals: the generator's state moving during a pass does."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(nn.functional.dropout(torch.tanh(self.first(x)), 0.5, training=True))


class Augmented:
    """A re-iterable of batches with fresh random noise on every pass (data augmentation)."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.batches:
            yield x + 0.1 * torch.randn_like(x), y


def test_two_passes_catch_hidden_randomness() -> None:
    case = make_case("mlp")
    with pytest.raises(ValueError, match="draws random numbers in its forward pass"):
        HessianOperator(FunctionalDropout().double(), cross_entropy, case.batches)
    with pytest.raises(ValueError, match="augmentation"):
        HessianOperator(case.model, cross_entropy, Augmented(case.batches))
    op = HessianOperator(
        case.model, cross_entropy, Augmented(case.batches), check_deterministic=False
    )
    assert op.num_params > 0


def test_shuffled_loader_passes_the_check() -> None:
    case = make_case("mlp")
    generator = torch.Generator().manual_seed(0)
    dataset = TensorDataset(case.inputs, case.targets)
    loader = DataLoader(dataset, batch_size=3, shuffle=True, generator=generator)
    op = HessianOperator(case.model, cross_entropy, loader)
    block = random_block(op.num_params, 2)
    assert_close(op.matmat(block), full_hessian(case, op) @ block, tol=1e-12)


# --- bad input ----------------------------------------------------------------------------


def test_one_shot_iterators_and_datasets_are_rejected() -> None:
    case = make_case("mlp")
    with pytest.raises(TypeError, match="one-shot iterator"):
        HessianOperator(case.model, cross_entropy, (batch for batch in case.batches))
    with pytest.raises(TypeError, match="one-shot iterator"):
        HessianOperator(case.model, cross_entropy, iter(case.batches))
    with pytest.raises(TypeError, match="DataLoader"):
        dataset = TensorDataset(case.inputs, case.targets)
        HessianOperator(case.model, cross_entropy, dataset)  # type: ignore[arg-type]


def test_bad_arguments_raise_clear_errors() -> None:
    case = make_case("mlp")
    with pytest.raises(ValueError, match="no batches"):
        HessianOperator(case.model, cross_entropy, [])
    with pytest.raises(TypeError, match="pair"):
        HessianOperator(case.model, cross_entropy, [(case.inputs,)])
    with pytest.raises(ValueError, match="hvp_method must be one of"):
        HessianOperator(case.model, cross_entropy, case.batches, hvp_method="finite-differences")
    with pytest.raises(ValueError, match="unknown parameter names"):
        HessianOperator(case.model, cross_entropy, case.batches, params=["nope"])
    op = HessianOperator(case.model, cross_entropy, case.batches)
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        op.matvec(torch.zeros(op.num_params + 1, dtype=F64))
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        op.matmat(torch.zeros(op.num_params, dtype=F64))
    with pytest.raises(ValueError, match="floating"):
        op.matmat(torch.zeros(op.num_params, 2, dtype=torch.int64))


def test_device_argument_and_repr() -> None:
    case = make_case("mlp")
    op = HessianOperator(case.model, cross_entropy, case.batches, device="cpu")
    assert op.device == torch.device("cpu") and op.dtype == F64
    assert "num_params=53" in repr(op) and "hvp_method='forward-over-reverse'" in repr(op)


def test_a_device_other_than_the_models_is_refused_and_nothing_moves() -> None:
    case = make_case("mlp")
    before = {name: p.device for name, p in case.model.named_parameters()}
    with pytest.raises(UsageError, match=r"model\.to\('meta'\)"):
        HessianOperator(case.model, cross_entropy, case.batches, device="meta")
    assert {name: p.device for name, p in case.model.named_parameters()} == before


@pytest.mark.gpu
def test_batches_go_to_the_models_device_and_the_model_stays() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    case = make_case("mlp")
    expected = HessianOperator(case.model, cross_entropy, case.batches).matvec(
        random_block(53, 1)[:, 0]
    )
    model = copy.deepcopy(case.model).cuda()
    op = HessianOperator(model, cross_entropy, case.batches, device="cuda")  # CPU batches
    assert op.device.type == "cuda"
    assert_close(op.matvec(random_block(53, 1)[:, 0]).cpu(), expected, tol=1e-10)
    with pytest.raises(UsageError, match="move it first"):
        HessianOperator(case.model, cross_entropy, case.batches, device="cuda")
    assert next(case.model.parameters()).device.type == "cpu"


def test_method_is_a_deprecated_alias_of_hvp_method() -> None:
    case = make_case("mlp")
    with pytest.warns(DeprecationWarning, match="hvp_method"):
        op = HessianOperator(case.model, cross_entropy, case.batches, method="double-backward")
    assert op.hvp_method.value == "double-backward"
    with pytest.warns(DeprecationWarning):
        assert op.method is op.hvp_method
    with pytest.raises(TypeError, match="hvp_method only"):
        HessianOperator(
            case.model,
            cross_entropy,
            case.batches,
            method="double-backward",
            hvp_method="double-backward",
        )


def test_forward_mode_failures_are_remembered_per_operator() -> None:
    # mse_loss: forward mode fails on torch 2.13; each operator warns once, and a second
    # operator (no process-wide memory) warns again.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    x, y = torch.randn(10, 4, dtype=F64), torch.randn(10, 2, dtype=F64)
    mse = nn.functional.mse_loss

    def failures(op: HessianOperator) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            op.matvec(random_block(op.num_params, 1)[:, 0])
            op.matvec(random_block(op.num_params, 1)[:, 0])
        return sum("forward-over-reverse HVP failed" in str(w.message) for w in caught)

    options = {"check_deterministic": False, "retain_graph": False}
    first = failures(HessianOperator(model, mse, (x, y), **options))
    second = failures(HessianOperator(model, mse, (x, y), **options))
    assert first == second <= 1


def test_memory_is_linear_in_the_number_of_parameters() -> None:
    # n = 195,426: an (n, n) float32 matrix would need 152 GB, so this only completes if no
    # product ever forms one.
    torch.manual_seed(0)
    model = MLP(64, [600, 256], 10).eval()
    x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
    op = HessianOperator(model, cross_entropy, [(x[:20], y[:20]), (x[20:], y[20:])])
    assert op.num_params == 195_426
    block = torch.randn(op.num_params, 2)
    product = op.matmat(block)
    assert product.shape == (op.num_params, 2) and torch.isfinite(product).all()
    # symmetry u^T H v = v^T H u, in float32
    u_hv = float(block[:, 0] @ product[:, 1])
    v_hu = float(block[:, 1] @ product[:, 0])
    assert u_hv == pytest.approx(v_hu, rel=1e-3, abs=1e-4)


def test_doctests() -> None:
    result = doctest.testmod(operator_module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
