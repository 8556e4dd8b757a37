"""tailwise.models.enresnet: the noisy blocks against their formula, the ensemble against its
members run by hand, counts against source 002, state_dict and architecture round trips."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
import torch_pruning as tp
from torch import nn

from tailwise import UsageError
from tailwise.models import (
    EnResNet,
    NoisyPreActBlock,
    PreActResNet,
    build_model,
    create_model,
    en2resnet20,
    en5resnet20,
    example_input_shape,
    preact_resnet20,
    preact_resnet38,
    set_noise,
    with_normalization,
)
from tailwise.models.enresnet import noisy_blocks
from tailwise.models.preact import PreActBlock


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def block_input(model: EnResNet, member: int, stage: int, block: int, x: torch.Tensor) -> Any:
    """The input that one block receives in a forward pass of ``model`` (captured by a hook)."""
    target: Any = model.members[member].stages[stage][block]  # type: ignore[index]
    captured: list[torch.Tensor] = []
    handle = target.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return target, captured[0]


# --- parameter counts (source 002 §4.2.3, Table 4.6) -------------------------------------


def test_parameter_counts_match_source_002() -> None:
    with torch.device("meta"):
        member = parameter_count(preact_resnet20())
        en2 = parameter_count(en2resnet20())
        en5 = parameter_count(en5resnet20())
        resnet38 = parameter_count(preact_resnet38())
    assert en2 == 2 * member == 544_564
    assert en5 == 5 * member == 1_361_410
    assert resnet38 == 563_930
    # 002: "En2ResNet20 and ResNet38 (~0.54M and ~0.56M parameters)": two decimals of a
    # million, so the exact counts lie within half a unit of the last digit.
    assert abs(en2 - 0.54e6) <= 0.005e6
    assert abs(resnet38 - 0.56e6) <= 0.005e6
    assert abs(en2 - resnet38) / resnet38 < 0.04  # the size-matched pair of Table 4.6


@pytest.mark.parametrize(("k", "depth", "classes"), [(1, 8, 10), (3, 14, 100), (2, 26, 7)])
def test_counts_are_k_times_the_member(k: int, depth: int, classes: int) -> None:
    n = (depth - 2) // 6
    with torch.device("meta"):
        ensemble = EnResNet(k, depth, num_classes=classes)
        member = PreActResNet((n, n, n), (16, 32, 64), num_classes=classes)
    assert parameter_count(ensemble) == k * parameter_count(member)
    assert len(list(noisy_blocks(ensemble))) == k * 3 * n


def test_members_are_preact_resnets_with_noisy_blocks() -> None:
    model = en2resnet20()
    assert model.k == 2
    for member in model.members:
        assert type(member) is PreActResNet
        blocks = [block for stage in member.stages for block in stage]  # type: ignore[attr-defined]
        assert len(blocks) == 9
        assert all(type(block) is NoisyPreActBlock for block in blocks)
        assert all(block.noise_coef == 0.1 and block.noise for block in blocks)


def test_members_are_initialised_as_plain_preact_resnets() -> None:
    torch.manual_seed(3)
    ensemble = EnResNet(k=2)
    torch.manual_seed(3)
    plain = [preact_resnet20(), preact_resnet20()]  # drawn in the same order
    for member, reference in zip(ensemble.members, plain, strict=True):
        for (key, value), (other_key, other) in zip(
            member.state_dict().items(), reference.state_dict().items(), strict=True
        ):
            assert key == other_key
            assert torch.equal(value, other), key


# --- the noise of one block ---------------------------------------------------------------


@pytest.mark.parametrize("coef", [0.1, 0.5])
@pytest.mark.parametrize(("stage", "block"), [(0, 1), (1, 0), (2, 2)])
def test_block_noise_is_coef_times_std_times_a_global_normal(
    coef: float, stage: int, block: int
) -> None:
    torch.manual_seed(0)
    model = en2resnet20(noise_coef=coef, noise=False).eval()
    target, x = block_input(model, 1, stage, block, torch.rand(16, 3, 32, 32))
    assert isinstance(target, NoisyPreActBlock)
    with torch.no_grad():
        clean = PreActBlock.forward(target, x)  # branch + shortcut, the parent's output
        assert torch.equal(target(x), clean)  # noise off: the plain block, no draw
        target.noise = True
        torch.manual_seed(11)
        noisy = target(x)
        torch.manual_seed(11)
        z = torch.randn_like(clean)
    # The formula of the module docstring: one scalar std of the whole output, Bessel-corrected.
    scale = coef * clean.flatten().std(unbiased=True)
    torch.testing.assert_close(noisy, clean + scale * z, rtol=1e-5, atol=1e-6)
    # The scale measured on the sample: the added noise has std coef * std(out), mean 0.
    added = (noisy - clean).double()
    n = added.numel()
    assert n >= 16 * 64 * 8 * 8
    assert abs(added.std().item() / scale.item() - 1) < 6 / math.sqrt(2 * n) + 1e-3
    assert abs(added.mean().item()) < 6 * scale.item() / math.sqrt(n)


def test_noise_is_added_after_the_residual_sum() -> None:
    # A block whose branch outputs zeros: the noise scale is std(x) of the identity shortcut,
    # which would be 0 if the std were taken of the residual branch alone.
    torch.manual_seed(0)
    block = NoisyPreActBlock(4, 4, noise_coef=0.3).eval()
    nn.init.zeros_(block.conv2.weight)
    x = torch.randn(8, 4, 6, 6)
    with torch.no_grad():
        torch.manual_seed(5)
        noisy = block(x)
        torch.manual_seed(5)
        expected = x + 0.3 * x.std() * torch.randn_like(x)
    torch.testing.assert_close(noisy, expected)
    assert not torch.equal(noisy, x)


def test_gradients_flow_through_the_std_as_in_the_formula() -> None:
    torch.manual_seed(0)
    block = NoisyPreActBlock(3, 5, stride=2, noise_coef=0.4).eval().double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 5, 4, 4, dtype=torch.float64)
    torch.manual_seed(9)
    (grad,) = torch.autograd.grad((block(x) * weights).sum(), x)
    torch.manual_seed(9)
    clean = PreActBlock.forward(block, x)
    z = torch.randn_like(clean)
    expected_out = clean + 0.4 * clean.std() * z  # std not detached
    (expected,) = torch.autograd.grad((expected_out * weights).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    clean_only = PreActBlock.forward(block, x)
    (detached,) = torch.autograd.grad(
        ((clean_only + 0.4 * clean_only.std().detach() * z) * weights).sum(), x
    )
    assert not torch.allclose(grad, detached)  # the std's gradient is there and matters


def test_zero_coefficient_draws_nothing() -> None:
    block = NoisyPreActBlock(4, 4, noise_coef=0.0).eval()
    x = torch.randn(2, 4, 5, 5)
    torch.manual_seed(1)
    out = block(x)
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(1))  # the generator was not advanced
    assert torch.equal(out, PreActBlock.forward(block, x))


# --- the flag ----------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_noise_off_is_deterministic_in_both_modes(training: bool) -> None:
    torch.manual_seed(0)
    model = en2resnet20(width=0.5, noise=False).train(training)
    assert model.noise is False
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        first = model(x)
        torch.manual_seed(123)  # a different generator state changes nothing
        assert torch.equal(model(x), first)


def test_noise_on_changes_outputs_and_eval_does_not_switch_it() -> None:
    torch.manual_seed(0)
    model = en2resnet20(width=0.5)
    x = torch.rand(4, 3, 32, 32)
    for mode in (model.eval, model.train, model.eval):
        mode()
        assert model.noise is True
        assert all(block.noise for block in noisy_blocks(model))
        with torch.no_grad():
            a, b = model(x), model(x)
        assert not torch.allclose(a, b)
    model.noise = False
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert model.noise is False


def test_noise_is_reproducible_with_the_global_seed() -> None:
    torch.manual_seed(0)
    model = en2resnet20(width=0.5).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(42)
        a = model(x)
        torch.manual_seed(42)
        b = model(x)
        with torch.random.fork_rng():
            torch.manual_seed(7)
            c = model(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_set_noise_reaches_wrapped_models_and_counts_blocks() -> None:
    model = with_normalization(en5resnet20(width=0.25), 0.5, 0.25)
    assert set_noise(model, False) == 5 * 9
    assert not any(block.noise for block in noisy_blocks(model))
    assert set_noise(model, True) == 45
    assert all(block.noise for block in noisy_blocks(model))
    plain = preact_resnet20()
    assert set_noise(plain, False) == 0
    with pytest.raises(UsageError, match="set_noise: enabled must be True or False, got 'no'"):
        set_noise(model, "no")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="enabled must be True or False, got 0"):
        inner = model.model
        assert isinstance(inner, EnResNet)
        inner.noise = 0  # type: ignore[assignment]


def test_the_noise_property_reports_any_noisy_block() -> None:
    model = en2resnet20(noise=False)
    member = model.members[1]
    block = member.stages[2][0]  # type: ignore[index]
    assert isinstance(block, NoisyPreActBlock)
    block.noise = True
    assert model.noise is True  # one noisy block: the model is not deterministic
    with pytest.raises(ValueError, match=r"blocks disagree on noise_coef .* or noise"):
        model.architecture()


# --- the ensemble ------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [False, True])
def test_ensemble_is_the_mean_of_its_members_logits(noise: bool) -> None:
    torch.manual_seed(0)
    model = EnResNet(k=3, depth=8, noise=noise, num_classes=6).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        out = model(x)
        torch.manual_seed(1)  # members in order draw the same noise as inside the ensemble
        logits = [member(x) for member in model.members]
    assert out.shape == (5, 6)
    torch.testing.assert_close(out, (logits[0] + logits[1] + logits[2]) / 3)
    assert not torch.allclose(logits[0], logits[1])


def test_each_member_is_a_plain_preact_resnet20_when_noise_is_off() -> None:
    torch.manual_seed(0)
    model = en2resnet20(noise=False).eval()
    x = torch.rand(4, 3, 32, 32)
    outputs = []
    for index in range(2):
        plain = preact_resnet20().eval()
        prefix = f"members.{index}."
        part = {
            key.removeprefix(prefix): value
            for key, value in model.state_dict().items()
            if key.startswith(prefix)
        }
        plain.load_state_dict(part)  # strict: the same keys and shapes
        with torch.no_grad():
            outputs.append(plain(x))
    with torch.no_grad():
        torch.testing.assert_close(model(x), (outputs[0] + outputs[1]) / 2)


def test_state_dict_keys_are_the_members_keys_and_load_back() -> None:
    torch.manual_seed(0)
    model = en2resnet20(width=0.5)
    member_keys = list(preact_resnet20(width=0.5).state_dict())
    expected = [f"members.{i}.{key}" for i in range(2) for key in member_keys]
    assert list(model.state_dict()) == expected
    assert "members.1.stages.2.2.conv2.weight" in expected
    assert "members.0.stages.1.0.shortcut.weight" in expected
    torch.manual_seed(1)
    other = en2resnet20(width=0.5, noise=False).eval()
    other.load_state_dict(model.state_dict())
    model.noise = False
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


# --- architecture, registry, zoo -----------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: en2resnet20(),
        lambda: en5resnet20(width=0.25, num_classes=3, noise_coef=0.2),
        lambda: EnResNet(k=3, depth=14, in_channels=1, noise=False, widths=(4, 6, 8)),
    ],
)
def test_architecture_round_trips_through_json_and_build_model(build: Any) -> None:
    torch.manual_seed(0)
    model = build()
    architecture = model.architecture()
    assert architecture["class"] == "EnResNet"
    restored = json.loads(json.dumps(architecture))
    assert restored == architecture
    rebuilt = build_model(restored)
    assert type(rebuilt) is EnResNet
    assert rebuilt.architecture() == architecture
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    x = torch.rand(*example_input_shape(architecture)).repeat(2, 1, 1, 1)
    with torch.no_grad():
        torch.manual_seed(5)
        expected = model(x)
        torch.manual_seed(5)  # noisy or not, the same draws give the same outputs
        torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=0)


def test_architecture_records_the_configuration() -> None:
    model = en5resnet20(width=0.5, num_classes=100, noise_coef=0.25)
    assert model.architecture() == {
        "class": "EnResNet",
        "k": 5,
        "depth": 20,
        "noise_coef": 0.25,
        "noise": True,
        "num_classes": 100,
        "in_channels": 3,
        "widths": [8, 16, 32],
    }
    model.noise = False
    assert model.architecture()["noise"] is False
    assert example_input_shape({"class": "EnResNet", "in_channels": 1}) == (1, 1, 32, 32)


def test_architecture_refuses_unevenly_pruned_members() -> None:
    model = en2resnet20(width=0.25)
    assert isinstance(model.members[1].stem, nn.Conv2d)  # 4 channels at width 0.25
    model.members[1].stem = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    with pytest.raises(ValueError, match="no longer describe this model"):
        model.architecture()


def test_create_model_builds_the_ensembles_by_name() -> None:
    with torch.device("meta"):
        en2 = create_model("en2resnet20")
        en5 = create_model(" En5ResNet20 ", width=0.5, noise_coef=0.3, noise=False)
    assert isinstance(en2, EnResNet) and isinstance(en5, EnResNet)
    assert (en2.k, en5.k) == (2, 5)
    assert en2.architecture() == en2resnet20().architecture()
    described = en5.architecture()
    assert (described["widths"], described["noise_coef"], described["noise"]) == (
        [8, 16, 32],
        0.3,
        False,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_coef": -0.1}, r"EnResNet: noise_coef must be a finite number >= 0, got -0.1"),
        ({"noise_coef": math.nan}, "noise_coef must be a finite number"),
        ({"noise": "yes"}, "EnResNet: noise must be True or False, got 'yes'"),
        ({"k": 2}, r"en2resnet20 takes no option\(s\) \['k'\]"),
        ({"width": 0}, "width must be a positive finite number"),
    ],
)
def test_create_model_refuses_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        create_model("en2resnet20", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "EnResNet: k must be a positive int, got 0"),
        ({"k": 2.0}, "EnResNet: k must be a positive int, got 2.0"),
        ({"depth": 21}, r"EnResNet: depth must be 6 n \+ 2 .*, got 21"),
        ({"depth": 2}, r"depth must be 6 n \+ 2"),
        ({"widths": (16, 32)}, r"EnResNet: widths must be 3 stage widths, got \(16, 32\)"),
        ({"widths": (16, 0, 64)}, "each entry of widths must be a positive int, got 0"),
        ({"num_classes": 0}, "EnResNet: num_classes must be a positive int"),
        ({"noise_coef": True}, "noise_coef must be a finite number >= 0, got True"),
    ],
)
def test_constructor_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        EnResNet(**kwargs)


def test_forward_refuses_the_wrong_input_shape() -> None:
    model = en2resnet20(width=0.25)
    with pytest.raises(UsageError, match=r"expected input of shape \(N, 3, H, W\), got \(2, 1"):
        model(torch.rand(2, 1, 32, 32))


def test_double_precision_draws_double_noise() -> None:
    torch.manual_seed(0)
    model = en2resnet20(width=0.25).double().eval()
    out = model(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


def test_channel_pruning_traces_through_the_noisy_blocks() -> None:
    # Source 002 prunes EnResNet channels (RGSM); Torch-Pruning must see through the noise.
    torch.manual_seed(0)
    model = en2resnet20(width=0.5, noise=False).eval()
    example = torch.rand(*example_input_shape(model.architecture()))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    first = model.members[0].stem
    assert isinstance(first, nn.Conv2d)
    group = graph.get_pruning_group(first, tp.prune_conv_out_channels, idxs=[0, 1])
    assert graph.check_pruning_group(group)
    group.prune()
    assert first.out_channels == 6
    model.noise = True
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="no longer describe this model"):
        model.architecture()  # member 0 now differs from member 1
