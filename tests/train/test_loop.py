"""tailwise.train.loop: fit and evaluate."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from tailwise.data import digits_loaders
from tailwise.models import MLP
from tailwise.train import Callback, History, evaluate, fit


def _toy_loader(n: int = 10, batch_size: int = 4, *, shuffle: bool = False) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=generator)
    y = torch.randint(0, 2, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def _digits_run(seed: int) -> tuple[History, dict[str, Tensor]]:
    torch.manual_seed(seed)
    model = MLP(64, [32], 10)
    train, test = digits_loaders(64, seed=seed, flatten=True)
    history = fit(model, train, epochs=3, lr=0.05, val_loader=test, progress=False, seed=seed)
    return history, model.state_dict()


def test_fit_learns_digits() -> None:
    history, _ = _digits_run(0)
    assert history.epochs == 3
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_acc[-1] > 0.85
    assert len(history.val_loss) == len(history.train_acc) == 3


def test_seeded_fit_is_reproducible() -> None:
    first, first_state = _digits_run(1)
    second, second_state = _digits_run(1)
    assert first == second
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)


def test_seed_drives_unseeded_shuffling_and_restores_global_rng() -> None:
    template = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))

    def run() -> Tensor:
        model = copy.deepcopy(template)
        # No generator on this loader: shuffling and dropout draw from torch's global RNG.
        fit(model, _toy_loader(shuffle=True), epochs=2, progress=False, seed=5)
        layer = model[0]
        assert isinstance(layer, nn.Linear)
        return layer.weight.detach().clone()

    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    first = run()
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)
    assert torch.equal(run(), first)


class _Recorder(Callback):
    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name = name
        self.log = log

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self.log.append((self.name, "start", epoch, model.training))

    def on_batch_end(self, step: int, model: nn.Module, loss: Tensor) -> None:
        assert loss.ndim == 0
        assert not loss.requires_grad
        self.log.append((self.name, "batch", step))

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        self.log.append((self.name, "end", epoch, sorted(metrics)))


def test_callbacks_are_called_in_order_with_their_arguments() -> None:
    log: list[tuple[Any, ...]] = []
    model = nn.Linear(3, 2)
    seen_models: list[nn.Module] = []

    class ModelCheck(Callback):
        def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
            seen_models.append(model)

    callbacks = [_Recorder("a", log), _Recorder("b", log), ModelCheck()]
    loader = _toy_loader(n=10, batch_size=4)  # batches of 4, 4, 2
    history = fit(model, loader, epochs=2, val_loader=loader, callbacks=callbacks, progress=False)
    keys = ["train_acc", "train_loss", "val_acc", "val_loss"]
    expected: list[tuple[Any, ...]] = []
    for epoch in range(2):
        expected += [("a", "start", epoch, True), ("b", "start", epoch, True)]
        for step in range(3 * epoch, 3 * epoch + 3):
            expected += [("a", "batch", step), ("b", "batch", step)]
        expected += [("a", "end", epoch, keys), ("b", "end", epoch, keys)]
    assert log == expected
    assert seen_models == [model, model]
    assert history.epochs == 2


def test_epoch_end_metrics_match_history() -> None:
    received: list[dict[str, float]] = []

    class Keep(Callback):
        def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
            received.append(dict(metrics))

    history = fit(nn.Linear(3, 2), _toy_loader(), epochs=2, callbacks=[Keep()], progress=False)
    assert [m["train_loss"] for m in received] == history.train_loss
    assert [m["train_acc"] for m in received] == history.train_acc
    assert history.val_loss == history.val_acc == []


def test_loss_terms_are_added_to_the_minimized_loss() -> None:
    model = nn.Linear(3, 2, bias=False)
    start = model.weight.detach().clone()
    losses: list[float] = []

    class Keep(Callback):
        def on_batch_end(self, step: int, model: nn.Module, loss: Tensor) -> None:
            losses.append(float(loss))

    def zero_loss(outputs: Tensor, targets: Tensor) -> Tensor:
        return outputs.sum() * 0.0

    def half_squared_norm(module: nn.Module) -> Tensor:
        return 0.5 * sum((p**2).sum() for p in module.parameters())  # type: ignore[return-value]

    history = fit(
        model,
        _toy_loader(n=4, batch_size=4),
        epochs=1,
        lr=0.1,
        momentum=0.0,
        loss_fn=zero_loss,
        loss_terms=[half_squared_norm, half_squared_norm],
        callbacks=[Keep()],
        progress=False,
    )
    # Gradient of the two terms is 2 W, so one SGD step gives W - 0.1 * 2 W.
    assert torch.allclose(model.weight, 0.8 * start)
    assert losses == pytest.approx([float((start**2).sum())])
    assert history.train_loss == [0.0]  # the data loss only


def test_given_optimizer_is_used() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    start = [p.detach().clone() for p in model.parameters()]
    fit(model, _toy_loader(), epochs=1, optimizer=optimizer, lr=10.0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))


def test_evaluate_weights_unequal_batches_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    x = torch.randn(11, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (11,))
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # batches of 4, 4, 3
    loss, acc = evaluate(model, loader)
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-12)
    assert acc == pytest.approx(float((logits.argmax(1) == y).double().mean()), rel=1e-12)


def test_evaluate_accepts_probability_targets_and_restores_mode() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.9))
    x = torch.randn(6, 3)
    with torch.no_grad():
        probs = torch.softmax(model[0](x), dim=1)
    loader = [(x, probs)]
    model.train()
    _, acc = evaluate(model, loader)
    assert model.training
    assert acc == 1.0  # dropout is off in eval mode, so the argmax matches
    model.eval()
    evaluate(model, loader)
    assert not model.training


def test_device_argument_moves_work_there() -> None:
    model = nn.Linear(3, 2)
    history = fit(model, _toy_loader(), epochs=1, device="cpu", progress=False)
    assert history.epochs == 1
    assert evaluate(model, _toy_loader(), device=torch.device("cpu"))[1] >= 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda() -> None:
    model = nn.Linear(3, 2)
    fit(model, _toy_loader(), epochs=1, device="cuda", progress=False, seed=0)
    assert model.weight.device.type == "cuda"
    assert evaluate(model, _toy_loader())[0] > 0


def test_progress_bar_prints_nothing_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    fit(nn.Linear(3, 2), _toy_loader(), epochs=2, progress=True)
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


def test_zero_epochs_trains_nothing() -> None:
    model = nn.Linear(3, 2)
    start = model.weight.detach().clone()
    assert fit(model, _toy_loader(), epochs=0, progress=False).epochs == 0
    assert torch.equal(model.weight, start)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": -1}, "epochs must be an int >= 0"),
        ({"epochs": 1, "lr": 0.0}, "lr must be > 0"),
        ({"epochs": 1, "momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"epochs": 1, "weight_decay": -1.0}, "weight_decay must be >= 0"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit(nn.Linear(3, 2), _toy_loader(), progress=False, **kwargs)


def test_bad_loaders_fail_clearly() -> None:
    with pytest.raises(ValueError, match="fit: the loader yielded no batches"):
        fit(nn.Linear(3, 2), [], epochs=1, progress=False)
    with pytest.raises(ValueError, match="evaluate: the loader yielded no batches"):
        evaluate(nn.Linear(3, 2), [])
    with pytest.raises(TypeError, match=r"pair \(inputs, targets\), got a tuple of length 3"):
        evaluate(nn.Linear(3, 2), [(torch.zeros(1, 3), torch.zeros(1), torch.zeros(1))])
