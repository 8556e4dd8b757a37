"""tailwise.attacks.gradient: FGSM / PGD / IFGSM against closed forms and torchattacks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torchattacks
from torch import Tensor, nn

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.attacks import EOT, cw_l2, fgsm, ifgsm, pgd
from tailwise.data import load_digits_dataset
from tailwise.models import SmallCNN

AttackFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


def _linear(inputs: int, classes: int, seed: int, dtype: torch.dtype = torch.float64) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(inputs, classes).to(dtype)


def _digits(n: int = 64) -> tuple[Tensor, Tensor]:
    x, y = load_digits_dataset(split="test").tensors
    return x[:n], y[:n]


def _cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(channels=(8, 16))
    # Non-trivial BatchNorm statistics, so eval mode differs from train mode.
    with torch.no_grad():
        model(torch.rand(128, 1, 8, 8))
    return model.eval()


def test_fgsm_is_the_closed_form_on_a_linear_softmax_model() -> None:
    # L = mean_n CE(W x_n + b, y_n): grad_x_n = W^T (softmax(W x_n + b) - e_{y_n}) / N.
    model = _linear(6, 4, seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(10, 6))
    y = rng.integers(0, 4, size=10)
    w = model.weight.detach().numpy()
    b = model.bias.detach().numpy()
    z = x @ w.T + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad = (p - np.eye(4)[y]) @ w / len(y)
    assert np.abs(grad).min() > 1e-6  # every sign is well defined
    eps = 0.1
    expected = np.clip(x + eps * np.sign(grad), 0, 1)
    got = fgsm(model, torch.from_numpy(x), torch.from_numpy(y), eps)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_fgsm_clips_to_the_image_box() -> None:
    model = _linear(5, 3, seed=2)
    x = torch.tensor([[0.0, 1.0, 0.5, 0.02, 0.99]], dtype=torch.float64)
    x_adv = fgsm(model, x, torch.tensor([1]), eps=0.3)
    assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
    assert bool(((x_adv - x).abs() <= 0.3 + 1e-12).all())


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_on_a_binary_linear_model_reaches_the_corner_of_the_ball(random_start: bool) -> None:
    # With two classes, grad_x CE = (1 - p_y)(w_other - w_y): a constant sign s per example,
    # so once steps * alpha >= 2 eps the iteration sits at clip_[0,1](x + eps s).
    model = _linear(8, 2, seed=3)
    torch.manual_seed(4)
    x = torch.rand(16, 8, dtype=torch.float64)
    y = torch.randint(0, 2, (16,))
    w = model.weight.detach()
    direction = torch.sign(w[1 - y] - w[y])
    expected = torch.clamp(x + 0.1 * direction, 0, 1)
    got = pgd(model, x, y, eps=0.1, alpha=0.03, steps=8, random_start=random_start, generator=5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_stays_inside_the_eps_ball_and_the_image_box(eps: float, random_start: bool) -> None:
    model = _cnn()
    x, y = _digits()
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # digits touch both box faces
    x_adv = pgd(model, x, y, eps, alpha=eps / 4 + 0.01, steps=6, random_start=random_start)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_pgd_increases_the_loss_and_beats_fgsm_on_average() -> None:
    model = _cnn()
    x, y = _digits()

    def loss(inputs: Tensor) -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(inputs), y))

    clean, one_step = loss(x), loss(fgsm(model, x, y, 0.1))
    iterated = loss(ifgsm(model, x, y, 0.1, 0.025, 10))
    assert clean < one_step < iterated


def test_ifgsm_is_pgd_without_random_start() -> None:
    model = _cnn()
    x, y = _digits(16)
    expected = pgd(model, x, y, 0.1, 0.02, 5, random_start=False)
    assert torch.equal(ifgsm(model, x, y, 0.1, 0.02, 5), expected)


def test_fgsm_matches_torchattacks() -> None:
    model = _cnn()
    x, y = _digits()
    theirs = torchattacks.FGSM(model, eps=8 / 255)(x, y)
    torch.testing.assert_close(fgsm(model, x, y, 8 / 255), theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("eps", "alpha", "steps"), [(8 / 255, 2 / 255, 10), (0.2, 0.05, 7)])
def test_pgd_without_random_start_matches_torchattacks(
    eps: float, alpha: float, steps: int
) -> None:
    model = _cnn()
    x, y = _digits()
    oracle = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    theirs = oracle(x, y)
    ours = pgd(model, x, y, eps, alpha, steps, random_start=False)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_pgd_random_start_is_reproducible_from_a_seed_or_generator() -> None:
    model = _cnn()
    x, y = _digits(16)
    run = functools.partial(pgd, model, x, y, 0.1, 0.02, 3)
    first = run(generator=7)
    assert torch.equal(first, run(generator=7))
    assert torch.equal(first, run(generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, run(generator=8))
    torch.manual_seed(3)
    from_global = run()
    torch.manual_seed(3)
    assert torch.equal(from_global, run())


def test_deterministic_attacks_repeat_exactly() -> None:
    model = _cnn()
    x, y = _digits(16)
    assert torch.equal(fgsm(model, x, y, 0.1), fgsm(model, x, y, 0.1))
    assert torch.equal(ifgsm(model, x, y, 0.1, 0.02, 4), ifgsm(model, x, y, 0.1, 0.02, 4))


class _Mixed(nn.Module):
    """A model whose submodules are in different modes, with dropout and BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.body(x))
        return out


