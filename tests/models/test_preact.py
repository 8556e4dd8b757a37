"""tailwise.models.preact: pre-activation blocks against a functional oracle, counts by formula."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tailwise.models import PreActResNet, WideResNet, preact_resnet20, wrn28
from tailwise.models.preact import PreActBlock


def preact_count(
    blocks_per_stage: Sequence[int],
    widths: Sequence[int],
    stem: int,
    in_channels: int = 3,
    classes: int = 10,
) -> int:
    """Parameters of a pre-activation ResNet, by formula (independent of the model code)."""
    total, channels = 9 * in_channels * stem, stem
    for stage, (count, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
        for block in range(count):
            total += 2 * channels + 9 * channels * width  # bn1, conv1
            total += 2 * width + 9 * width * width  # bn2, conv2
            if block == 0 and (stage > 0 or channels != width):
                total += channels * width  # bias-free 1x1 projection
            channels = width
    return total + 2 * channels + channels * classes + classes  # final BN, head


@pytest.mark.parametrize(
    ("blocks", "widths", "stem"),
    [((3, 3, 3), (16, 32, 64), 16), ((4, 4, 4), (160, 320, 640), 16), ((1, 2), (5, 7), 3)],
)
def test_parameter_count_by_formula(
    blocks: tuple[int, ...], widths: tuple[int, ...], stem: int
) -> None:
    with torch.device("meta"):
        model = PreActResNet(blocks, widths, stem_width=stem)
    assert sum(p.numel() for p in model.parameters()) == preact_count(blocks, widths, stem)
    assert preact_count((4, 4, 4), (160, 320, 640), 16) == 36_479_194  # WRN-28-10, 36.5M


def reference_block(block: PreActBlock, x: torch.Tensor, stride: int) -> torch.Tensor:
    """He et al. (2016b) eq. (3)-style pre-activation unit, written with functional ops."""

    def bn(layer: nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            t, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, 1e-5
        )

    pre = F.relu(bn(block.bn1, x))
    h = F.conv2d(pre, block.conv1.weight, stride=stride, padding=1)
    h = F.conv2d(F.relu(bn(block.bn2, h)), block.conv2.weight, padding=1)
    if isinstance(block.shortcut, nn.Conv2d):
        return h + F.conv2d(pre, block.shortcut.weight, stride=stride)
    return h + x


@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(4, 4, 1), (4, 6, 1), (4, 6, 2)])
def test_block_matches_the_functional_oracle(c_in: int, c_out: int, stride: int) -> None:
    torch.manual_seed(0)
    block = PreActBlock(c_in, c_out, stride).eval()
    for layer in (block.bn1, block.bn2):  # non-trivial running statistics
        assert layer.running_mean is not None and layer.running_var is not None
        layer.running_mean.uniform_(-0.5, 0.5)
        layer.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(layer.weight, 0.5, 1.5)
        nn.init.uniform_(layer.bias, -0.2, 0.2)
    x = torch.randn(2, c_in, 9, 9, dtype=torch.float64)
    block = block.double()
    out = block(x)
    assert out.shape == (2, c_out, 9 // stride + 9 % stride, 9 // stride + 9 % stride)
    torch.testing.assert_close(out, reference_block(block, x, stride), rtol=1e-12, atol=1e-12)
    assert isinstance(block.shortcut, nn.Identity) == (c_in == c_out and stride == 1)


def test_state_dict_names() -> None:
    state = preact_resnet20().state_dict()
    assert state["stem.weight"].shape == (16, 3, 3, 3)
    assert state["stages.0.0.bn1.weight"].shape == (16,)
    assert state["stages.1.0.conv1.weight"].shape == (32, 16, 3, 3)
    assert state["stages.1.0.shortcut.weight"].shape == (32, 16, 1, 1)
    assert not any(key.startswith("stages.0.0.shortcut") for key in state)
    assert state["final_bn.weight"].shape == (64,)
    assert state["head.weight"].shape == (10, 64)
    wide = wrn28(1, width=2).state_dict()  # stem 16 -> stage 0 width 32: projection
    assert wide["stages.0.0.shortcut.weight"].shape == (32, 16, 1, 1)


def test_dropout_is_active_in_training_only() -> None:
    torch.manual_seed(0)
    model = WideResNet((1, 1), (8, 8), dropout=0.5)
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
    assert model.architecture()["dropout"] == 0.5


def test_a_few_training_steps_stay_finite() -> None:
    torch.manual_seed(0)
    model = PreActResNet((1, 1), (8, 16)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PreActResNet((2, 2), (8,)), "PreActResNet: blocks_per_stage and widths must"),
        (lambda: PreActResNet((0,), (8,)), "PreActResNet: each entry of blocks_per_stage"),
        (lambda: PreActResNet(stem_width=0), "PreActResNet: stem_width must be a positive int"),
        (lambda: WideResNet(dropout=-0.1), r"WideResNet: dropout must be a probability in \[0"),
        (lambda: WideResNet(in_channels=0), "WideResNet: in_channels must be a positive int"),
    ],
)
def test_constructors_reject_bad_arguments(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_forward_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"WideResNet: expected input of shape \(N, 3, H, W\)"):
        WideResNet((1,), (4,))(torch.zeros(1, 1, 8, 8))
