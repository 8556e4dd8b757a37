"""tailwise.attacks.robust_accuracy: 002's A1-A4 table against direct computation."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.attacks import (
    ROBUST_COLUMNS,
    AttackMethod,
    AttackSpec,
    cw_l2,
    fgsm,
    ifgsm,
    parse_attack,
    pgd,
    robust_accuracy,
)
from tailwise.data import digits_loaders
from tailwise.models import SmallCNN
from tailwise.train import evaluate, fit

Loader = DataLoader[tuple[Tensor, ...]]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[Loader, Loader]:
    return digits_loaders(batch_size=64, seed=0, test_batch_size=120)


@pytest.fixture(scope="module")
def trained(digits: tuple[Loader, Loader]) -> SmallCNN:
    """A SmallCNN trained naturally on the 8x8 digits (about 98% test accuracy)."""
    torch.manual_seed(0)
    model = SmallCNN(channels=(16, 32))
    fit(model, digits[0], epochs=5, lr=0.05, progress=False, seed=0)
    return model.eval()


def test_digits_pixels_are_in_the_unit_box(digits: tuple[Loader, Loader]) -> None:
    for loader in digits:
        x = torch.cat([batch[0] for batch in loader])
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_natural_accuracy_is_evaluate_and_rows_follow_the_attacks(
    trained: SmallCNN, digits: tuple[Loader, Loader]
) -> None:
    table = robust_accuracy(trained, digits[1], ["natural", "fgsm", "IFGSM5"], eps=0.1)
    assert tuple(table.columns) == ROBUST_COLUMNS
    assert table["attack"].tolist() == ["natural", "fgsm", "ifgsm5"]
    assert table["status"].tolist() == ["ok"] * 3
    _, accuracy = evaluate(trained, digits[1])
    assert table.loc[0, "accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert accuracy > 0.95
    assert table.loc[0, "linf"] == 0.0 and table.loc[0, "l2"] == 0.0
    assert math.isnan(table.loc[0, "eps"]) and table.loc[1, "eps"] == 0.1
    assert (table["examples"] == 360).all()
    assert (table["seconds"] > 0).all()


def _direct(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], attack: AttackSpec
) -> tuple[int, float, float]:
    """(correct, max |x' - x|, mean ||x' - x||_2), attacking batch by batch by hand."""
    correct, linf, l2, count = 0, 0.0, 0.0, 0
    for x, y in batches:
        if attack.method is AttackMethod.FGSM:
            x_adv = fgsm(model, x, y, attack.eps)
        elif attack.method is AttackMethod.IFGSM:
            x_adv = ifgsm(model, x, y, attack.eps, attack.alpha, attack.steps)
        else:
            x_adv = cw_l2(model, x, y, c=attack.c, steps=attack.steps, lr=attack.lr)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(dim=1) == y).sum())
        delta = (x_adv - x).flatten(1).double()
        linf = max(linf, float(delta.abs().max()))
        l2 += float(delta.norm(dim=1).sum())
        count += len(y)
    return correct, linf, l2 / count


def test_each_row_is_the_attack_run_by_hand(
    trained: SmallCNN, digits: tuple[Loader, Loader]
) -> None:
    x, y = next(iter(digits[1]))
    batches = [(x[:60], y[:60]), (x[60:], y[60:])]
    names = ["fgsm", "ifgsm10", "cw20"]
    table = robust_accuracy(trained, batches, names, eps=0.15, c=5.0, lr=0.05)
    table = table.set_index("attack")
    for name in names:
        spec = parse_attack(name, eps=0.15, c=5.0, lr=0.05)
        correct, linf, l2 = _direct(trained, batches, spec)
        assert table.loc[name, "correct"] == correct, name
        assert table.loc[name, "examples"] == 120
        assert table.loc[name, "accuracy"] == pytest.approx(correct / 120, abs=1e-12)
        assert table.loc[name, "linf"] == pytest.approx(linf, abs=1e-6)
        assert table.loc[name, "l2"] == pytest.approx(l2, rel=1e-6)
    assert table.loc["ifgsm10", "linf"] <= 0.15 + 1e-6
    assert math.isnan(table.loc["cw20", "eps"])
    # C&W only returns misclassified or unchanged inputs: accuracy falls, L2 is small.
    assert table.loc["cw20", "accuracy"] < 0.9


def test_robust_accuracy_falls_monotonically_with_eps(trained: SmallCNN) -> None:
    # 8x8 digits with pixel steps of 1/16: eps 0.05 changes little, 0.3 breaks a natural model.
    _, test = digits_loaders(batch_size=360, seed=0)
    attacks = ["natural", "fgsm", "ifgsm10"]
    tables = [robust_accuracy(trained, test, attacks, eps=e) for e in (0.0, 0.05, 0.1, 0.2, 0.3)]
    natural = tables[0].loc[0, "accuracy"]
    for column in (1, 2):
        accuracies = [float(t.loc[column, "accuracy"]) for t in tables]
        assert accuracies[0] == natural
        assert all(a >= b for a, b in itertools.pairwise(accuracies)), accuracies
        assert accuracies[-1] < 0.2 < natural - 0.5
    for table in tables[1:]:
        assert table.loc[2, "accuracy"] <= table.loc[1, "accuracy"]  # iterating helps


def test_a_failing_attack_is_a_failed_row_and_the_rest_goes_on(
    digits: tuple[Loader, Loader],
) -> None:
    class NoInputGradient(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(64, 10)

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.linear(x.detach().flatten(1))
            return out

    # C&W still runs (its L2 term has a gradient): it just never succeeds.
    table = robust_accuracy(NoInputGradient(), digits[1], ["natural", "fgsm", "pgd2", "cw2"])
    assert table["status"].tolist() == ["ok", "failed", "failed", "ok"]
    assert table.loc[3, "accuracy"] == table.loc[0, "accuracy"]
    assert table.loc[1, "reason"].startswith("RuntimeError: ")
    assert math.isnan(table.loc[1, "accuracy"]) and table.loc[1, "examples"] == 0
    assert table.loc[0, "examples"] == 360 and table.loc[0, "reason"] == ""


def test_seeded_runs_repeat_and_leave_the_global_rng_alone(
    trained: SmallCNN, digits: tuple[Loader, Loader]
) -> None:
    state = torch.random.get_rng_state()
    first = robust_accuracy(trained, digits[1], ["pgd3"], eps=0.2, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = robust_accuracy(trained, digits[1], ["pgd3"], eps=0.2, seed=4)
    assert first.loc[0, "l2"] == again.loc[0, "l2"]
    other = robust_accuracy(trained, digits[1], ["pgd3"], eps=0.2, seed=5)
    assert other.loc[0, "l2"] != first.loc[0, "l2"]
    # The seed drives PGD's random start as a generator on the model's device would.
    x, y = next(iter(digits[1]))
    by_hand = pgd(trained, x, y, 0.2, 0.05, 3, generator=4)
    one_batch = robust_accuracy(trained, [(x, y)], ["pgd3"], eps=0.2, seed=4)
    with torch.no_grad():
        assert one_batch.loc[0, "correct"] == int((trained(by_hand).argmax(1) == y).sum())


def test_a_stochastic_model_is_attacked_through_eot(digits: tuple[Loader, Loader]) -> None:
    class Noisy(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.model(x)
            return out + 0.5 * torch.randn_like(out)

    torch.manual_seed(0)
    model = Noisy(SmallCNN(channels=(8, 16)))
    single = robust_accuracy(model, digits[1], ["natural", "fgsm"], eps=0.1, eot_samples=1)
    averaged = robust_accuracy(model, digits[1], ["natural", "fgsm"], eps=0.1, eot_samples=8)
    assert single["status"].tolist() == averaged["status"].tolist() == ["ok", "ok"]
    repeat = robust_accuracy(model, digits[1], ["natural", "fgsm"], eps=0.1, eot_samples=8)
    assert repeat.equals(averaged.assign(seconds=repeat["seconds"]))


def test_mode_and_gradients_are_restored(digits: tuple[Loader, Loader]) -> None:
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16)).train()
    stats = model.features[0].bn.running_mean.clone()
    robust_accuracy(model, digits[1], ["natural", "fgsm", "pgd2", "cw2"], eps=0.1)
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(model.features[0].bn.running_mean, stats)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attacks": ["natural", "deepfool"]}, "unknown attack 'deepfool'; known: natural, fgsm"),
        ({"attacks": ["pgd"]}, "unknown attack 'pgd'; write pgd<k>, e.g. pgd10"),
        ({"attacks": ["fgsm3"]}, "unknown attack 'fgsm3'; write fgsm"),
        ({"attacks": ["ifgsm0"]}, "attack 'ifgsm0': steps must be an int >= 1, got 0"),
        ({"attacks": ["fgsm", "FGSM"]}, "attacks named twice: fgsm"),
        ({"attacks": []}, "attacks is empty"),
        ({"eps": -0.1}, "eps must be finite and >= 0, got -0.1"),
        ({"alpha": -1.0}, "alpha must be finite and >= 0"),
        ({"eot_samples": 0}, "eot_samples must be an int >= 1, got 0"),
        ({"seed": 1.5}, "seed must be an int or None"),
        ({"data": []}, "data yielded no batches"),
        ({"data": [(torch.full((2, 1, 8, 8), 2.0), torch.zeros(2, dtype=torch.long))]}, "[0, 1]"),
        ({"data": [(torch.rand(2, 1, 8, 8), torch.zeros(2, 10))]}, "integer class indices"),
        ({"data": [torch.rand(2, 1, 8, 8)]}, "each batch of data must be a pair"),
    ],
)
def test_bad_input_is_a_usage_error(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"data": [(torch.rand(4, 1, 8, 8), torch.arange(4))]}
    arguments.update(kwargs)
    data = arguments.pop("data")
    with pytest.raises(UsageError, match=re.escape(message)):
        robust_accuracy(SmallCNN(), data, **arguments)  # type: ignore[arg-type]
