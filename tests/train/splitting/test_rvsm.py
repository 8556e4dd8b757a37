"""tailwise.train.splitting RVSM / RVSCGD: Algorithm 1 and 2 of source 002 against oracles."""

from __future__ import annotations

import copy
import io
import itertools
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.data import digits_loaders
from tailwise.models import MLP
from tailwise.train import LayerwiseLR, fit, layer_param_groups
from tailwise.train.splitting import (
    RVSCGD,
    RVSM,
    prox_l0,
    prox_l1,
    prox_tl1,
    sparsity,
    splittable_weights,
)

PENALTIES = ["l0", "l1", "tl1"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


def _prox(penalty: str, w: Tensor, t: float, a: float = 1.0) -> Tensor:
    if penalty == "l0":
        return prox_l0(w, t)
    if penalty == "l1":
        return prox_l1(w, t)
    return prox_tl1(w, t, a)


def _penalty(penalty: str, u: Tensor, a: float = 1.0) -> float:
    if penalty == "l0":
        return float((u != 0).sum())
    if penalty == "l1":
        return float(u.abs().sum())
    return float(((a + 1) * u.abs() / (a + u.abs())).sum())


class _LeastSquares:
    """f(w) = ||A w - b||^2 / (2 n) with a sparse ground truth, in float64."""

    def __init__(self, n: int = 60, d: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(n, d, dtype=torch.float64, generator=g)
        truth = torch.zeros(d, dtype=torch.float64)
        truth[:4] = torch.tensor([2.0, -1.5, 1.0, 0.5], dtype=torch.float64)
        self.b = self.A @ truth + 0.01 * torch.randn(n, dtype=torch.float64, generator=g)
        self.n = n
        self.lipschitz = float(torch.linalg.eigvalsh(self.A.T @ self.A / n).max())

    def loss(self, w: Tensor) -> Tensor:
        return ((self.A @ w - self.b) ** 2).sum() / (2 * self.n)

    def grad(self, w: Tensor) -> Tensor:
        return self.A.T @ (self.A @ w - self.b) / self.n


def _run_least_squares(
    penalty: str, lam: float, beta: float, steps: int
) -> tuple[_LeastSquares, nn.Parameter, RVSM, list[float]]:
    problem = _LeastSquares()
    w = nn.Parameter(torch.zeros(12, dtype=torch.float64))
    eta = 0.5 / (beta + problem.lipschitz)  # source 002 Theorem 4.1: eta < 1 / (beta + L)
    rvsm = RVSM(torch.optim.SGD([w], lr=eta), [w], penalty=penalty, lam=lam, beta=beta)
    lagrangian = []
    for _ in range(steps):
        rvsm.zero_grad()
        problem.loss(w).backward()
        rvsm.step()
        u = rvsm.sparse_weights()["0"]
        value = problem.loss(w.detach()) + lam * _penalty(penalty, u)
        lagrangian.append(float(value + beta / 2 * ((w.detach() - u) ** 2).sum()))
    return problem, w, rvsm, lagrangian


@pytest.mark.parametrize("penalty", PENALTIES)
def test_least_squares_converges_to_a_stationary_point_with_u_the_prox_of_w(penalty: str) -> None:
    lam, beta = 0.05, 1.0
    problem, w, rvsm, lagrangian = _run_least_squares(penalty, lam, beta, 3000)
    u = rvsm.sparse_weights()["0"]
    # u is the prox of w, exactly (the very same computation).
    assert torch.equal(u, _prox(penalty, w.detach(), lam / beta))
    # The Lagrangian decreases monotonically (source 002 Theorem 3.1 / Lemma 12).
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lagrangian))
    # Stationary in w: grad f(w) + beta (w - u) = 0.
    residual = problem.grad(w.detach()) + beta * (w.detach() - u)
    assert float(residual.norm()) < 1e-9
    # The coordinates that are 0 in the truth are pruned in u, the others kept.
    assert bool((u[4:] == 0).all()) and bool((u[:3] != 0).all())


