"""tailwise.train.regularizers: the learning rules of source 004 Table 4.1 against dense oracles."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from _oracles import dense_hessian
from tailwise._threads import single_threaded
from tailwise.data.synthetic import xor_dataset
from tailwise.models import MLP
from tailwise.models.init import REGIMES
from tailwise.train import evaluate, fit
from tailwise.train.regularizers import (
    L2,
    TABLE_4_2,
    L2Stopped,
    L2StoppedSelective,
    Metric,
    Regularizer,
    SelectiveL2,
    fit_regularized,
    regularized_step,
    selection_mask,
)

LossFn = Callable[[Tensor, Tensor], Tensor]


class _XORDNet(nn.Module):
    """004 Figure 4.5 in small: Conv1d (kernel 2, stride 2) over C pairs, then a linear head."""

    def __init__(self, pairs: int = 3, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, kernel_size=2, stride=2)
        self.head = nn.Linear(channels * pairs, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(torch.relu(self.conv(x[:, None, :])).flatten(1))
        return out


def _mlp_case() -> tuple[nn.Module, LossFn, Tensor, Tensor]:
    torch.manual_seed(0)
    model = MLP(3, [4], 2, activation="tanh").double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    return model, nn.functional.cross_entropy, x, y


def _conv_case() -> tuple[nn.Module, LossFn, Tensor, Tensor]:
    torch.manual_seed(1)
    model = _XORDNet().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    return model, nn.functional.cross_entropy, x, y


def _regression_case() -> tuple[nn.Module, LossFn, Tensor, Tensor]:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    return model, nn.functional.mse_loss, x, torch.randn(7, 1, dtype=torch.float64)


CASES = {"mlp-tanh-ce": _mlp_case, "conv-relu-ce": _conv_case, "mlp-tanh-mse": _regression_case}


def _dense_theta_h(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """theta^T H from the dense Hessian over the flattened parameters (float64)."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    hessian = dense_hessian(model, loss_fn, x, y)
    row = flat @ hessian  # theta^T H, literally
    return {n: piece.view(s) for n, piece, s in zip(names, row.split(sizes), shapes, strict=True)}


def _params(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _assert_terms(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-9, atol=1e-12, msg=name)


# hvp falls back to double backward, with a warning, where forward-mode AD fails (mse_loss).
@pytest.mark.filterwarnings("ignore:forward-over-reverse HVP failed:RuntimeWarning")
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["forward-over-reverse", "double-backward"])
def test_theta_hessian_is_the_dense_theta_transpose_h(case: str, method: str) -> None:
    model, loss_fn, x, y = CASES[case]()
    regularizer = Metric(1.0, hvp_method=method)
    theta_h = regularizer.theta_hessian(model, loss_fn, x, y)
    _assert_terms(theta_h, _dense_theta_h(model, loss_fn, x, y))
    assert regularizer.stats.hvp_count == 1


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("absolute", [True, False])
def test_metric_term_matches_dense_formula(case: str, absolute: bool) -> None:
    model, loss_fn, x, y = CASES[case]()
    lam = 0.3
    theta, theta_h = _params(model), _dense_theta_h(model, loss_fn, x, y)
    if absolute:
        expected = {n: lam * torch.sign(theta[n]) * theta_h[n].abs() for n in theta}
    else:
        expected = {n: lam * theta_h[n] for n in theta}
    regularizer = Metric(lam, absolute=absolute, hvp_method="double-backward")
    _assert_terms(regularizer.terms(model, loss_fn, x, y, 0), expected)


