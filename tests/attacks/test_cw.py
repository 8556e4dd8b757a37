"""tailwise.attacks.cw: the C&W margin (true class masked to -inf) and the L2 attack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torchattacks
from torch import Tensor, nn

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.attacks import cw_l2, cw_margin


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


def _brute_margin(logits: Tensor, y: Tensor, kappa: float) -> Tensor:
    rows = []
    for z, label in zip(logits.tolist(), y.tolist(), strict=True):
        other = max(v for i, v in enumerate(z) if i != label)
        rows.append(max(z[label] - other, -kappa))
    return torch.tensor(rows, dtype=logits.dtype)


@pytest.mark.parametrize("shift", [0.0, -50.0, 50.0])
@pytest.mark.parametrize("kappa", [0.0, 0.7])
def test_cw_margin_is_the_brute_force_maximum_over_the_other_classes(
    shift: float, kappa: float
) -> None:
    torch.manual_seed(0)
    logits = torch.randn(40, 5, dtype=torch.float64) * 3 + shift
    y = torch.randint(0, 5, (40,))
    expected = _brute_margin(logits, y, kappa)
    torch.testing.assert_close(cw_margin(logits, y, kappa), expected, rtol=0, atol=1e-12)


def test_cw_margin_with_all_negative_logits() -> None:
    # The true class leads by 2: masking it to 0 instead of -inf would give max(-1, 0) - ...
    logits = torch.tensor([[-1.0, -5.0, -3.0], [-4.0, -2.0, -6.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(cw_margin(logits, y), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(cw_margin(logits, y, kappa=5.0), torch.tensor([2.0, -2.0]))


def _binary_case(bias_shift: float = 0.0) -> tuple[nn.Linear, Tensor, Tensor]:
    """A 2-class linear model in float64, inputs inside the box, labels = predictions."""
    torch.manual_seed(0)
    model = nn.Linear(10, 2).double()
    with torch.no_grad():
        model.bias += bias_shift
    x = torch.rand(50, 10, dtype=torch.float64) * 0.6 + 0.2
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


def _distance_to_boundary(model: nn.Linear, x: Tensor, y: Tensor) -> Tensor:
    """The L2 distance from each x to the hyperplane where the two logits are equal."""
    w, b = model.weight.detach(), model.bias.detach()
    normal = w[y] - w[1 - y]
    margin = (normal * x).sum(dim=1) + b[y] - b[1 - y]
    return margin / normal.norm(dim=1)


def test_cw_l2_finds_nearly_the_closest_adversarial_of_a_linear_model() -> None:
    # No misclassified point is closer than the decision hyperplane (a hard lower bound);
    # with enough Adam steps C&W gets within a few percent of it.
    model, x, y = _binary_case()
    x_adv = cw_l2(model, x, y, c=10.0, steps=200, lr=0.01)
    with torch.no_grad():
        fooled = model(x_adv).argmax(dim=1) != y
    assert bool(fooled.all())
    ratio = (x_adv - x).norm(dim=1) / _distance_to_boundary(model, x, y)
    assert float(ratio.min()) >= 1 - 1e-9
    assert float(ratio.max()) <= 1.1


def test_cw_l2_works_with_all_negative_logits_where_torchattacks_does_not() -> None:
    # Shifting every logit by the same constant changes no prediction and no margin.
    positive, x, y = _binary_case(bias_shift=100.0)
    negative, _, _ = _binary_case(bias_shift=-100.0)
    with torch.no_grad():
        assert bool((positive(x) > 0).all()) and bool((negative(x) < 0).all())
    ours = cw_l2(negative, x, y, c=10.0, steps=100)
    torch.testing.assert_close(ours, cw_l2(positive, x, y, c=10.0, steps=100), rtol=0, atol=1e-6)
    with torch.no_grad():
        assert bool((negative(ours).argmax(dim=1) != y).all())
    # torchattacks 3.5.1 masks the true logit to 0 (its issue #184): right when every logit
    # is positive, but with negative logits its margin says "fooled" from the start, so it
    # never moves (it returns the inputs).
    theirs = torchattacks.CW(positive, c=10.0, kappa=0.0, steps=100, lr=0.01)(x, y)
    with torch.no_grad():
        assert bool((positive(theirs).argmax(dim=1) != y).all())
    theirs = torchattacks.CW(negative, c=10.0, kappa=0.0, steps=100, lr=0.01)(x, y)
    assert torch.equal(theirs, x)


def test_cw_l2_returns_adversarials_or_the_inputs_and_respects_kappa() -> None:
    model, x, y = _binary_case()
    for kappa, steps in ((0.0, 60), (0.1, 100)):
        x_adv = cw_l2(model, x, y, c=10.0, kappa=kappa, steps=steps, lr=0.01)
        assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
        with torch.no_grad():
            margin = cw_margin(model(x_adv), y, kappa=1e9)  # unclamped: Z_y - max other
        moved = (x_adv != x).any(dim=1)
        # A mix: the far points are not reached in so few steps and stay where they are.
        assert bool(moved.any()) and bool((~moved).any())
        assert bool((margin[moved] < -kappa).all())
        assert bool((margin[~moved] > 0).all())


def test_cw_l2_is_deterministic_and_per_example() -> None:
    model, x, y = _binary_case()
    first = cw_l2(model, x, y, c=5.0, steps=30)
    assert torch.equal(first, cw_l2(model, x, y, c=5.0, steps=30))
    # Each example is optimized on its own: a sub-batch gives the same rows.
    torch.testing.assert_close(cw_l2(model, x[:7], y[:7], c=5.0, steps=30), first[:7])


def test_cw_l2_moves_pixels_at_zero_and_one() -> None:
    # atanh(2x - 1) is infinite at the box faces; the start is shrunk so they can move.
    model = nn.Linear(4, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]]))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    x_adv = cw_l2(model, x, torch.tensor([0]), c=10.0, steps=300, lr=0.1)
    with torch.no_grad():
        assert int(model(x_adv).argmax()) == 1
    assert float((x_adv - x).abs().min()) > 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"c": 0.0}, "cw_l2: c must be finite and > 0, got 0.0"),
        ({"kappa": -1.0}, "cw_l2: kappa must be finite and >= 0"),
        ({"steps": 0}, "cw_l2: steps must be an int >= 1"),
        ({"lr": float("inf")}, "cw_l2: lr must be finite and > 0"),
    ],
)
def test_bad_parameters_are_usage_errors(kwargs: dict[str, float], message: str) -> None:
    model, x, y = _binary_case()
    with pytest.raises(UsageError, match=message):
        cw_l2(model, x, y, **kwargs)  # type: ignore[arg-type]


def test_targets_must_be_class_indices() -> None:
    model, x, y = _binary_case()
    with pytest.raises(UsageError, match="cw_l2: targets must be integer class indices"):
        cw_l2(model, x, nn.functional.one_hot(y).double())
    with pytest.raises(UsageError, match=r"cw_margin: expected logits \(N, C >= 2\)"):
        cw_margin(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))


def test_abort_early_only_stops_examples_that_stopped_progressing() -> None:
    """Every example's distance with abort_early is the distance it had reached when it
    stopped, so never below the full run's; the attack succeeds as often, nearly as close,
    with fewer example evaluations."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5)).double().eval()
    x = torch.rand(60, 20, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    seen = {"examples": 0}

    def count(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        seen["examples"] += len(args[0])

    handle = model.register_forward_hook(count)
    full = cw_l2(model, x, y, c=10.0, steps=300, lr=0.05, abort_early=False)
    full_cost, seen["examples"] = seen["examples"], 0
    early = cw_l2(model, x, y, c=10.0, steps=300, lr=0.05)
    handle.remove()
    assert seen["examples"] < 0.8 * full_cost
    with torch.no_grad():
        fooled_full = model(full).argmax(dim=1) != y
        fooled_early = model(early).argmax(dim=1) != y
    assert int(fooled_early.sum()) >= int(fooled_full.sum()) - 1
    both = fooled_full & fooled_early
    d_full = (full - x)[both].norm(dim=1)
    d_early = (early - x)[both].norm(dim=1)
    assert bool((d_early >= d_full * (1 - 1e-6)).all())
    assert float(d_early.mean()) <= 1.05 * float(d_full.mean())