def test_least_squares_l1_matches_the_minimizer_of_the_envelope() -> None:
    """RVSM with l1 minimizes f(w) + min_u [lam |u| + beta/2 (w - u)^2] (a Huber penalty):
    a smooth strongly convex function, minimized independently by SciPy's L-BFGS."""
    lam, beta = 0.05, 1.0
    problem, w, _, _ = _run_least_squares("l1", lam, beta, 3000)
    A, b, n = problem.A.numpy(), problem.b.numpy(), problem.n
    t = lam / beta

    def envelope(x: np.ndarray) -> tuple[float, np.ndarray]:
        r = A @ x - b
        small = np.abs(x) <= t
        huber = np.where(small, beta * x**2 / 2, lam * np.abs(x) - lam * t / 2)
        dhuber = np.where(small, beta * x, lam * np.sign(x))
        return float(r @ r / (2 * n) + huber.sum()), A.T @ r / n + dhuber

    oracle = minimize(envelope, np.zeros(12), jac=True, method="L-BFGS-B", tol=1e-15)
    np.testing.assert_allclose(w.detach().numpy(), oracle.x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_one_step_is_the_wrapped_step_on_the_relaxed_lagrangian(penalty: str) -> None:
    """Oracle: Adam on f(w) + beta/2 ||w - u||^2 with u held fixed, then u = prox(w)."""
    torch.manual_seed(0)
    net = MLP(5, [7], 3).double()
    oracle = copy.deepcopy(net)
    x = torch.randn(16, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    lam, beta, a = 2e-3, 0.5, 0.7
    rvsm = RVSM(
        torch.optim.Adam(net.parameters(), lr=1e-2), net, penalty=penalty, lam=lam, beta=beta, a=a
    )
    adam = torch.optim.Adam(oracle.parameters(), lr=1e-2)
    split = list(splittable_weights(oracle).values())
    us = [_prox(penalty, p.detach(), lam / beta, a) for p in split]
    for _ in range(4):
        rvsm.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        rvsm.step()
        adam.zero_grad()
        coupling = sum(((p - u) ** 2).sum() for p, u in zip(split, us, strict=True))
        (nn.functional.cross_entropy(oracle(x), y) + beta / 2 * coupling).backward()
        adam.step()
        us = [_prox(penalty, p.detach(), lam / beta, a) for p in split]
    for p, q in zip(net.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    for u, v in zip(rvsm.sparse_weights().values(), us, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-12)


def _batches(seed: int, count: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(32, 10, generator=g), torch.randint(0, 4, (32,), generator=g))
        for _ in range(count)
    ]


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list[Any]) -> None:
    for x, y in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    model = MLP(10, [16], 4)

    def build(net: nn.Module) -> RVSM:
        sgd = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        return RVSM(sgd, net, penalty="tl1", lam=1e-3, beta=0.1, a=0.5)

    rvsm = build(model)
    _train(model, rvsm, _batches(1, 5))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": rvsm.state_dict()}, buffer)
    _train(model, rvsm, _batches(2, 5))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = MLP(10, [16], 4)
    resumed.load_state_dict(saved["model"])
    again = build(resumed)
    again.load_state_dict(saved["optimizer"])
    _train(resumed, again, _batches(2, 5))
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    for name, u in rvsm.sparse_weights().items():
        assert torch.equal(u, again.sparse_weights()[name])

    # Without the momentum (an optimizer re-created per epoch, as source 002's public code
    # does) the run goes elsewhere: the saved state is what makes the resume exact.
    fresh = MLP(10, [16], 4)
    fresh.load_state_dict(saved["model"])
    restarted = build(fresh)
    _train(fresh, restarted, _batches(2, 5))
    assert not torch.equal(fresh.layers[0].weight, model.layers[0].weight)


def test_load_state_dict_refuses_another_setup() -> None:
    torch.manual_seed(0)
    model = MLP(10, [16], 4)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05)
    state = RVSM(sgd, model, penalty="l0", lam=1e-3, beta=0.1).state_dict()
    other = RVSM(torch.optim.SGD(model.parameters(), lr=0.05), model, lam=1e-3, beta=0.2)
    with pytest.raises(UsageError, match=r"RVSM.load_state_dict: built with other settings \(beta"):
        other.load_state_dict(state)
    fewer = RVSM(
        torch.optim.SGD(model.parameters(), lr=0.05), [model.layers[0].weight], lam=1e-3, beta=0.1
    )
    with pytest.raises(UsageError, match="saved split parameters"):
        fewer.load_state_dict(state)
    with pytest.raises(UsageError, match="not a RVSM state dict"):
        other.load_state_dict({"state": {}, "param_groups": []})
    rvscgd = RVSCGD(torch.optim.SGD(model.parameters(), lr=0.05), model, lam=1e-3, beta=0.1)
    with pytest.raises(UsageError, match="the state dict is of 'RVSM'"):
        rvscgd.load_state_dict(state)