def _selective_by_hand(
    theta: dict[str, Tensor], theta_h: dict[str, Tensor], lam: float, omega: float
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    terms, masks = {}, {}
    for name, value in theta_h.items():
        flat = value.flatten().tolist()
        largest = max(abs(v) for v in flat)
        # The dense oracle and the HVP round differently (and differently on other BLAS
        # builds): no entry may sit within rounding of the threshold, or the masks could differ.
        threshold = omega * largest
        assert all(abs(abs(v) - threshold) > 1e-8 * largest for v in flat), name
        mask = torch.tensor([abs(v) < omega * largest for v in flat]).view(value.shape)
        masks[name] = mask
        terms[name] = torch.where(mask, lam * theta[name], torch.zeros_like(theta[name]))
    return terms, masks


@pytest.mark.parametrize("case", CASES)
def test_selective_l2_term_matches_dense_formula(case: str) -> None:
    model, loss_fn, x, y = CASES[case]()
    lam, omega = 0.2, 0.3
    expected, masks = _selective_by_hand(
        _params(model), _dense_theta_h(model, loss_fn, x, y), lam, omega
    )
    selected = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert 0 < selected < total  # the rule really selects, and really leaves some out
    regularizer = SelectiveL2(lam, omega, hvp_method="double-backward")
    _assert_terms(regularizer.terms(model, loss_fn, x, y, 0), expected)


def test_selection_mask_takes_the_max_per_tensor() -> None:
    values = torch.tensor([[1.0, -10.0], [2.0, 0.5]])
    assert selection_mask(values, 0.15).tolist() == [[True, False], [False, True]]
    assert not selection_mask(torch.zeros(3), 0.5).any()  # strict: nothing below 0
    assert selection_mask(values, 1.01).all()


def _bits(tensor: Tensor) -> Tensor:
    return tensor.detach().view(torch.int64).clone()


def test_selective_l2_coupled_changes_only_selected_gradients_to_the_bit() -> None:
    model, loss_fn, x, y = _mlp_case()
    lam, omega = 0.2, 0.3
    _, masks = _selective_by_hand(_params(model), _dense_theta_h(model, loss_fn, x, y), lam, omega)
    loss_fn(model(x), y).backward()
    gradient = dict(model.named_parameters())["layers.0.weight"].grad
    assert gradient is not None and (~masks["layers.0.weight"]).any()
    # A negative zero would turn into +0.0 under `grad + 0`: unselected entries must keep it.
    gradient[~masks["layers.0.weight"]] = -0.0
    before = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    SelectiveL2(lam, omega, decoupled=False).apply(model, loss_fn, x, y, 0)
    for name, p in model.named_parameters():
        assert p.grad is not None
        keep = ~masks[name]
        assert torch.equal(_bits(p.grad)[keep], _bits(before[name])[keep]), name
        expected = before[name] + lam * p.detach()
        torch.testing.assert_close(p.grad[masks[name]], expected[masks[name]], rtol=0, atol=0)


def test_selective_l2_decoupled_moves_only_selected_parameters() -> None:
    model, loss_fn, x, y = _conv_case()
    theta = _params(model)
    lam, omega = 0.2, 0.3
    _, masks = _selective_by_hand(theta, _dense_theta_h(model, loss_fn, x, y), lam, omega)
    regularizer = SelectiveL2(lam, omega)
    regularizer.apply(model, loss_fn, x, y, 0)
    for name, p in model.named_parameters():
        keep = ~masks[name]
        assert torch.equal(_bits(p)[keep], _bits(theta[name])[keep]), name
        torch.testing.assert_close(p.detach()[masks[name]], (theta[name] * (1 - lam))[masks[name]])
        assert p.grad is None  # decoupled: gradients are not touched
    fraction = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert regularizer.stats.selected_fraction == pytest.approx(fraction)
    assert regularizer.stats.hvp_count == 1 and regularizer.stats.steps == 1


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_l2_stopped_switches_exactly_at_tau(tau: int) -> None:
    model, loss_fn, x, y = _mlp_case()
    lam = 0.05
    regularizer = L2Stopped(lam, tau)
    theta = _params(model)
    for t in range(tau + 3):
        terms = regularizer.terms(model, loss_fn, x, y, t)
        if t < tau:
            _assert_terms(terms, {n: lam * v for n, v in theta.items()})
        else:
            assert terms == {}
    assert regularizer.stats.hvp_count == 0


def test_l2_stopped_selective_is_l2_then_selective_l2() -> None:
    model, loss_fn, x, y = _regression_case()
    lam, selective_lam, tau, omega = 0.01, 0.2, 2, 0.3
    regularizer = L2StoppedSelective(
        lam, tau, omega, selective_lam=selective_lam, hvp_method="double-backward"
    )
    theta = _params(model)
    selective, _ = _selective_by_hand(
        theta, _dense_theta_h(model, loss_fn, x, y), selective_lam, omega
    )
    for t in range(tau + 2):
        terms = regularizer.terms(model, loss_fn, x, y, t)
        expected = {n: lam * v for n, v in theta.items()} if t < tau else selective
        _assert_terms(terms, expected)
    assert regularizer.stats.hvp_count == 2  # only the steps t >= tau need theta^T H
    assert L2StoppedSelective(lam, tau, omega).selective_lam == lam


def _table_4_1_rules() -> dict[str, Callable[[], Regularizer]]:
    return {
        "l2": lambda: L2(0.05),
        "metric": lambda: Metric(0.05, hvp_method="double-backward"),
        "selective": lambda: SelectiveL2(0.05, 0.3, hvp_method="double-backward"),
        "stopped": lambda: L2Stopped(0.05, 1),
        "stopped-selective": lambda: L2StoppedSelective(0.05, 1, 0.3),
    }


@pytest.mark.parametrize("rule", _table_4_1_rules())
@pytest.mark.parametrize("t", [0, 1])
def test_regularized_sgd_step_is_table_4_1(rule: str, t: int) -> None:
    """theta_(t+1) = theta_(t) - alpha grad L - lambda term(theta_(t)) with the dense term."""
    model, loss_fn, x, y = _mlp_case()
    alpha = 0.1
    theta, theta_h = _params(model), _dense_theta_h(model, loss_fn, x, y)
    grads = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
    gradient = dict(zip(theta, grads, strict=True))
    lam = 0.05
    l2 = {n: lam * v for n, v in theta.items()}
    selective, _ = _selective_by_hand(theta, theta_h, lam, 0.3)
    metric = {n: lam * torch.sign(theta[n]) * theta_h[n].abs() for n in theta}
    zero = {n: torch.zeros_like(v) for n, v in theta.items()}
    term = {
        "l2": l2,
        "metric": metric,
        "selective": selective,
        "stopped": l2 if t < 1 else zero,
        "stopped-selective": l2 if t < 1 else selective,
    }[rule]
    optimizer = torch.optim.SGD(model.parameters(), lr=alpha)
    regularized_step(model, optimizer, loss_fn, x, y, _table_4_1_rules()[rule](), t)
    for name, p in model.named_parameters():
        expected = theta[name] - alpha * gradient[name] - term[name]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14, msg=name)


