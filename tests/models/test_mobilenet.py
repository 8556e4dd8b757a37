"""tailwise.models.mobilenet: the CIFAR MobileNetV2, counted by formula, blocks by structure."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from tailwise.models import MobileNetV2, mobilenet_v2
from tailwise.models.mobilenet import CIFAR_STAGES, InvertedResidual


def mobilenet_count(
    stages: Sequence[tuple[int, int, int, int]],
    stem: int = 32,
    head: int = 1280,
    in_channels: int = 3,
    classes: int = 10,
) -> int:
    """Parameters by formula: bias-free convs with BatchNorm (2 per channel), Linear head."""
    total, channels = 9 * in_channels * stem + 2 * stem, stem
    for expansion, out, blocks, stride in stages:
        for block in range(blocks):
            hidden = expansion * channels
            total += channels * hidden + 2 * hidden  # expand 1x1
            total += 9 * hidden + 2 * hidden  # depthwise 3x3
            total += hidden * out + 2 * out  # project 1x1
            if (stride if block == 0 else 1) == 1 and channels != out:
                total += channels * out + 2 * out  # projection shortcut
            channels = out
    return total + channels * head + 2 * head + head * classes + classes


def test_parameter_count_by_formula_and_published() -> None:
    # kuangliu/pytorch-cifar MobileNetV2: 2,296,922 parameters for CIFAR-10.
    assert mobilenet_count(CIFAR_STAGES) == 2_296_922
    with torch.device("meta"):
        model = mobilenet_v2()
        custom = MobileNetV2([(2, 8, 2, 2), (3, 8, 1, 1)], stem_width=4, head_width=16)
    assert sum(p.numel() for p in model.parameters()) == 2_296_922
    expected = mobilenet_count([(2, 8, 2, 2), (3, 8, 1, 1)], stem=4, head=16)
    assert sum(p.numel() for p in custom.parameters()) == expected


def test_cifar_variant_downsamples_32_to_4() -> None:
    model = mobilenet_v2(width=0.25).eval()
    with torch.no_grad():
        features = model.stages(model.stem(torch.zeros(1, 3, 32, 32)))
    assert features.shape[-2:] == (4, 4)  # strides 1 (stem), 1, 1, 2, 2, 1, 2, 1


@pytest.mark.parametrize(
    ("c_in", "c_out", "stride", "residual"),
    [(4, 4, 1, "identity"), (4, 6, 1, "projection"), (4, 6, 2, None), (4, 4, 2, None)],
)
def test_inverted_residual_shortcuts(
    c_in: int, c_out: int, stride: int, residual: str | None
) -> None:
    torch.manual_seed(0)
    block = InvertedResidual(c_in, c_out, expansion=3, stride=stride).eval()
    x = torch.randn(2, c_in, 8, 8)
    with torch.no_grad():
        out = block(x)
        body = block.project(block.act(block.depthwise(block.act(block.expand(x)))))
    assert out.shape == (2, c_out, 8 // stride, 8 // stride)
    assert block.depthwise[0].groups == 3 * c_in
    if residual is None:
        torch.testing.assert_close(out, body)
    elif residual == "identity":
        torch.testing.assert_close(out, body + x)
    else:
        assert isinstance(block.shortcut, nn.Sequential)
        with torch.no_grad():
            torch.testing.assert_close(out, body + block.shortcut(x))


def test_state_dict_names() -> None:
    state = mobilenet_v2().state_dict()
    assert state["stem.conv.weight"].shape == (32, 3, 3, 3)
    assert state["stages.0.0.expand.conv.weight"].shape == (32, 32, 1, 1)
    assert state["stages.0.0.depthwise.conv.weight"].shape == (32, 1, 3, 3)
    assert state["stages.0.0.project.conv.weight"].shape == (16, 32, 1, 1)
    assert state["stages.0.0.shortcut.conv.weight"].shape == (16, 32, 1, 1)
    assert not any(key.startswith("stages.2.0.shortcut") for key in state)  # stride 2
    assert state["final.conv.weight"].shape == (1280, 320, 1, 1)
    assert state["head.weight"].shape == (10, 1280)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ((), "stages must name at least one stage"),
        ([(6, 24, 2)], r"each stage must be \(expansion, out_channels, blocks, stride\)"),
        (["abcd"], "each stage must be"),
        ([(6, 24, 0, 1)], "MobileNetV2: blocks of stage 0 must be a positive int, got 0"),
        ([(1, 8, 1, 1), (6, 24, 2, 3)], "MobileNetV2: stride of stage 1 must be 1 or 2, got 3"),
    ],
)
def test_bad_stage_tables_are_refused(stages: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MobileNetV2(stages)  # type: ignore[arg-type]


def test_forward_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"MobileNetV2: expected input of shape \(N, 3, H, W\)"):
        mobilenet_v2(width=0.25)(torch.zeros(1, 1, 32, 32))