def test_fit_trains_with_rvsm_and_deploy_gives_the_sparse_copy() -> None:
    torch.manual_seed(0)
    model = MLP(64, [32], 10)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rvsm = RVSM(sgd, model, penalty="l0", lam=2e-4, beta=0.1)
    train, test = digits_loaders(flatten=True, batch_size=64)
    history = fit(model, train, epochs=2, optimizer=rvsm, val_loader=test, progress=False)
    assert history.epochs == 2 and history.val_acc[-1] > 0.8
    sparse = rvsm.deploy(model)
    assert sparse is not model
    for name, u in rvsm.sparse_weights().items():
        assert torch.equal(sparse.get_parameter(name), u)
        assert torch.equal(u, prox_l0(model.get_parameter(name).detach(), 2e-4 / 0.1))
    assert float(sparsity(model).iloc[-1]["sparsity"]) == 0.0  # w stays dense for training
    assert float(sparsity(sparse).iloc[-1]["sparsity"]) > 0.3
    assert torch.equal(sparse.layers[0].bias, model.layers[0].bias)  # biases are not split
    inplace = rvsm.deploy(model, inplace=True)
    assert inplace is model and torch.equal(model.layers[0].weight, sparse.layers[0].weight)


def test_param_groups_are_the_wrapped_optimizers_so_schedulers_work() -> None:
    torch.manual_seed(0)
    model = MLP(64, [32], 10)
    groups = layer_param_groups(model, 0.1, skip_first_last=False, min_evals=10)
    sgd = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    rvsm = RVSM(sgd, model, lam=1e-4, beta=0.1)
    assert rvsm.param_groups is sgd.param_groups
    scheduler = LayerwiseLR(rvsm, model, total_steps=3)
    train, _ = digits_loaders(flatten=True, batch_size=128)
    fit(model, train, epochs=2, optimizer=rvsm, callbacks=[scheduler], progress=False)
    assert [g["lr"] for g in sgd.param_groups] == scheduler.get_last_lr()
    assert len(set(scheduler.get_last_lr())) > 1  # the layers got their own rates
    # A torch scheduler too, and the link survives load_state_dict.
    rvsm.load_state_dict(copy.deepcopy(rvsm.state_dict()))
    step_lr = torch.optim.lr_scheduler.StepLR(rvsm, step_size=1, gamma=0.5)
    before = [g["lr"] for g in sgd.param_groups]
    _train(model, rvsm, [(torch.randn(4, 64), torch.tensor([0, 1, 2, 3]))])
    step_lr.step()
    assert [g["lr"] for g in sgd.param_groups] == [lr * 0.5 for lr in before]


def test_parameters_without_gradient_are_left_alone() -> None:
    a = nn.Parameter(torch.tensor([1.0, 0.01]))
    b = nn.Parameter(torch.tensor([2.0, 0.02]))
    rvsm = RVSM(torch.optim.SGD([a, b], lr=0.1), {"a": a, "b": b}, penalty="l1", lam=0.05, beta=1.0)
    (a.sum() * 2).backward()
    rvsm.step()
    torch.testing.assert_close(
        a.detach(), torch.tensor([1.0 - 0.1 * (2 + 0.05), 0.01 - 0.1 * (2 + 0.01)])
    )
    assert torch.equal(b.detach(), torch.tensor([2.0, 0.02]))
    assert torch.equal(rvsm.sparse_weights()["b"], torch.tensor([1.95, 0.0]))


def test_params_may_be_a_module_a_dict_named_pairs_or_tensors() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert RVSM(sgd, model, lam=0.0, beta=1.0).names == ["0.weight", "3.weight"]
    named = [(n, p) for n, p in model.named_parameters() if n.endswith("bias")]
    assert RVSM(sgd, named, lam=0.0, beta=1.0).names == ["0.bias", "1.bias", "3.bias"]
    assert RVSM(sgd, {"w": model[0].weight}, lam=0.0, beta=1.0).names == ["w"]
    assert RVSM(sgd, [model[0].weight, model[3].weight], lam=0.0, beta=1.0).names == ["0", "1"]
    # lam = 0: u is w itself.
    rvsm = RVSM(sgd, model, penalty="tl1", lam=0.0, beta=1.0)
    assert torch.equal(rvsm.sparse_weights()["0.weight"], model[0].weight.detach())


