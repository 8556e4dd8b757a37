"""tailwise.train.adversarial: PGD adversarial training through the one loop ``fit``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.attacks import AttackMethod, pgd, robust_accuracy
from tailwise.data import digits_loaders
from tailwise.models import SmallCNN
from tailwise.train import Callback, fit
from tailwise.train.adversarial import AdversarialBatches, adversarial_batches, parse_attack

Loader = DataLoader[tuple[Tensor, ...]]

# 8x8 digits (pixel steps of 1/16): train and evaluate at eps 0.2, a step of 0.1.
EPS = 0.2
TRAIN_ATTACK = parse_attack("pgd3", eps=EPS, alpha=0.1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


def _loaders() -> tuple[Loader, Loader]:
    return digits_loaders(batch_size=64, seed=0, test_batch_size=360)


def _train(adversarial: bool, epochs: int = 5, seed: int = 0) -> SmallCNN:
    train, _ = _loaders()
    torch.manual_seed(seed)
    model = SmallCNN(channels=(16, 32))
    batches = adversarial_batches(train, model, TRAIN_ATTACK, seed=seed) if adversarial else train
    fit(model, batches, epochs=epochs, lr=0.05, progress=False, seed=seed)
    return model


def test_pgd_training_beats_natural_training_under_pgd() -> None:
    natural, robust = _train(adversarial=False), _train(adversarial=True)
    _, test = _loaders()
    attacks = ["natural", "pgd10"]
    before = robust_accuracy(natural, test, attacks, eps=EPS, alpha=0.05).set_index("attack")
    after = robust_accuracy(robust, test, attacks, eps=EPS, alpha=0.05).set_index("attack")
    assert before.loc["natural", "accuracy"] > 0.9 and after.loc["natural", "accuracy"] > 0.85
    assert before.loc["pgd10", "accuracy"] < 0.1
    assert after.loc["pgd10", "accuracy"] > before.loc["pgd10", "accuracy"] + 0.2


class _Record(Callback):
    """The model's train/eval mode at the start and end of every epoch."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self.modes.append(model.training)

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, float]) -> None:
        self.modes.append(model.training)


def test_batches_are_pgd_of_the_current_weights_and_fit_trains_in_train_mode() -> None:
    train, _ = _loaders()
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16))
    batches = adversarial_batches(train, model, TRAIN_ATTACK, seed=3)
    assert isinstance(batches, AdversarialBatches) and len(batches) == len(train)
    # A batch is PGD of the loader's batch with the seed's random start.
    x, y = next(iter(train))
    model.train()
    ((x_adv, y_adv),) = adversarial_batches([(x, y)], model, TRAIN_ATTACK, seed=3)
    assert model.training and all(p.grad is None for p in model.parameters())
    expected = pgd(model, x, y, EPS, 0.1, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y_adv, y) and torch.equal(x_adv, expected)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6

    record = _Record()
    statistics = model.features[0].bn.running_mean.clone()
    fit(model, batches, epochs=1, lr=0.05, progress=False, callbacks=[record])
    assert record.modes == [True, True]
    # Training (train mode) moved the BatchNorm statistics; the attacks alone would not.
    assert not torch.equal(model.features[0].bn.running_mean, statistics)


def test_batches_follow_the_weights_as_they_change() -> None:
    train, _ = _loaders()
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16))
    batches = adversarial_batches(train, model, "fgsm")
    first = next(iter(batches))[0]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    assert not torch.equal(next(iter(batches))[0], first)


def test_seeded_adversarial_training_repeats_exactly() -> None:
    a = _train(adversarial=True, epochs=1, seed=1)
    b = _train(adversarial=True, epochs=1, seed=1)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_any_optimizer_composes() -> None:
    train, _ = _loaders()
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = adversarial_batches(train, model, TRAIN_ATTACK, seed=0)
    history = fit(model, batches, epochs=2, optimizer=optimizer, progress=False)
    assert history.train_loss[1] < history.train_loss[0]


def test_composes_with_a_splitting_optimizer() -> None:
    # 002 §4.2: RVSM sparsifies in the back-propagation stage of PGD training.
    from tailwise.train.splitting import RVSM, sparsity

    train, test = _loaders()
    torch.manual_seed(0)
    model = SmallCNN(channels=(8, 16))
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rvsm = RVSM(sgd, model, penalty="l0", lam=1e-4, beta=0.1)
    batches = adversarial_batches(train, model, TRAIN_ATTACK, seed=0)
    fit(model, batches, epochs=2, optimizer=rvsm, progress=False)
    sparse = rvsm.deploy(model)
    assert float(sparsity(sparse).iloc[-1]["sparsity"]) > 0.05
    table = robust_accuracy(sparse, test, ["natural", "pgd5"], eps=EPS, progress=False)
    assert table["status"].tolist() == ["ok", "ok"] and table.loc[0, "accuracy"] > 0.5


def test_parse_attack_defaults_are_002s_training_values() -> None:
    spec = parse_attack("pgd10")
    assert spec.method is AttackMethod.PGD and spec.steps == 10
    assert spec.eps == pytest.approx(8 / 255) and spec.alpha == pytest.approx(2 / 255)
    assert adversarial_batches([], nn.Linear(2, 2)).attack == spec


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("pgd", "unknown attack 'pgd'; write pgd<k>, e.g. pgd10"),
        ("madry", "unknown attack 'madry'; known: natural, fgsm, ifgsm<k>, pgd<k>, cw, cw<k>"),
        (3, "attack must be a name such as 'pgd10' or an AttackSpec, got int"),
    ],
)
def test_bad_attacks_are_usage_errors(attack: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        adversarial_batches([], nn.Linear(2, 2), attack)  # type: ignore[arg-type]


def test_bad_batches_are_usage_errors() -> None:
    batches = adversarial_batches([torch.rand(2, 2)], nn.Linear(2, 2), "fgsm")
    with pytest.raises(UsageError, match="each batch must be a pair"):
        next(iter(batches))
    outside = adversarial_batches(
        [(torch.full((2, 2), 3.0), torch.zeros(2).long())], nn.Linear(2, 2)
    )
    with pytest.raises(UsageError, match="inputs must lie in"):
        next(iter(outside))