def test_coupled_l2_goes_through_the_optimizer_like_weight_decay() -> None:
    model, loss_fn, x, y = _mlp_case()
    twin = copy.deepcopy(model)
    regularized_step(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn,
        x,
        y,
        L2(0.01, decoupled=False),
        0,
    )
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, weight_decay=0.01)
    optimizer.zero_grad()
    loss_fn(twin(x), y).backward()
    optimizer.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_coupled_term_becomes_the_gradient_of_an_unused_parameter() -> None:
    model = nn.Linear(2, 2).double()
    extra = nn.Parameter(torch.ones(3, dtype=torch.float64))
    model.register_parameter("extra", extra)
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    L2(0.5, decoupled=False).apply(model, nn.functional.cross_entropy, x, y, 0)
    assert extra.grad is not None and torch.equal(extra.grad, torch.full((3,), 0.5).double())


class _Spy(Regularizer):
    """Records the time and the batch of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, Tensor]] = []

    def terms(
        self, model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Tensor, t: int
    ) -> dict[str, Tensor]:
        self.calls.append((t, inputs.clone()))
        return {}


def _batches() -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 2, generator=generator), torch.tensor([0, 1, 1, 0])) for _ in range(3)]


@pytest.mark.parametrize(
    ("unit", "expected"), [("epoch", [0, 0, 0, 1, 1, 1]), ("step", list(range(6)))]
)
def test_fit_regularized_passes_the_time_and_the_current_batch(
    unit: str, expected: list[int]
) -> None:
    batches = _batches()
    spy = _Spy()
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit_regularized(
        model, batches, spy, epochs=2, optimizer=optimizer, time_unit=unit, progress=False
    )
    assert [t for t, _ in spy.calls] == expected
    for index, (_, inputs) in enumerate(spy.calls):
        assert torch.equal(inputs, batches[index % 3][0])
    assert not optimizer._optimizer_step_pre_hooks  # the hook is removed afterwards
    assert spy.stats.steps == 6 and spy.stats.selected_fraction == 0.0


def test_fit_regularized_equals_a_loop_of_regularized_steps() -> None:
    batches = _batches()
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2))
    twin = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()

    def rule() -> Regularizer:
        return L2StoppedSelective(0.05, 1, 0.5, selective_lam=0.1, hvp_method="double-backward")

    fit_regularized(model, batches, rule(), epochs=3, lr=0.1, progress=False)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    regularizer = rule()
    for epoch in range(3):
        for inputs, targets in batches:
            regularized_step(twin, optimizer, loss_fn, inputs, targets, regularizer, epoch)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_dict_round_trip_and_stats() -> None:
    model, loss_fn, x, y = _mlp_case()
    regularizer = L2StoppedSelective(0.05, 1, 0.3)
    assert math.isnan(regularizer.stats.mean_selected_fraction)
    for t in range(3):
        regularizer.apply(model, loss_fn, x, y, t)
    stats = regularizer.stats
    assert stats.steps == 3 and stats.hvp_count == 2
    assert stats.selected_fraction < 1.0
    assert stats.mean_selected_fraction == pytest.approx(
        (1.0 + 2 * stats.selected_fraction) / 3, abs=0.2
    )
    restored = L2StoppedSelective(0.05, 1, 0.3)
    restored.load_state_dict(regularizer.state_dict())
    assert restored.stats == stats
    assert repr(restored) == "L2StoppedSelective(lam=0.05, tau=1, omega=0.3)"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: L2(-1.0), "lam must be a finite number >= 0"),
        (lambda: Metric(float("nan")), "lam must be"),
        (lambda: SelectiveL2(0.1, -0.5), "omega must be"),
        (lambda: L2Stopped(0.1, 2.5), "tau must be an int"),  # type: ignore[arg-type]
        (lambda: L2StoppedSelective(0.1, -1, 0.1), "tau must be an int"),
        (lambda: Metric(0.1, hvp_method="finite-differences"), "finite-differences"),
    ],
)
def test_bad_hyperparameters_are_rejected(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_time_is_rejected() -> None:
    model, loss_fn, x, y = _mlp_case()
    with pytest.raises(ValueError, match="t must be an int >= 0"):
        L2(0.1).apply(model, loss_fn, x, y, -1)


def test_table_4_2_values() -> None:
    xor = TABLE_4_2["xor", "tanh"]
    assert (xor.lr_large, xor.selective_lam, xor.omega, xor.tau) == (0.0015, 0.1, 0.1, 280)
    assert TABLE_4_2["synthetic", "relu"].lr_large == 6e-5
    assert TABLE_4_2["cifar10", "relu"].tau == 490


def _norm(model: nn.Module) -> float:
    return math.sqrt(sum(float((p.detach() ** 2).sum()) for p in model.parameters()))


def _xor_large_regime(seed: int, hidden: int) -> nn.Module:
    model = MLP(2, [hidden], 2, activation="tanh")
    return REGIMES["large"].apply(model, "xor", "tanh", seed=seed)  # Uniform[0, 2.3]


def _xor_run(seed: int, epochs: int, lr: float, lam: float, omega: float) -> tuple[float, ...]:
    """Train SGD and Selective L2 from the same large-regime init on XOR (full batch).

    Returns (SGD norm, Selective L2 norm, SGD accuracy, Selective L2 accuracy, mean selected
    fraction). SGD goes through ``fit``, Selective L2 through ``fit_regularized``.
    """
    X, y = xor_dataset()
    sgd = _xor_large_regime(seed, 32)
    selective = copy.deepcopy(sgd)
    optimizer = torch.optim.SGD(sgd.parameters(), lr=lr)
    fit(sgd, [(X, y)], epochs=epochs, optimizer=optimizer, progress=False)
    regularizer = SelectiveL2(lam, omega, hvp_method="double-backward")
    fit_regularized(selective, [(X, y)], regularizer, epochs=epochs, lr=lr, progress=False)
    return (
        _norm(sgd),
        _norm(selective),
        evaluate(sgd, [(X, y)])[1],
        evaluate(selective, [(X, y)])[1],
        regularizer.stats.mean_selected_fraction,
    )


def _check_xor_direction(runs: list[tuple[float, ...]], ratio: float) -> None:
    """004's claim, stated so that it holds on any machine.

    The norm ordering (Selective L2 well below SGD) and a real selection hold on every seed.
    Accuracy is a knife-edge property of 4 points after many float32 steps: the last bits of
    the BLAS in use decide whether a borderline point ends on the right side (seed 2 of the
    Table 4.2 run ends at 0.75 on some x86 machines), so full accuracy is required on most
    seeds only, and no run may end below 3 of 4 points.
    """
    print("XOR, large regime: (SGD norm, Selective L2 norm, accuracies, selected):")
    for run in runs:
        print("  " + ", ".join(f"{value:.3f}" for value in run))
    for seed, (sgd_norm, selective_norm, sgd_acc, selective_acc, selected) in enumerate(runs):
        assert selective_norm < ratio * sgd_norm, seed
        assert 0.0 < selected < 1.0, seed
        assert sgd_acc >= 0.75 and selective_acc >= 0.75, seed
    full = sum(run[2] == 1.0 and run[3] == 1.0 for run in runs)
    assert full > len(runs) / 2, f"full accuracy on only {full} of {len(runs)} seeds"


def test_selective_l2_on_xor_ends_with_a_smaller_norm_and_fits_it() -> None:
    """004 §5.3 / Table 5.1: from the large regime, Selective L2 fits XOR with a smaller norm.

    004's lambda = 0.1 and omega = 0.1 (Table 4.2, XOR Tanh) and init Uniform[0, 2.3]; a
    larger learning rate (0.05 instead of 0.0015) so that 300 full-batch epochs suffice.
    Measured (seeds 0-4): SGD norms 15.0, 15.8, 14.7, 14.7, 15.2; Selective L2 norms 4.8,
    3.3, 3.1, 3.7, 3.5; every accuracy 1 (here; see :func:`_check_xor_direction`).
    """
    with single_threaded():  # tiny tensors: extra threads only cost time
        runs = [_xor_run(seed, 300, 0.05, 0.1, 0.1) for seed in range(5)]
    _check_xor_direction(runs, 0.7)


@pytest.mark.slow
def test_selective_l2_on_xor_with_the_hyperparameters_of_table_4_2() -> None:
    """004 Table 4.2 (XOR, Tanh, large regime) as printed: lr 0.0015, lambda 0.1, omega 0.1.

    Full batch, 2000 epochs, 32 hidden units (004 does not give the width in its text).
    Measured (seeds 0-2): SGD norms 14.7, 15.5, 14.4; Selective L2 norms 7.9, 7.3, 4.3;
    every accuracy 1 here, but seed 2 ends at 0.75 on other x86 machines: the claim checked
    is the norm ordering on every seed and full accuracy on most (:func:`_check_xor_direction`).
    """
    hyper = TABLE_4_2["xor", "tanh"]
    with single_threaded():
        runs = [
            _xor_run(seed, 2000, hyper.lr_large, hyper.selective_lam, hyper.omega)
            for seed in range(3)
        ]
    _check_xor_direction(runs, 0.6)


def test_forward_mode_failure_is_warned_once_per_regularizer() -> None:
    model, loss_fn, x, y = _regression_case()  # mse_loss: forward mode may fail (torch 2.13)
    regularizer = Metric(1.0)  # forward-over-reverse by default
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        expected = regularizer.theta_hessian(model, loss_fn, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no retry, from the same instance
        again = regularizer.theta_hessian(model, loss_fn, x, y)
    _assert_terms(again, expected)
    _assert_terms(expected, _dense_theta_h(model, loss_fn, x, y))
    if any("forward-over-reverse" in str(w.message) for w in first):
        with pytest.warns(RuntimeWarning, match="double backward"):  # nothing shared
            Metric(1.0).theta_hessian(model, loss_fn, x, y)


def test_hessian_terms_leave_batch_norm_statistics_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    model = model.double().train()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    before = {name: b.clone() for name, b in model.named_buffers()}
    SelectiveL2(0.1, 0.5, hvp_method="double-backward").terms(
        model, nn.functional.cross_entropy, x, y, 0
    )
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_bad_hvp_method_is_a_usage_error() -> None:
    from tailwise._errors import UsageError

    with pytest.raises(UsageError, match="hvp_method must be one of"):
        Metric(1.0, hvp_method="finite-differences")