class _Step(torch.autograd.Function):
    """Binarized ReLU 1[x > 0] with the ReLU derivative 1[x > 0] as its backward pass: the
    coarse gradient of source 002 eq. 3.6 (up to its constant)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype)


def test_rvscgd_learns_the_binarized_one_layer_network() -> None:
    """Source 002 §3.1.2 / Theorem 3.2: the non-overlap network with k patches of size d,
    output 1^T sigma(Z w), loss (1^T sigma(Z w) - 1^T sigma(Z w*))^2 with Gaussian Z; the
    teacher w* (unit norm) has zeros. From an angle above pi/2, RVSCGD (l1) keeps ||w|| = 1,
    aligns w with w*, and its u is exactly zero where w* is."""
    d, k = 8, 4
    teacher = torch.tensor([1.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.8, 0.0], dtype=torch.float64)
    teacher /= teacher.norm()
    g = torch.Generator().manual_seed(1)
    w = nn.Parameter(torch.randn(d, dtype=torch.float64, generator=g))
    angle0 = math.acos(float(torch.dot(w.detach(), teacher) / w.detach().norm()))
    assert angle0 > math.pi / 2
    lam, beta = 0.02, 1.0
    opt = RVSCGD(torch.optim.SGD([w], lr=0.05), [w], lam=lam, beta=beta)
    for _ in range(400):
        z = torch.randn(2048, k, d, dtype=torch.float64, generator=g)
        out = _Step.apply(z @ w).sum(1)
        target = (z @ teacher > 0).to(torch.float64).sum(1)
        opt.zero_grad()
        ((out - target) ** 2).mean().backward()
        opt.step()
        assert abs(float(w.detach().norm()) - 1.0) < 1e-12
    u = opt.sparse_weights()["0"]
    assert torch.equal(u, prox_l1(w.detach(), lam / beta))
    assert math.acos(min(1.0, float(torch.dot(w.detach(), teacher)))) < 0.05
    assert torch.equal(u == 0, teacher == 0)


def test_rvscgd_refuses_to_normalize_zero() -> None:
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = RVSCGD(torch.optim.SGD([w], lr=1.0), [w], lam=0.0, beta=1.0)
    w.grad = torch.tensor([1.0, 1.0])
    with pytest.raises(
        UsageError, match=r"RVSCGD: parameter '0' has norm 0.0 .* lower the step size"
    ):
        opt.step()


def _sgd(p: nn.Parameter) -> torch.optim.SGD:
    return torch.optim.SGD([p], lr=0.1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: RVSM(_sgd(p), [p], lam=1e-3, beta=0.0), "RVSM: beta must be > 0, got 0.0"),
        (
            lambda p: RVSM(_sgd(p), [p], lam=1e-3, beta=-1),
            "RVSM: beta must be a finite number >= 0, got -1",
        ),
        (
            lambda p: RVSM(_sgd(p), [p], lam=-1e-3, beta=1.0),
            "RVSM: lam must be a finite number >= 0",
        ),
        (lambda p: RVSM(_sgd(p), [p], lam=1e-3, beta=1.0, a=0), "RVSM: a must be > 0"),
        (
            lambda p: RVSM(_sgd(p), [p], penalty="l2", lam=1e-3, beta=1.0),
            "RVSM: penalty must be one of 'l0', 'l1', 'tl1', got 'l2'",
        ),
        (
            lambda p: RVSCGD(_sgd(p), [p], lam=1e-3, beta=float("inf")),
            "RVSCGD: beta must be a finite number",
        ),
        (
            lambda p: RVSM([p], [p], lam=1e-3, beta=1.0),
            "RVSM: optimizer must be a torch.optim.Optimizer, got list",
        ),
        (
            lambda p: RVSM(RVSM(_sgd(p), [p], lam=0, beta=1), [p], lam=0, beta=1),
            "wrap a plain torch optimizer",
        ),
        (lambda p: RVSM(torch.optim.LBFGS([p]), [p], lam=0, beta=1), "LBFGS"),
        (lambda p: RVSM(_sgd(p), [], lam=0, beta=1), "params is empty"),
        (lambda p: RVSM(_sgd(p), p, lam=0, beta=1), "got a single tensor"),
        (
            lambda p: RVSM(_sgd(p), [p, p], lam=0, beta=1),
            "parameters '0' and '1' are the same tensor",
        ),
        (
            lambda p: RVSM(_sgd(p), [nn.Parameter(torch.ones(2))], lam=0, beta=1),
            "not optimized by the wrapped optimizer",
        ),
        (lambda p: RVSM(_sgd(p), [p * 2], lam=0, beta=1), "must be a leaf tensor requiring grad"),
        (lambda p: RVSM(_sgd(p), {1: p}, lam=0, beta=1), "params keys must be names"),
        (
            lambda p: RVSM(_sgd(p), nn.ReLU(), lam=0, beta=1),
            "the ReLU has no Linear or Conv weight",
        ),
        (
            lambda p: RVSM(_sgd(p), [p], lam=0, beta=1).deploy(nn.Linear(2, 2)),
            "RVSM.deploy: split parameters ['0'] are not parameters",
        ),
    ],
)
def test_bad_arguments_are_usage_errors(
    build: Callable[[nn.Parameter], object], message: str
) -> None:
    p = nn.Parameter(torch.ones(2))
    with pytest.raises(
        UsageError,
        match=re.escape(message),
    ):
        build(p)
