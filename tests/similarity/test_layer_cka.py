"""layer_cka: minibatch CKA between layers, against MinibatchCKA on captured activations;
hooks, modes, alignment errors and data forms."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.models import SmallCNN
from tailwise.similarity import MinibatchCKA, cka, cka_matrix, default_layers, layer_cka


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


def _model(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(channels=(4, 8))  # features.0.conv, features.1.conv, head; BN, ReLU, pool


def _batches(count: int = 3, size: int = 24, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 1, 8, 8, generator=gen), torch.randint(0, 10, (size,), generator=gen))
        for _ in range(count)
    ]


def _activations(model: nn.Module, names: list[str], x: Tensor) -> dict[str, Tensor]:
    """The oracle's own capture: outputs of the named modules, flattened per example."""
    modules = dict(model.named_modules())
    seen: dict[str, Tensor] = {}
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _a, out, name=name: seen.__setitem__(name, out.reshape(len(x), -1))
        )
        for name in names
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _oracle(
    model_a: nn.Module,
    model_b: nn.Module,
    names_a: list[str],
    names_b: list[str],
    batches: list[tuple[Tensor, Tensor]],
    **options: object,
) -> np.ndarray:
    streams = [[MinibatchCKA(**options) for _ in names_b] for _ in names_a]  # type: ignore[arg-type]
    for x, _ in batches:
        acts_a = _activations(model_a, names_a, x)
        acts_b = _activations(model_b, names_b, x)
        for i, a in enumerate(names_a):
            for j, b in enumerate(names_b):
                streams[i][j].update(acts_a[a], acts_b[b])
    return np.array([[s.compute() for s in row] for row in streams])


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_one_model_matches_minibatch_cka_of_captured_activations() -> None:
    model, batches = _model(), _batches()
    df = layer_cka(model, data=batches, progress=False)
    names = default_layers(model)
    assert names == ["features.0.conv", "features.1.conv", "head"]
    assert list(df.columns) == ["layer_a", "layer_b", "cka"]
    assert df.attrs["examples"] == 72 and df.attrs["batches"] == 3
    matrix = cka_matrix(df)
    assert list(matrix.index) == names and list(matrix.columns) == names
    expected = _oracle(model, model, names, names, batches)
    np.testing.assert_allclose(matrix.to_numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(np.diag(matrix.to_numpy()), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [{"kernel": "rbf"}, {"unbiased": False}, {"kernel": "rbf", "sigma": 3.0}],
    ids=["rbf", "biased", "rbf-sigma"],
)
def test_kernels_and_estimators_match_the_oracle(options: dict[str, object]) -> None:
    model, batches = _model(), _batches(count=2)
    names = ["features.0.bn", "features.1.act", "head"]
    df = layer_cka(model, batches, layers=names, progress=False, **options)  # type: ignore[arg-type]
    expected = _oracle(model, model, names, names, batches, **options)
    np.testing.assert_allclose(cka_matrix(df).to_numpy(), expected, atol=1e-10)


def test_one_batch_equals_full_batch_unbiased_cka() -> None:
    model = _model()
    (x, y) = _batches(count=1, size=40)[0]
    df = layer_cka(model, (x, y), layers=["features.0", "head"], progress=False)
    acts = _activations(model, ["features.0", "head"], x)
    value = df[(df.layer_a == "features.0") & (df.layer_b == "head")]["cka"].item()
    assert value == pytest.approx(cka(acts["features.0"], acts["head"], unbiased=True), abs=1e-10)


def test_two_models() -> None:
    model_a, model_b, batches = _model(0), _model(1), _batches()
    df = layer_cka(model_a, model_b, batches, layers_b=["features.1", "head"], progress=False)
    names_a = default_layers(model_a)
    assert df.attrs["layers_a"] == names_a and df.attrs["layers_b"] == ["features.1", "head"]
    assert len(df) == 6
    expected = _oracle(model_a, model_b, names_a, ["features.1", "head"], batches)
    np.testing.assert_allclose(cka_matrix(df).to_numpy(), expected, atol=1e-10)
    # a copy of a model is the same function: its corresponding layers have CKA 1
    same = cka_matrix(layer_cka(model_a, copy.deepcopy(model_a), batches, progress=False))
    np.testing.assert_allclose(np.diag(same.to_numpy()), 1.0, atol=1e-12)
    # the same object on both sides runs once per batch and gives the one-model matrix
    both = cka_matrix(layer_cka(model_a, model_a, batches, progress=False))
    alone = cka_matrix(layer_cka(model_a, batches, progress=False))
    np.testing.assert_allclose(both.to_numpy(), alone.to_numpy(), atol=1e-12)


def test_hooks_removed_and_modes_restored() -> None:
    model = _model()
    model.train()
    bn0, bn1 = model.get_submodule("features.0.bn"), model.get_submodule("features.1.bn")
    bn1.eval()  # a mixed state must come back exactly
    flags = [m.training for m in model.modules()]
    running = bn0.get_buffer("running_mean").clone()
    layer_cka(model, _batches(), progress=False)
    assert [m.training for m in model.modules()] == flags
    assert _hooks(model) == 0
    assert torch.equal(bn0.get_buffer("running_mean"), running)  # ran in eval mode
    assert all(p.grad is None for p in model.parameters())
    # also after an error inside a forward pass (the model's own, for a wrong input shape)
    with pytest.raises(ValueError, match="SmallCNN: expected input"):
        layer_cka(model, [torch.randn(8, 1, 8, 8), torch.randn(8, 2, 8, 8)], progress=False)
    assert [m.training for m in model.modules()] == flags
    assert _hooks(model) == 0


class _Shared(nn.Module):
    """Applies the same Linear twice: its hook fires twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 6)
        self.shared = nn.Linear(6, 6)
        self.unused = nn.Linear(6, 6)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.shared(self.act(self.shared(self.act(self.inp(x)))))
        return out


def test_a_module_run_twice_is_an_error_naming_it() -> None:
    model = _Shared()
    with pytest.raises(UsageError, match=r"module 'shared' ran 2 times in one forward pass"):
        layer_cka(model, torch.randn(16, 6), layers=["inp", "shared"], progress=False)
    with pytest.raises(UsageError, match=r"module 'act' ran 2 times"):
        layer_cka(model, torch.randn(16, 6), layers=["inp", "act"], progress=False)
    with pytest.raises(UsageError, match=r"module 'unused' did not run .* batch 0"):
        layer_cka(model, torch.randn(16, 6), layers=["inp", "unused"], progress=False)
    assert _hooks(model) == 0
    df = layer_cka(model, torch.randn(16, 6), layers=["inp"], progress=False)
    assert df["cka"].tolist() == pytest.approx([1.0])


def test_data_forms() -> None:
    model, batches = _model(), _batches(count=2, size=16)
    expected = cka_matrix(layer_cka(model, batches, progress=False)).to_numpy()
    inputs = [x for x, _ in batches]
    loader = DataLoader(TensorDataset(torch.cat(inputs), torch.zeros(32)), batch_size=16)
    for data in (
        inputs,  # tensors of inputs
        loader,  # [inputs, targets] lists
        (x for x in inputs),  # a one-shot generator
        [((x,), None) for x in inputs],  # inputs as a tuple of positional arguments
    ):
        got = cka_matrix(layer_cka(model, data=data, progress=False)).to_numpy()
        np.testing.assert_allclose(got, expected, atol=1e-12)
    one = layer_cka(model, torch.cat(inputs), progress=False)  # one tensor: one batch
    assert one.attrs["batches"] == 1 and one.attrs["examples"] == 32


def test_small_batches_are_left_out_with_a_warning() -> None:
    model = _model()
    batches = [*_batches(count=2, size=16), (torch.randn(3, 1, 8, 8), torch.zeros(3))]
    with pytest.warns(UserWarning, match="1 batch\\(es\\) with fewer than 4 examples left out"):
        df = layer_cka(model, batches, progress=False)
    assert df.attrs["examples"] == 32 and df.attrs["skipped_batches"] == 1
    with pytest.raises(UsageError, match="no batch with at least 4 examples"):
        layer_cka(model, torch.randn(3, 1, 8, 8), progress=False)
    assert len(layer_cka(model, torch.randn(3, 1, 8, 8), unbiased=False, progress=False)) == 9


def test_bad_arguments() -> None:
    model = _model()
    x = torch.randn(8, 1, 8, 8)
    with pytest.raises(UsageError, match=r"has no module 'features\.9'"):
        layer_cka(model, x, layers=["features.9"], progress=False)
    with pytest.raises(UsageError, match="more than once"):
        layer_cka(model, x, layers=["head", "head"], progress=False)
    with pytest.raises(UsageError, match="layers must be a list of module names"):
        layer_cka(model, x, layers="head", progress=False)
    with pytest.raises(UsageError, match="data is required"):
        layer_cka(model, progress=False)
    with pytest.raises(UsageError, match=r"model_b must be an nn\.Module"):
        layer_cka(model, [x], [x], progress=False)
    with pytest.raises(UsageError, match=r"wrap it in a torch\.utils\.data\.DataLoader"):
        layer_cka(model, TensorDataset(x), progress=False)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no Linear or convolution module"):
        layer_cka(nn.Sequential(nn.ReLU()), x, progress=False)
    with pytest.raises(UsageError, match="kernel must be one of"):
        layer_cka(model, x, kernel="cosine", progress=False)
    with pytest.raises(UsageError, match="batch 0 is a dict"):
        layer_cka(model, [{"x": x}], progress=False)


class _Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x).T


def test_outputs_without_a_batch_dimension_are_an_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), _Transposed())
    with pytest.raises(UsageError, match=r"module '1' returned shape \(4, 10\) for a batch of 10"):
        layer_cka(model, torch.randn(10, 4), layers=["0", "1"], progress=False)
    with pytest.raises(UsageError, match="batch 0: the output of module '0' holds 40 NaN/Inf"):
        layer_cka(model, torch.full((10, 4), math.inf), layers=["0"], progress=False)


def test_dead_layer_gives_nan_not_an_error() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model.get_parameter("0.bias").fill_(
            -100.0
        )  # every ReLU output 0: a constant representation
    df = layer_cka(model, torch.randn(12, 4), layers=["0", "1"], progress=False)
    values = cka_matrix(df).to_numpy()
    assert values[0, 0] == pytest.approx(1.0)
    assert np.isnan(values[1]).all() and np.isnan(values[:, 1]).all()


def test_matrix_keeps_layer_order_not_alphabetical() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(5, 5) for _ in range(12)])  # names "0".."11"
    df = layer_cka(model, torch.randn(10, 5), progress=False)
    assert list(cka_matrix(df).index) == [str(i) for i in range(12)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_models_device() -> None:
    model, batches = _model(), _batches()
    on_cpu = cka_matrix(layer_cka(model, batches, progress=False)).to_numpy()
    gpu_model = copy.deepcopy(model).cuda()
    df = layer_cka(gpu_model, batches, progress=False)  # CPU batches are moved to the model
    np.testing.assert_allclose(cka_matrix(df).to_numpy(), on_cpu, atol=1e-5)
    assert next(gpu_model.parameters()).is_cuda
