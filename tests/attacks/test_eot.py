"""tailwise.attacks.eot: averaged logits of a stochastic model and attacks through them."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.attacks import EOT, eot, fgsm, ifgsm, pgd


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


class _NoisyLinear(nn.Module):
    """logits = (W + sigma E) x + b with a fresh E ~ N(0, I) on every pass, in any mode."""

    def __init__(self, weight: Tensor, sigma: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype))
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        noise = self.sigma * torch.randn_like(self.weight)
        return x @ (self.weight + noise).T + self.bias


def _case(sigma: float) -> tuple[_NoisyLinear, Tensor, Tensor]:
    torch.manual_seed(0)
    first = torch.randn(30, dtype=torch.float64)
    # The rows differ by 0.5 to 1.5 in every coordinate: every gradient sign is clear.
    gap = (torch.rand(30, dtype=torch.float64) + 0.5) * torch.sign(torch.randn(30))
    weight = torch.stack([first, first + gap])
    x = torch.rand(40, 30, dtype=torch.float64) * 0.6 + 0.2
    y = torch.randint(0, 2, (40,))
    return _NoisyLinear(weight, sigma), x, y


def test_eot_logits_are_the_mean_of_independent_passes() -> None:
    model, x, _ = _case(sigma=1.0)
    torch.manual_seed(5)
    passes = torch.stack([model(x) for _ in range(7)])
    torch.manual_seed(5)
    torch.testing.assert_close(EOT(model, 7)(x), passes.mean(dim=0), rtol=0, atol=1e-12)


def test_eot_gradient_converges_to_the_noise_free_gradient() -> None:
    # With two classes the sign of the input gradient is sign(row_other - row_y) of the
    # averaged weights W + sigma mean(E): its noise falls as 1 / sqrt(samples), so FGSM on
    # EOT agrees with FGSM on the noise-free model more and more often.
    model, x, y = _case(sigma=2.0)
    clean = fgsm(_NoisyLinear(model.weight.detach().clone(), sigma=0.0), x, y, eps=0.1)

    def agreement(samples: int) -> float:
        torch.manual_seed(1)
        attacked = eot(model, functools.partial(fgsm, eps=0.1), samples)(x, y)
        return float((attacked == clean).double().mean())

    one, few, many = agreement(1), agreement(16), agreement(1024)
    assert one < few < many
    assert one < 0.8 and many == 1.0


def test_eot_of_a_deterministic_model_is_the_attack_on_the_model() -> None:
    model, x, y = _case(sigma=0.0)
    attack = functools.partial(ifgsm, eps=0.1, alpha=0.02, steps=5)
    torch.testing.assert_close(eot(model, attack, 4)(x, y), attack(model, x, y), rtol=0, atol=0)


def test_eot_attacks_are_reproducible_with_a_seed() -> None:
    model, x, y = _case(sigma=1.0)
    attack = eot(model, functools.partial(pgd, eps=0.1, alpha=0.02, steps=3, generator=3), 5)
    torch.manual_seed(9)
    first = attack(x, y)
    torch.manual_seed(9)
    assert torch.equal(first, attack(x, y))
    assert not torch.equal(first, attack(x, y))  # the RNG moved on: other noise


def test_eot_shares_parameters_and_modes_with_the_model() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    wrapped = EOT(model, 2)
    assert list(wrapped.parameters()) == list(model.parameters())
    wrapped.eval()
    assert not model.training and not model[1].training
    assert "samples=2" in repr(wrapped)


def test_bad_arguments() -> None:
    with pytest.raises(UsageError, match="EOT: samples must be an int >= 1, got 0"):
        EOT(nn.Linear(2, 2), 0)
    with pytest.raises(TypeError, match=r"EOT: model must be an nn\.Module"):
        EOT(lambda x: x, 2)  # type: ignore[arg-type]
