"""Layer-wise learning rates: allocate_lr against the equations of source 000 ch. 2,
layer_param_groups against hand-built ground truth per architecture, LayerwiseLR on a real
(small) training run, resuming and degenerate layers."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable

import numpy as np
import pytest
import torch
from torch import nn

from tailwise import UsageError
from tailwise.data import digits_loaders
from tailwise.models import VGG, DenseNet, SmallCNN, resnet20
from tailwise.spectral.analyze import analyze
from tailwise.train import (
    LR_MAPPINGS,
    LayerwiseLR,
    LRMapping,
    allocate_lr,
    fit,
    layer_param_groups,
)
from tailwise.train.layerwise import _measure_alphas

DETERMINISTIC = tuple(m for m in LR_MAPPINGS if m not in ("normal", "permuted_normal", "emg"))
STOCHASTIC = ("normal", "permuted_normal", "emg")
NORMALIZED = (
    "identity",
    "square",
    "cube",
    "sqrt",
    "cbrt",
    "root4",
    "log",
    "softmax",
    "negpow2",
    *STOCHASTIC,
)

# ---------------------------------------------------------------------------------------------
# allocate_lr: hand-computed cases, one per equation


@pytest.mark.parametrize(
    ("mapping", "alphas", "weights"),
    [
        ("identity", [2.0, 3.0, 5.0], [2.0, 3.0, 5.0]),  # eq. 2.13
        ("square", [1.0, 2.0, 3.0], [1.0, 4.0, 9.0]),  # eq. 2.16
        ("cube", [1.0, 2.0], [1.0, 8.0]),  # eq. 2.17
        ("sqrt", [4.0, 9.0], [2.0, 3.0]),  # eq. 2.18
        ("cbrt", [8.0, 27.0], [2.0, 3.0]),
        ("root4", [16.0, 81.0], [2.0, 3.0]),
        ("log", [math.e, math.e**3], [1.0, 3.0]),
        ("softmax", [0.0, math.log(3.0)], [1.0, 3.0]),  # eq. 2.19
    ],
)
def test_normalized_mappings_match_their_equation(
    mapping: str, alphas: list[float], weights: list[float]
) -> None:
    lr_t = 0.1
    n = len(alphas)
    expected = lr_t * n * np.array(weights) / sum(weights)
    np.testing.assert_allclose(allocate_lr(alphas, lr_t, mapping), expected, rtol=1e-12)


def test_softmax_is_stable_for_large_alphas() -> None:
    lrs = allocate_lr([1000.0, 1000.0 + math.log(3.0)], 1.0, "softmax")
    np.testing.assert_allclose(lrs, [0.5, 1.5], rtol=1e-9)


def test_negpow2_by_hand() -> None:
    # n = 3: [1/8, 1/4, 1/2] + residue 1/8 on the largest; ranks of [5, 2, 3] are [2, 0, 1].
    np.testing.assert_allclose(
        allocate_lr([5.0, 2.0, 3.0], 1.0, "negpow2"), [3 * 5 / 8, 3 / 8, 3 / 4], rtol=0
    )
    lrs = allocate_lr([1.0, 4.0, 2.0, 3.0], 0.2, "negpow2")
    np.testing.assert_allclose(lrs, 0.2 * 4 * np.array([1 / 16, 9 / 16, 1 / 8, 1 / 4]))
    assert lrs.sum() == pytest.approx(4 * 0.2, rel=1e-15)


@pytest.mark.parametrize("n", [1, 2, 7, 60, 1200])
def test_negpow2_sums_to_n_lr_t(n: int) -> None:
    alphas = np.random.default_rng(n).uniform(2, 6, n)
    lrs = allocate_lr(alphas, 0.05, "negpow2")
    assert lrs.sum() == pytest.approx(n * 0.05, rel=1e-12)
    assert np.all(np.diff(lrs[np.argsort(alphas)]) >= 0)  # larger alpha, larger lr


def test_negpow2_ties_share_their_entries() -> None:
    lrs = allocate_lr([2.0, 3.0, 3.0], 1.0, "negpow2")
    np.testing.assert_allclose(lrs, [3 / 8, 3 * (1 / 4 + 5 / 8) / 2, 3 * (1 / 4 + 5 / 8) / 2])


def test_tb_equals_np_interp() -> None:
    alphas = np.random.default_rng(1).uniform(1.5, 7, 25)
    for s in [(0.5, 1.5), (0.6, 1.4), (0.0, 2.0)]:
        expected = np.interp(alphas, [alphas.min(), alphas.max()], [s[0] * 0.1, s[1] * 0.1])
        np.testing.assert_array_equal(allocate_lr(alphas, 0.1, "tb", s=s), expected)


@pytest.mark.parametrize("mapping", NORMALIZED)
def test_normalized_mappings_keep_the_mean_lr(mapping: str) -> None:
    alphas = np.random.default_rng(2).uniform(2, 6, 17)
    lrs = allocate_lr(alphas, 0.1, mapping, rng=3)
    assert lrs.mean() == pytest.approx(0.1, rel=1e-12)
    assert np.all(lrs > 0)


@pytest.mark.parametrize("mapping", LR_MAPPINGS)
def test_equal_alphas_give_lr_t(mapping: str) -> None:
    np.testing.assert_allclose(allocate_lr([3.5] * 6, 0.1, mapping), 0.1, rtol=1e-15)
    np.testing.assert_allclose(allocate_lr([4.0], 0.3, mapping), 0.3, rtol=1e-15)


def test_normal_mapping_against_its_draws() -> None:
    """eqs. 2.26-2.27: y ~ N(alpha, 1), normalized (alphas far from 0: nothing redrawn)."""
    alphas = np.array([10.0, 12.0, 15.0, 20.0])
    y = np.random.default_rng(7).normal(alphas, 1.0)
    expected = 0.1 * 4 * y / y.sum()
    np.testing.assert_allclose(allocate_lr(alphas, 0.1, "normal", rng=7), expected, rtol=1e-12)


def test_permuted_normal_against_its_draws() -> None:
    """eqs. 2.28-2.29: x ~ N(lr_t, 1), the j-th largest alpha gets the j-th largest x."""
    alphas = np.array([3.0, 2.0, 5.0, 4.0])
    lr_t = 20.0  # far from 0: nothing redrawn
    x = np.sort(np.random.default_rng(11).normal(lr_t, 1.0, 4))
    ranks = np.argsort(np.argsort(alphas))
    expected = lr_t * 4 * x[ranks] / x.sum()
    lrs = allocate_lr(alphas, lr_t, "permuted_normal", rng=np.random.default_rng(11))
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)


def test_emg_against_its_draws() -> None:
    """eqs. 2.30-2.31: alpha + (Exp(nu) - 1/nu) + N(0, 1), normalized."""
    alphas = np.array([20.0, 25.0, 30.0])
    rng = np.random.default_rng(5)
    y = alphas + rng.exponential(1 / 2.0, 3) - 1 / 2.0 + rng.normal(0.0, 1.0, 3)
    lrs = allocate_lr(alphas, 0.1, "emg", rng=5, nu=2.0)
    np.testing.assert_allclose(lrs, 0.3 * y / y.sum(), rtol=1e-12)


@pytest.mark.parametrize("mapping", STOCHASTIC)
def test_stochastic_mappings_are_reproducible_and_positive(mapping: str) -> None:
    alphas = np.linspace(0.05, 0.5, 40)  # near 0: many draws are redrawn
    first = allocate_lr(alphas, 0.1, mapping, rng=4)
    np.testing.assert_array_equal(first, allocate_lr(alphas, 0.1, mapping, rng=4))
    np.testing.assert_array_equal(
        first, allocate_lr(alphas, 0.1, mapping, rng=np.random.default_rng(4))
    )
    np.testing.assert_array_equal(
        allocate_lr(alphas, 0.1, mapping), allocate_lr(alphas, 0.1, mapping, rng=None)
    )
    assert not np.array_equal(first, allocate_lr(alphas, 0.1, mapping, rng=5))
    assert np.all(first > 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alphas": [2.0, float("nan"), 3.0]}, r"alphas\[1\] = nan"),
        ({"alphas": [2.0, 3.0, float("inf")]}, r"alphas\[2\] = inf"),
        ({"alphas": []}, "empty"),
        ({"alphas": [[2.0, 3.0]]}, "one-dimensional"),
        ({"mapping": "linear"}, "mapping must be one of"),
        ({"lr_t": -0.1}, "lr_t"),
        ({"lr_t": float("nan")}, "lr_t"),
        ({"s": (1.5, 0.5)}, "s1 <= s2"),
        ({"s": (0.5,)}, "pair"),
        ({"rng": "seed"}, "rng"),
        ({"nu": 0.0}, "nu"),
        ({"mapping": "log", "alphas": [2.0, 1.0]}, r"alpha > 1.*alphas\[1\] = 1.0"),
        ({"mapping": "sqrt", "alphas": [2.0, -1.0]}, r"alpha > 0.*alphas\[1\]"),
    ],
)
def test_allocate_lr_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"alphas": [2.0, 3.0], "lr_t": 0.1, "mapping": "identity"}
    arguments.update(kwargs)
    with pytest.raises(UsageError, match=match):
        allocate_lr(**arguments)  # type: ignore[arg-type]


def test_mapping_names() -> None:
    assert set(LR_MAPPINGS) == {m.value for m in LRMapping}
    assert {"identity", "negpow2", "tb", "emg", "permuted_normal"} <= set(LR_MAPPINGS)


# ---------------------------------------------------------------------------------------------
# layer_param_groups: ground truth per architecture


def names_of(model: nn.Module, groups: list[dict[str, object]]) -> dict[str, set[str]]:
    """{group layer: parameter names}; asserts every trainable parameter is in one group."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    seen: list[str] = []
    out: dict[str, set[str]] = {}
    for group in groups:
        params = group["params"]
        assert isinstance(params, list) and params, "empty groups are left out"
        names = [by_id[id(p)] for p in params]
        seen += names
        layer = group["layer"]
        assert isinstance(layer, str) and layer not in out
        out[layer] = set(names)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)  # each exactly once
    return out


