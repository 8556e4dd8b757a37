"""tailwise.train.splitting RGSM: source 002 Algorithm 3 against oracles; physical removal."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from tailwise import UsageError
from tailwise._threads import single_threaded
from tailwise.data import digits_loaders
from tailwise.prune import prune_channels
from tailwise.train import fit
from tailwise.train.splitting import (
    RGSM,
    channel_sparsity,
    prox_group_l0,
    prox_group_l1,
    splittable_weights,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


@pytest.mark.parametrize("penalty", ["group_l1", "group_l0"])
@pytest.mark.parametrize("dim", [0, 1])
def test_one_step_is_sgd_on_the_lagrangian_with_the_group_norm_term(penalty: str, dim: int) -> None:
    """Oracle: SGD (momentum) on f(W) + beta/2 ||W - U||^2 + lam2 sum_g ||W_g|| by autograd,
    U held fixed during the step and then U = prox(W) group by group."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3)).double()
    oracle = copy.deepcopy(net)
    x = torch.randn(8, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    lam1, beta, lam2 = 0.3, 0.8, 0.05
    prox = prox_group_l1 if penalty == "group_l1" else prox_group_l0
    sgd = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rgsm = RGSM(sgd, net, penalty=penalty, lam1=lam1, beta=beta, lam2=lam2, dim=dim)
    reference = torch.optim.SGD(oracle.parameters(), lr=0.05, momentum=0.9)
    split = list(splittable_weights(oracle).values())
    us = [prox(p.detach(), lam1 / beta, dim) for p in split]

    def group_norm_sum(p: Tensor) -> Tensor:
        return torch.linalg.vector_norm(p.movedim(dim, 0).flatten(1), dim=1).sum()

    for _ in range(3):
        rgsm.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        rgsm.step()
        reference.zero_grad()
        loss = nn.functional.cross_entropy(oracle(x), y)
        for p, u in zip(split, us, strict=True):
            loss = loss + beta / 2 * ((p - u) ** 2).sum() + lam2 * group_norm_sum(p)
        loss.backward()
        reference.step()
        us = [prox(p.detach(), lam1 / beta, dim) for p in split]
    for p, q in zip(net.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    for u, v in zip(rgsm.sparse_weights().values(), us, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("penalty", ["group_l1", "group_l0"])
def test_regression_with_dead_outputs_finds_exactly_those_channels(penalty: str) -> None:
    """A linear map whose teacher has zero rows (outputs 1 and 4): RGSM's u zeroes exactly
    those rows (channels) and keeps the others."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 5, dtype=torch.float64, generator=g)
    teacher[[1, 4]] = 0.0
    x = torch.randn(200, 5, dtype=torch.float64, generator=g)
    y = x @ teacher.T + 0.01 * torch.randn(200, 6, dtype=torch.float64, generator=g)
    layer = nn.Linear(5, 6, bias=False).double()
    lam1 = 0.02 if penalty == "group_l1" else 0.005
    rgsm = RGSM(
        torch.optim.SGD(layer.parameters(), lr=0.2),
        {"weight": layer.weight},
        penalty=penalty,
        lam1=lam1,
        beta=1.0,
    )
    for _ in range(500):
        rgsm.zero_grad()
        ((layer(x) - y) ** 2).sum(1).mean().mul(0.5).backward()
        rgsm.step()
    u = rgsm.sparse_weights()["weight"]
    dead = torch.linalg.vector_norm(u, dim=1) == 0
    assert dead.tolist() == [False, True, False, False, True, False]


def _plain_cnn() -> nn.Sequential:
    """No bias and no normalization: a zero output channel of a conv produces exactly zero."""
    return nn.Sequential(
        nn.Conv2d(1, 12, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12 * 4 * 4, 10),
    )


def test_prune_channels_removes_the_zero_channels_of_an_rgsm_model_exactly() -> None:
    torch.manual_seed(0)
    model = _plain_cnn()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    convs = splittable_weights(model, include=r"^[02]\.")  # the classifier is not split
    rgsm = RGSM(sgd, convs, penalty="group_l1", lam1=0.05, beta=1.0, lam2=1e-3)
    train, test = digits_loaders(batch_size=64)
    fit(model, train, epochs=2, optimizer=rgsm, progress=False)
    sparse = rgsm.deploy(model)
    table = channel_sparsity(sparse).set_index("layer")
    dead = {}
    for name in ("0", "2"):
        norms = torch.linalg.vector_norm(sparse.get_submodule(name).weight.flatten(1), dim=1)
        dead[name] = torch.nonzero(norms == 0).flatten()
        assert len(dead[name]) == int(table.loc[name, "zero_channels"])
        assert len(dead[name]) < 12
    assert len(dead["0"]) + len(dead["2"]) > 0

    # The consumers of a dead channel read zeros, so their weights on it never matter;
    # zeroing them makes each dead channel's group importance exactly 0, the lowest, and
    # prune_channels (ranked by group importance) removes exactly the dead channels.
    with torch.no_grad():
        sparse[2].weight[:, dead["0"]] = 0.0
        sparse[6].weight.view(10, 12, 16)[:, dead["2"]] = 0.0
    x = next(iter(test))[0]
    with torch.no_grad():
        before = sparse.eval()(x)
    # A ratio inside ((dead - 1) / 12, dead / 12]: exactly `dead` channels go, whatever the
    # rounding of C (1 - r).
    ratios = {name: (len(idx) - 0.5) / 12 for name, idx in dead.items() if len(idx) > 0}
    small = prune_channels(sparse, ratios, x[:1]).model
    assert small[0].out_channels == 12 - len(dead["0"])
    assert small[2].out_channels == 12 - len(dead["2"])
    assert small[6].in_features == 16 * (12 - len(dead["2"]))
    with torch.no_grad():
        after = small.eval()(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in sparse.parameters())


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = _plain_cnn()
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))

    def build(net: nn.Module) -> RGSM:
        sgd = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        return RGSM(sgd, net, penalty="group_l0", lam1=0.01, beta=1.0, lam2=1e-3)

    def train(net: nn.Module, opt: RGSM) -> None:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

    rgsm = build(model)
    train(model, rgsm)
    saved = copy.deepcopy((model.state_dict(), rgsm.state_dict()))
    train(model, rgsm)
    resumed = _plain_cnn()
    resumed.load_state_dict(saved[0])
    again = build(resumed)
    again.load_state_dict(saved[1])
    train(resumed, again)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    other = RGSM(torch.optim.SGD(resumed.parameters(), lr=0.05), resumed, lam1=0.01, beta=1.0)
    with pytest.raises(UsageError, match=r"RGSM\.load_state_dict: built with other settings"):
        other.load_state_dict(saved[1])


def _sgd(p: nn.Parameter) -> torch.optim.SGD:
    return torch.optim.SGD([p], lr=0.1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: RGSM(_sgd(p), [p], lam1=0.1, beta=0), "RGSM: beta must be > 0, got 0"),
        (
            lambda p: RGSM(_sgd(p), [p], lam1=-0.1, beta=1),
            "RGSM: lam1 must be a finite number >= 0",
        ),
        (lambda p: RGSM(_sgd(p), [p], lam1=0.1, beta=1, lam2=-1), "RGSM: lam2 must be a finite"),
        (
            lambda p: RGSM(_sgd(p), [p], penalty="l1", lam1=0.1, beta=1),
            "RGSM: penalty must be one of 'group_l1', 'group_l0', got 'l1'",
        ),
        (
            lambda p: RGSM(_sgd(p), {"w": p}, lam1=0.1, beta=1, dim=2),
            "RGSM: dim=2 is out of range for parameter 'w' of shape (3, 2)",
        ),
        (lambda p: RGSM(_sgd(p), [p], lam1=0.1, beta=1, dim="0"), "RGSM: dim must be an int"),
    ],
)
def test_bad_arguments_are_usage_errors(
    build: Callable[[nn.Parameter], object], message: str
) -> None:
    p = nn.Parameter(torch.ones(3, 2))
    with pytest.raises(UsageError, match=re.escape(message)):
        build(p)
