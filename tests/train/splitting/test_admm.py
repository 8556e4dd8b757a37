"""tailwise.train.splitting ADMM: exact projections, the squared Lagrangian, rounds, masks."""

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
from tailwise.models import MLP
from tailwise.train import evaluate, fit
from tailwise.train.splitting import ADMM, keep_mask, sparsity, splittable_weights


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small tensors: a second intra-op thread only waits on a shared 2-core machine."""
    with single_threaded():
        yield


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.7, 0.95])
@pytest.mark.parametrize("shape", [(10,), (7, 3), (4, 3, 3, 3)])
def test_projection_keeps_exactly_the_largest_magnitudes(
    share: float, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    v = torch.randn(shape)
    v.view(-1)[::4] = 0.5  # ties
    keep = keep_mask(v, share)
    n = v.numel()
    assert int((~keep).sum()) == int(share * n + 1e-9)  # floor(share n), exactly
    if bool(keep.any()) and bool((~keep).any()):
        # Magnitudes, not signed values: every kept |v| >= every dropped |v|.
        assert float(v[keep].abs().min()) >= float(v[~keep].abs().max())


def test_projection_uses_magnitudes_not_signed_values() -> None:
    v = torch.tensor([-5.0, 0.1, -0.2, 3.0, 0.05, -4.0])
    # A percentile of signed values would keep 3.0, 0.1, 0.05; the magnitudes keep -5, 3, -4.
    assert keep_mask(v, 0.5).tolist() == [True, False, False, True, False, True]


@pytest.mark.parametrize("share", [0.25, 0.5, 0.6])
def test_structured_projection_keeps_whole_channels_by_l2_norm(share: float) -> None:
    torch.manual_seed(1)
    v = torch.randn(8, 3, 2, 2)
    keep = keep_mask(v, share, structured=True)
    channel_kept = keep.flatten(1).all(dim=1)
    assert torch.equal(keep, channel_kept[:, None, None, None].expand_as(v))
    assert int((~channel_kept).sum()) == int(share * 8 + 1e-9)
    norms = torch.linalg.vector_norm(v.flatten(1), dim=1)
    assert float(norms[channel_kept].min()) >= float(norms[~channel_kept].max())


def _data(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, dtype=torch.float64, generator=g), torch.randint(
        0, 3, (32,), generator=g
    )


def test_steps_are_sgd_on_the_squared_augmented_lagrangian_with_one_dual_update_per_round() -> None:
    """Oracle: SGD (momentum) on f(W) + rho/2 ||W - Z + U||^2 by autograd, Z and U constants;
    every 3 steps Z = Pi(W + U), U = U + W - Z, computed here by hand."""
    torch.manual_seed(0)
    net = MLP(6, [8], 3).double()
    oracle = copy.deepcopy(net)
    x, y = _data()
    rho, share, every = 0.5, 0.6, 3
    admm = ADMM(
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        net,
        sparsity=share,
        rho=rho,
        update_every=every,
    )
    sgd = torch.optim.SGD(oracle.parameters(), lr=0.1, momentum=0.9)
    split = list(splittable_weights(oracle).values())
    zs = [p.detach() * keep_mask(p.detach(), share) for p in split]
    us = [torch.zeros_like(p) for p in split]
    for step in range(1, 8):
        admm.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        admm.step()
        sgd.zero_grad()
        loss = nn.functional.cross_entropy(oracle(x), y)
        for p, z, u in zip(split, zs, us, strict=True):
            loss = loss + rho / 2 * ((p - z + u) ** 2).sum()  # squared, not the plain norm
        loss.backward()
        sgd.step()
        if step % every == 0:
            for i, p in enumerate(split):
                target = p.detach() + us[i]
                zs[i] = target * keep_mask(target, share)
                us[i] = us[i] + p.detach() - zs[i]
        for i, (name, z) in enumerate(admm.sparse_weights().items()):
            torch.testing.assert_close(z, zs[i], rtol=1e-9, atol=1e-12, msg=f"Z of {name}")
            torch.testing.assert_close(
                admm.state[admm.split_params[i]]["dual"], us[i], rtol=1e-9, atol=1e-12
            )
    for p, q in zip(net.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    assert admm.steps == 7
    for p in admm.split_params:
        assert not admm.state[p]["dual"].requires_grad  # no autograd graph through U


def test_hard_prune_gives_exact_sparsity_and_masks_hold_through_retraining() -> None:
    torch.manual_seed(0)
    model = MLP(64, [32], 10)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    admm = ADMM(sgd, model, sparsity=0.7, rho=1e-2, update_every=20)
    train, test = digits_loaders(flatten=True, batch_size=64)
    fit(model, train, epochs=2, optimizer=admm, progress=False)
    report = admm.hard_prune(model)
    assert list(report["layer"]) == ["layers.0", "layers.1"]
    assert list(report["achieved"]) == [int(0.7 * 64 * 32) / (64 * 32), int(0.7 * 320) / 320]
    masks = {}
    for name in ("layers.0", "layers.1"):
        module = model.get_submodule(name)
        assert hasattr(module, "weight_orig") and hasattr(module, "weight_mask")
        masks[name] = module.weight_mask.clone()
        # The masks are the support of Z.
        z = admm.sparse_weights()[f"{name}.weight"]
        assert torch.equal(masks[name].bool(), z != 0)
    # Masked retraining through the same optimizer (now the plain SGD): the masks hold.
    fit(model, train, epochs=1, optimizer=admm, progress=False)
    table = sparsity(model).set_index("layer")
    for name, mask in masks.items():
        assert torch.equal(model.get_submodule(name).weight_mask, mask)
        weight = model.get_submodule(name).weight_orig * mask
        assert bool((weight[mask == 0] == 0).all())
        assert table.loc[name, "zeros"] == int((mask == 0).sum())
    _, acc = evaluate(model, test)
    assert acc > 0.8


def test_after_hard_prune_the_step_is_the_wrapped_optimizers() -> None:
    torch.manual_seed(0)
    net = MLP(6, [8], 3).double()
    x, y = _data()
    admm = ADMM(
        torch.optim.SGD(net.parameters(), lr=0.1), net, sparsity=0.5, rho=1.0, update_every=1
    )
    admm.hard_prune(net)
    before = [p.detach().clone() for p in net.parameters()]
    admm.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    admm.step()
    for p, p0, g in zip(net.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * g)  # no rho (W - Z + U) term
    assert admm.steps == 0


def test_state_dict_round_trip_keeps_the_round_and_the_pruned_phase() -> None:
    torch.manual_seed(0)
    model = MLP(6, [8], 3).double()
    x, y = _data()

    def build(net: nn.Module) -> ADMM:
        sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        return ADMM(sgd, net, sparsity=0.5, rho=0.1, update_every=4, structured=True)

    def train(net: nn.Module, opt: ADMM, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

    admm = build(model)
    train(model, admm, 3)
    saved = copy.deepcopy((model.state_dict(), admm.state_dict()))
    train(model, admm, 5)  # crosses a round boundary at step 4 and 8
    resumed = MLP(6, [8], 3).double()
    resumed.load_state_dict(saved[0])
    again = build(resumed)
    again.load_state_dict(saved[1])
    assert again.steps == 3
    train(resumed, again, 5)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    for name, z in admm.sparse_weights().items():
        assert torch.equal(z, again.sparse_weights()[name])
    admm.hard_prune(model)
    assert admm.state_dict()["extra"] == {"steps": 8, "pruned": True}


def _sgd(net: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda n: ADMM(_sgd(n), n, sparsity=1.0, rho=1, update_every=1),
            "ADMM: sparsity must be in [0, 1), got 1.0",
        ),
        (
            lambda n: ADMM(_sgd(n), n, sparsity=-0.1, rho=1, update_every=1),
            "ADMM: sparsity must be in [0, 1)",
        ),
        (
            lambda n: ADMM(_sgd(n), n, sparsity="half", rho=1, update_every=1),
            "ADMM: sparsity must be a number",
        ),
        (
            lambda n: ADMM(_sgd(n), n, sparsity=0.5, rho=0, update_every=1),
            "ADMM: rho must be > 0, got 0",
        ),
        (
            lambda n: ADMM(_sgd(n), n, sparsity=0.5, rho=1, update_every=0),
            "ADMM: update_every must be an int >= 1, got 0",
        ),
        (
            lambda n: ADMM(_sgd(n), n, sparsity=0.5, rho=1, update_every=2.0),
            "ADMM: update_every must be an int",
        ),
        (
            lambda n: ADMM(_sgd(n), n, sparsity=0.5, rho=1, update_every=1, structured=1),
            "ADMM: structured must be True or False",
        ),
        (
            lambda n: ADMM(
                _sgd(n), [n.layers[0].bias], sparsity=0.5, rho=1, update_every=1
            ).hard_prune(n),
            "ADMM.hard_prune: split parameter '0' is not the weight of a Linear or Conv layer",
        ),
        (lambda n: keep_mask(torch.ones(3), 1.5), "keep_mask: sparsity must be in [0, 1)"),
    ],
)
def test_bad_arguments_are_usage_errors(build: Callable[[nn.Module], object], message: str) -> None:
    net = MLP(4, [4], 2)
    with pytest.raises(UsageError, match=re.escape(message)):
        build(net)


def test_hard_prune_twice_is_an_error() -> None:
    net = MLP(4, [4], 2)
    admm = ADMM(_sgd(net), net, sparsity=0.5, rho=1, update_every=1)
    admm.hard_prune(net)
    with pytest.raises(UsageError, match=r"ADMM\.hard_prune: already pruned"):
        admm.hard_prune(net)