def expected_groups(
    model: nn.Module, pairs: dict[str, list[str]], to_rest: Iterable[str] = ()
) -> dict[str, set[str]]:
    """Layer -> its parameters plus those of the norms in ``pairs[layer]``; layers in
    ``to_rest`` (with their norms) and everything unlisted go to "rest"."""
    to_rest = set(to_rest)
    params = dict(model.named_parameters())

    def of(module: str) -> set[str]:
        return {name for name in params if name.rsplit(".", 1)[0] == module}

    out = {
        layer: of(layer).union(*(of(norm) for norm in norms))
        for layer, norms in pairs.items()
        if layer not in to_rest
    }
    taken = set().union(*out.values())
    rest = set(params) - taken
    if rest:
        out["rest"] = rest
    return out


def resnet_pairs(model: nn.Module) -> dict[str, list[str]]:
    pairs: dict[str, list[str]] = {"stem.conv": ["stem.bn"]}
    for s, stage in enumerate(model.stages):  # type: ignore[arg-type]
        for b, block in enumerate(stage):
            prefix = f"stages.{s}.{b}"
            pairs[f"{prefix}.conv1"] = [f"{prefix}.bn1"]
            pairs[f"{prefix}.conv2"] = [f"{prefix}.bn2"]
            if isinstance(block.shortcut, nn.Sequential):
                pairs[f"{prefix}.shortcut.conv"] = [f"{prefix}.shortcut.bn"]
    pairs["head"] = []
    return pairs