ATTACKS: dict[str, AttackFn] = {
    "fgsm": functools.partial(fgsm, eps=0.1),
    "pgd": functools.partial(pgd, eps=0.1, alpha=0.03, steps=3, generator=0),
    "ifgsm": functools.partial(ifgsm, eps=0.1, alpha=0.03, steps=3),
    "cw_l2": functools.partial(cw_l2, steps=5),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_attacks_restore_every_mode_and_leave_no_parameter_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = _Mixed()
    model.train()
    model.body[3].eval()  # dropout off by hand, the rest in train mode
    model.head.bias.requires_grad_(False)
    for p in model.body[0].parameters():
        p.grad = torch.ones_like(p)
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    stats = model.body[1].running_mean.clone()
    x, y = torch.rand(20, 6), torch.randint(0, 3, (20,))
    x_adv = ATTACKS[name](model, x, y)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(model.body[1].running_mean, stats)  # ran in eval mode
    for n, p in model.named_parameters():
        expected = torch.ones_like(p) if n.startswith("body.0") else None
        assert (p.grad is None) if expected is None else torch.equal(p.grad, expected), n
    # In eval mode, the attack is that of the model put in eval mode by hand.
    model.eval()
    torch.testing.assert_close(x_adv, ATTACKS[name](model, x, y), rtol=0, atol=1e-6)
    assert not x_adv.requires_grad


def test_attacks_run_under_no_grad_and_restore_modes_after_an_error() -> None:
    model = _cnn().train()
    x, y = _digits(8)
    with torch.no_grad():
        x_adv = fgsm(model, x, y, 0.1)
    assert not torch.equal(x_adv, x)

    def bad_loss(logits: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits, targets, reduction="none")

    with pytest.raises(UsageError, match="loss_fn must return a scalar"):
        fgsm(model, x, y, 0.1, loss_fn=bad_loss)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_a_custom_loss_is_increased() -> None:
    model = _linear(4, 3, seed=6)
    x = torch.full((1, 4), 0.5, dtype=torch.float64)

    def logit_of_class_two(logits: Tensor, targets: Tensor) -> Tensor:
        return logits[:, 2].sum()

    x_adv = fgsm(model, x, torch.tensor([0]), 0.1, loss_fn=logit_of_class_two)
    expected = x + 0.1 * torch.sign(model.weight[2].detach())
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-12)


def test_eot_wrapper_passes_through_the_attacks() -> None:
    model = _cnn()
    x, y = _digits(8)
    torch.testing.assert_close(
        fgsm(EOT(model, 3), x, y, 0.1), fgsm(model, x, y, 0.1), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, y: fgsm(m, x, y, -0.1), "fgsm: eps must be finite and >= 0, got -0.1"),
        (lambda m, x, y: fgsm(m, x, y, float("nan")), "fgsm: eps must be finite"),
        (lambda m, x, y: fgsm(m, x, y, True), "fgsm: eps must be a number"),
        (lambda m, x, y: pgd(m, x, y, 0.1, -1.0, 3), "pgd: alpha must be finite and >= 0"),
        (lambda m, x, y: pgd(m, x, y, 0.1, 0.1, 0), "pgd: steps must be an int >= 1, got 0"),
        (lambda m, x, y: ifgsm(m, x, y, 0.1, 0.1, 2.0), "ifgsm: steps must be an int >= 1"),
        (lambda m, x, y: fgsm(m, x * 2, y, 0.1), r"inputs must lie in \[0, 1\].*\[0, 2\]"),
        (lambda m, x, y: fgsm(m, x - 0.5, y, 0.1), r"normalization belongs inside the model"),
        (lambda m, x, y: pgd(m, x * float("nan"), y, 0.1, 0.1, 1), r"inputs must lie in"),
        (lambda m, x, y: fgsm(m, (x * 16).long(), y, 0.1), "inputs must be a floating tensor"),
        (lambda m, x, y: fgsm(m, x, y[:3], 0.1), r"one row per input \(8\), got \(3,\)"),
        (lambda m, x, y: fgsm(m, x, [0] * 8, 0.1), "targets must be a tensor"),
    ],
)
def test_bad_input_is_a_usage_error(call: Callable[..., Tensor], message: str) -> None:
    model = _cnn()
    x, y = _digits(8)
    with pytest.raises(UsageError, match=message):
        call(model, x, y)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attacks_run_on_the_inputs_device() -> None:
    model = _cnn()
    x, y = _digits()
    cpu = ifgsm(model, x, y, 0.1, 0.025, 5)
    model_gpu, x_gpu, y_gpu = model.cuda(), x.cuda(), y.cuda()
    gpu = ifgsm(model_gpu, x_gpu, y_gpu, 0.1, 0.025, 5)
    assert gpu.device == x_gpu.device
    # Sign flips of near-zero gradients may differ between devices: compare the bulk.
    assert float((gpu.cpu() - cpu).abs().gt(1e-5).float().mean()) < 0.01
    seeded = pgd(model_gpu, x_gpu, y_gpu, 0.1, 0.025, 3, generator=1)
    assert torch.equal(seeded, pgd(model_gpu, x_gpu, y_gpu, 0.1, 0.025, 3, generator=1))
    assert float((seeded - x_gpu).abs().max()) <= 0.1 + 1e-6