def test_resnet20_every_layer_with_its_batchnorms() -> None:
    model = resnet20()
    groups = layer_param_groups(model, 0.1, skip_first_last=False, min_evals=0)
    pairs = resnet_pairs(model)
    assert "stages.1.0.shortcut.conv" in pairs and "stages.2.0.shortcut.conv" in pairs
    assert names_of(model, groups) == expected_groups(model, pairs)
    # forward order: stem, stage 0 blocks, ..., head
    layers = [g["layer"] for g in groups]
    assert layers[0] == "stem.conv" and layers[-1] == "head"
    assert layers.index("stages.0.0.conv1") < layers.index("stages.0.0.conv2")
    assert all(g["lr"] == 0.1 for g in groups)


def test_resnet20_defaults_skip_first_last_and_small_layers() -> None:
    model = resnet20()
    groups = layer_param_groups(model, 0.1)
    # stem and head (first / last), 1x1 shortcuts (16 and 32 eigenvalues < 50) go to rest,
    # with their BatchNorms: a BN never leaves its conv.
    shortcuts = ["stages.1.0.shortcut.conv", "stages.2.0.shortcut.conv"]
    expected = expected_groups(model, resnet_pairs(model), ["stem.conv", "head", *shortcuts])
    assert names_of(model, groups) == expected
    assert "stages.1.0.shortcut.bn.weight" in expected["rest"]
    assert groups[-1]["layer"] == "rest"


def test_resnet20_shortcut_batchnorm_follows_a_kept_shortcut() -> None:
    model = resnet20()
    # the 1x1 shortcuts have 16 (16 -> 32) and 32 (32 -> 64) eigenvalues
    groups = names_of(model, layer_param_groups(model, 0.1, min_evals=16))
    for prefix in ("stages.1.0.shortcut", "stages.2.0.shortcut"):
        assert groups[f"{prefix}.conv"] == {
            f"{prefix}.conv.weight",
            f"{prefix}.bn.weight",
            f"{prefix}.bn.bias",
        }
    groups = names_of(model, layer_param_groups(model, 0.1, min_evals=17))
    assert "stages.1.0.shortcut.conv" not in groups and "stages.2.0.shortcut.conv" in groups


def test_densenet_norms_follow_only_the_layer_that_feeds_them() -> None:
    model = DenseNet()
    groups = layer_param_groups(model, 0.1, skip_first_last=False, min_evals=0)
    # Pre-activation: each BN normalizes a concatenation (or a pooled map), not a conv's
    # output, except the first BN of the first block, which receives the stem's output.
    pairs: dict[str, list[str]] = {"stem": ["blocks.0.layers.0.bn"]}
    for b, block in enumerate(model.blocks):
        for j in range(len(block.layers)):  # type: ignore[arg-type]
            pairs[f"blocks.{b}.layers.{j}.conv"] = []
        if b < len(model.transitions):
            pairs[f"transitions.{b}.conv"] = []
    pairs["head"] = []
    assert names_of(model, groups) == expected_groups(model, pairs)
    # with the defaults the stem (first layer) goes to rest, and its BN with it
    default = names_of(model, layer_param_groups(model, 0.1))
    assert {"stem.weight", "blocks.0.layers.0.bn.weight"} <= default["rest"]


def test_vgg19_convs_with_their_batchnorms() -> None:
    model = VGG(config="vgg19")
    groups = layer_param_groups(model, 0.05)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16
    pairs = {c: [c.rsplit(".", 1)[0] + ".bn"] for c in convs}
    pairs["head"] = []
    # features.0.conv (first; 9 x 3 = 27 eigenvalues) and head (last) go to rest
    assert names_of(model, groups) == expected_groups(model, pairs, ["features.0.conv", "head"])


def test_mobilenet_v2_every_conv_with_its_batchnorm() -> None:
    from tailwise.models.mobilenet import MobileNetV2, mobilenet_v2

    model = mobilenet_v2(width=0.25)
    assert isinstance(model, MobileNetV2)
    groups = layer_param_groups(model, 0.1, skip_first_last=False, min_evals=0)
    pairs: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            pairs[name] = [name.rsplit(".", 1)[0] + ".bn"]  # expand / depthwise / project /
            # shortcut / stem / final are all Sequential(conv, bn)
    pairs["head"] = []
    assert any(".shortcut.conv" in name for name in pairs)
    assert names_of(model, groups) == expected_groups(model, pairs)
    # defaults: depthwise convs (C x 1 x 3 x 3: analysed flattened, 9 eigenvalues) go to rest
    default = names_of(model, layer_param_groups(model, 0.1))
    depthwise = [n for n in pairs if ".depthwise." in n]
    assert depthwise and not any(n in default for n in depthwise)
    assert all(f"{n}.weight" in default["rest"] for n in depthwise)


def test_include_exclude_match_parameter_names() -> None:
    model = resnet20()
    groups = names_of(model, layer_param_groups(model, 0.1, include=r"^stages\.1\."))
    layers = set(groups) - {"rest"}
    assert layers and all(name.startswith("stages.1.") for name in layers)
    groups = names_of(model, layer_param_groups(model, 0.1, exclude=r"conv2\.weight$"))
    assert not any(name.endswith("conv2") for name in groups)
    assert "stages.0.0.bn2.weight" in groups["rest"]  # bn2 stays with its conv, in rest
    with pytest.raises(UsageError, match="include"):
        layer_param_groups(model, 0.1, include="(")


def test_frozen_parameters_are_in_no_group() -> None:
    model = resnet20()
    for p in model.stages[0].parameters():
        p.requires_grad_(False)
    groups = names_of(model, layer_param_groups(model, 0.1))  # checks trainable only
    assert not any(name.startswith("stages.0.") for name in set().union(*groups.values()))


def test_trace_changes_nothing_and_needs_an_input_without_architecture() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(inplace=True),  # modifies conv 3's output in place: BN 5 is not fed by it
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )
    with pytest.raises(UsageError, match="example_input"):
        layer_param_groups(model, 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    groups = names_of(
        model,
        layer_param_groups(
            model, 0.1, skip_first_last=False, min_evals=0, example_input=torch.randn(2, 3, 8, 8)
        ),
    )
    assert groups["0"] == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert groups["3"] == {"3.weight", "3.bias"}
    assert {"5.weight", "5.bias"} <= groups["rest"]
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched
    # nothing to trace: no norms, no first/last to find
    plain = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    assert [g["layer"] for g in layer_param_groups(plain, 0.1, skip_first_last=False)] == [
        "0",
        "rest",
    ]


# ---------------------------------------------------------------------------------------------
# LayerwiseLR


def cosine(lr0: float, t: int, total: int) -> float:
    return lr0 / 2 * (1 + math.cos(math.pi * min(t, total) / total))


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(channels=(32, 64, 64))


def build(
    model: nn.Module, mapping: str = "sqrt", total: int = 4, **kwargs: object
) -> tuple[torch.optim.Optimizer, LayerwiseLR]:
    groups = layer_param_groups(model, 0.1, skip_first_last=False)
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = LayerwiseLR(optimizer, model, mapping=mapping, total_steps=total, **kwargs)  # type: ignore[arg-type]
    return optimizer, scheduler


def test_a_real_run_moves_alphas_and_learning_rates() -> None:
    model = small_cnn()
    optimizer, scheduler = build(model)
    # conv 0 (9 eigenvalues) and the head (10) are below min_evals=50: rest group
    assert scheduler.layers == ["features.1.conv", "features.2.conv"]
    train, _ = digits_loaders(64, seed=0)
    fit(model, train, epochs=4, optimizer=optimizer, callbacks=[scheduler], progress=False)
    assert scheduler.last_epoch == 4
    df = scheduler.trajectory
    assert sorted(df["step"].unique()) == [0, 1, 2, 3, 4]
    layer_rows = df[df["layer"] != "rest"]
    for step, rows in layer_rows.groupby("step"):
        base = cosine(0.1, int(step), 4)
        assert rows["base_lr"].iloc[0] == pytest.approx(base, rel=1e-12)
        expected = allocate_lr(rows["alpha"].to_numpy(), base, "sqrt")
        np.testing.assert_allclose(rows["lr"].to_numpy(), expected, rtol=1e-12)
    rest = df[df["layer"] == "rest"]
    np.testing.assert_allclose(rest["lr"], rest["base_lr"], rtol=0)
    # the alphas move with training, and so do the shares of the learning rate
    first = layer_rows[layer_rows["step"] == 0].set_index("layer")
    last = layer_rows[layer_rows["step"] == 3].set_index("layer")
    assert (last["alpha"] - first["alpha"]).abs().max() > 0.05
    share = lambda rows: rows["lr"] / rows["base_lr"]  # noqa: E731
    assert (share(last) - share(first)).abs().max() > 1e-3
    assert [g["lr"] for g in optimizer.param_groups] == scheduler.get_last_lr()
    # the alphas are tailwise.analyze's (fit="median") on the same weights
    table = analyze(model, fit="median", progress=False).set_index("layer")
    for layer, alpha in scheduler.alphas.items():
        assert alpha == pytest.approx(float(table.loc[layer, "alpha"]), rel=1e-9)


def test_resume_from_a_state_dict_continues_identically() -> None:
    epochs, split = 4, 2
    kwargs = {"mapping": "normal", "total": epochs, "seed": 3}

    model = small_cnn()
    optimizer, scheduler = build(model, **kwargs)  # type: ignore[arg-type]
    train, _ = digits_loaders(64, seed=0)
    fit(model, train, epochs=epochs, optimizer=optimizer, callbacks=[scheduler], progress=False)

    first = small_cnn()
    opt1, sched1 = build(first, **kwargs)  # type: ignore[arg-type]
    loader1, _ = digits_loaders(64, seed=0)
    fit(first, loader1, epochs=split, optimizer=opt1, callbacks=[sched1], progress=False)
    buffer = io.BytesIO()
    torch.save(
        {
            "model": first.state_dict(),
            "optimizer": opt1.state_dict(),
            "scheduler": sched1.state_dict(),
            "loader": loader1.generator.get_state(),  # type: ignore[union-attr]
        },
        buffer,
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    torch.manual_seed(123)  # a different initialization, overwritten by the checkpoint
    second = SmallCNN(channels=(32, 64, 64))
    second.load_state_dict(saved["model"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt2, sched2 = build(second, **kwargs)  # type: ignore[arg-type]
    opt2.load_state_dict(saved["optimizer"])
    sched2.load_state_dict(saved["scheduler"])
    assert sched2.get_last_lr() == sched1.get_last_lr()
    loader2, _ = digits_loaders(64, seed=0)
    loader2.generator.set_state(saved["loader"])  # type: ignore[union-attr]
    fit(second, loader2, epochs=epochs - split, optimizer=opt2, callbacks=[sched2], progress=False)

    assert sched2.last_epoch == scheduler.last_epoch == epochs
    np.testing.assert_allclose(sched2.get_last_lr(), scheduler.get_last_lr(), rtol=1e-9)
    resumed, straight = sched2.trajectory, scheduler.trajectory
    assert resumed[["step", "layer"]].equals(straight[["step", "layer"]])
    np.testing.assert_allclose(resumed["lr"], straight["lr"], rtol=1e-9)
    np.testing.assert_allclose(resumed["alpha"], straight["alpha"], rtol=1e-9)
    for (name, a), b in zip(model.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.allclose(a.double(), b.double(), rtol=1e-6, atol=1e-7), name


def test_per_step_unit_and_every() -> None:
    model = small_cnn()
    _, scheduler = build(model, total=100, unit="step", every=5)
    train, _ = digits_loaders(64, seed=0)
    batches = len(train)
    fit(
        model, train, epochs=1, optimizer=scheduler.optimizer, callbacks=[scheduler], progress=False
    )
    assert scheduler.last_epoch == batches
    alphas = scheduler.trajectory.pivot(index="step", columns="layer", values="alpha")
    changed = [int(step) for step, moved in (alphas.diff().abs().sum(axis=1) > 0).items() if moved]
    assert changed and all(step % 5 == 0 for step in changed)


def test_cosine_base_schedule_and_its_end() -> None:
    model = small_cnn()
    optimizer, scheduler = build(model, mapping="tb", total=3)
    rest = next(i for i, g in enumerate(optimizer.param_groups) if g["layer"] == "rest")
    # tb with two layers: s1 lr_t and s2 lr_t
    assert sorted(scheduler.get_last_lr()[:2]) == pytest.approx([0.05, 0.15], rel=1e-12)
    seen = [scheduler.get_last_lr()[rest]]
    for _ in range(4):
        scheduler.step()
        seen.append(scheduler.get_last_lr()[rest])
    np.testing.assert_allclose(seen, [cosine(0.1, t, 3) for t in range(5)], atol=1e-15)
    assert seen[-1] == pytest.approx(0.0, abs=1e-15)  # held at 0 after T


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_wrapping_a_torch_scheduler() -> None:
    model = small_cnn()
    groups = layer_param_groups(model, 0.1, skip_first_last=False)
    optimizer = torch.optim.SGD(groups, lr=0.1)
    steps = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 3], gamma=0.1)
    scheduler = LayerwiseLR(optimizer, model, mapping="identity", total_steps=4, base=steps)
    rest = len(optimizer.param_groups) - 1
    base = [scheduler.get_last_lr()[rest]]
    for _ in range(4):
        scheduler.step()
        base.append(scheduler.get_last_lr()[rest])
        layer = scheduler.get_last_lr()[:2]
        alphas = [scheduler.alphas[name] for name in scheduler.layers]
        np.testing.assert_allclose(layer, allocate_lr(alphas, base[-1], "identity"), rtol=1e-12)
    # not compounded by the layer-wise rates the wrapped scheduler saw in the groups
    np.testing.assert_allclose(base, [0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-12)
    state = scheduler.state_dict()
    assert state["base"]["last_epoch"] == 4


def test_degenerate_layers_keep_lr_t_and_are_reported_once() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 128),  # zeroed below (a dead layer): no eigenvalue above 1e-5
        nn.ReLU(),
        nn.Linear(128, 96),
        nn.ReLU(),
        nn.Linear(96, 96),
        nn.ReLU(),
        nn.Linear(96, 6),  # 6 eigenvalues: too few for a fit (analyze's MIN_EVALS)
        nn.ReLU(),
        nn.Linear(6, 10),
    )
    nn.init.zeros_(model[2].weight)
    groups = layer_param_groups(model, 0.1, min_evals=0, example_input=torch.zeros(1, 64))
    optimizer = torch.optim.SGD(groups, lr=0.1)
    with pytest.warns(RuntimeWarning, match="keep the base learning rate") as record:
        scheduler = LayerwiseLR(optimizer, model, mapping="identity", total_steps=10)
    assert len(record) == 1
    assert set(scheduler.degenerate) == {"2", "8"}
    assert "power-law fit failed" in scheduler.degenerate["2"]
    assert "too few eigenvalues" in scheduler.degenerate["8"]
    lrs = dict(zip(scheduler.layers, scheduler.get_last_lr(), strict=False))
    assert lrs["2"] == lrs["8"] == 0.1
    healthy = [name for name in scheduler.layers if name not in scheduler.degenerate]
    assert healthy == ["4", "6"]
    expected = allocate_lr([scheduler.alphas[name] for name in healthy], 0.1, "identity")
    np.testing.assert_allclose([lrs[name] for name in healthy], expected, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once: no second warning
        scheduler.step()
    rows = scheduler.trajectory
    assert rows[rows["layer"] == "2"]["alpha"].isna().all()


def test_batched_spectra_match_the_per_layer_path() -> None:
    model = resnet20()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for fit_method in ("median", "ks"):
        one, reasons_one = _measure_alphas(layers, fit_method, batch=False)  # type: ignore[arg-type]
        batched, reasons_batched = _measure_alphas(layers, fit_method, batch=True)  # type: ignore[arg-type]
        assert reasons_one == reasons_batched
        assert one.keys() == batched.keys() and len(one) > 15
        for name in one:
            assert batched[name] == pytest.approx(one[name], rel=1e-9), name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mapping": "linear"}, "mapping must be one of"),
        ({"total_steps": 0}, "total_steps"),
        ({"every": 0}, "every"),
        ({"unit": "batch"}, "unit"),
        ({"alpha": "mle"}, "alpha must be"),
        ({"s": (2.0, 1.0)}, "s1 <= s2"),
        ({"seed": -1}, "seed"),
        ({"base": "linear"}, "base"),
        ({"lr0": -1.0}, "lr0"),
    ],
)
def test_layerwise_lr_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    model = small_cnn()
    optimizer = torch.optim.SGD(layer_param_groups(model, 0.1, skip_first_last=False), lr=0.1)
    arguments: dict[str, object] = {"total_steps": 5}
    arguments.update(kwargs)
    with pytest.raises(UsageError, match=match):
        LayerwiseLR(optimizer, model, **arguments)  # type: ignore[arg-type]


def test_layerwise_lr_rejects_groups_it_cannot_use() -> None:
    model = small_cnn()
    with pytest.raises(UsageError, match="layer_param_groups"):
        LayerwiseLR(torch.optim.SGD(model.parameters(), lr=0.1), model, total_steps=5)
    groups = layer_param_groups(model, 0.1, skip_first_last=False)
    groups[0]["layer"] = "features.9.conv"
    with pytest.raises(UsageError, match="not a module"):
        LayerwiseLR(torch.optim.SGD(groups, lr=0.1), model, total_steps=5)
    groups = layer_param_groups(model, 0.1, skip_first_last=False)
    groups[1]["layer"] = groups[0]["layer"]
    with pytest.raises(UsageError, match="both name layer"):
        LayerwiseLR(torch.optim.SGD(groups, lr=0.1), model, total_steps=5)
    groups = layer_param_groups(model, 0.1, skip_first_last=False)
    groups[-1]["lr"] = 0.2
    with pytest.raises(UsageError, match="pass lr0"):
        LayerwiseLR(torch.optim.SGD(groups, lr=0.1), model, total_steps=5)
    _, scheduler = build(model, mapping="tb")
    _, other = build(model, mapping="sqrt")
    with pytest.raises(UsageError, match="mapping"):
        other.load_state_dict(scheduler.state_dict())


def test_pruned_layers_train_layerwise_and_their_pruned_weights_stay_zero() -> None:
    """A model pruned with torch.nn.utils.prune trains through ``weight_orig``: its layers get
    their own groups (not the rest group), alpha is measured on weight_orig * mask (the
    matrix the model uses), and the pruned entries are still zero after training."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = SmallCNN(channels=(16, 32, 32))
    dense_groups = layer_param_groups(model, 0.1, skip_first_last=False, min_evals=10)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            prune.l1_unstructured(module, "weight", amount=0.5)
    groups = layer_param_groups(model, 0.1, skip_first_last=False, min_evals=10)
    assert [g["layer"] for g in groups] == [g["layer"] for g in dense_groups]
    for group in groups[:-1]:
        module = model.get_submodule(group["layer"])
        assert any(p is module.weight_orig for p in group["params"])
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    scheduler = LayerwiseLR(optimizer, model, mapping="sqrt", total_steps=2)
    layer = groups[1]["layer"]
    module = model.get_submodule(layer)
    masked = (module.weight_orig * module.weight_mask).detach()
    alone = analyze({"w": masked}, fit="median", progress=False)
    assert scheduler.alphas[layer] == pytest.approx(float(alone["alpha"].iloc[0]), rel=1e-6)
    unmasked = analyze({"w": module.weight_orig.detach()}, fit="median", progress=False)
    assert scheduler.alphas[layer] != pytest.approx(float(unmasked["alpha"].iloc[0]), rel=1e-3)
    train, _ = digits_loaders(batch_size=64, seed=0)
    fit(model, train, epochs=2, optimizer=optimizer, callbacks=[scheduler], progress=False)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            assert torch.all(module.weight[module.weight_mask == 0] == 0)
