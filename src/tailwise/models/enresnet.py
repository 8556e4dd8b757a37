"""EnResNet: ensembles of noise-injected pre-activation ResNets (source 002 §4.2.1).

Source 002 §4.2.1 (after Wang et al.'s Feynman-Kac formalism principled robust DNNs, its
[65]) approximates the solution of a convection-diffusion equation in two steps: "inject
Gaussian noise to each residual mapping" of a ResNet, then "average the output of n jointly
trained modified ResNets"; En_nResNet20 is that ensemble of n PreAct ResNet20s (REFERENCES §7).
002 does not write the noise out. Our reading, from the authors' public code (REFERENCES §9):
with ``y = branch(x) + shortcut(x)`` the output of a pre-activation block,

    y_noisy = y + noise_coef * std(y) * z,    z ~ N(0, I) of y's shape,

where ``std(y)`` is ONE scalar: the sample standard deviation (Bessel-corrected, as
``torch.std``) over all of ``y``'s N * C * H * W entries, batch included, and not detached
(gradients flow through it, as in the public code). Since the noise is additive, adding it
after the sum equals adding it to the residual branch before the sum; only the scale is
taken from the block output ``y``. One consequence: with noise on, one sample's output
depends (through ``std``) on the rest of its batch.

The noise is on at test time in the original (its accuracies and attacks are measured on the
noisy model), so it is switched by an explicit flag, never by ``train()`` / ``eval()``:
``model.noise = False`` on an :class:`EnResNet`, or :func:`set_noise` on any module that
contains :class:`NoisyPreActBlock` s (e.g. one wrapped by ``with_normalization``). Noise is
drawn from torch's global generator of the output's device (``torch.randn_like``), so
``torch.manual_seed`` (or ``torch.random.fork_rng``) reproduces it; there is no per-model
generator.

Each member is a :class:`~tailwise.models.preact.PreActResNet` whose blocks are
:class:`NoisyPreActBlock` s (subclasses of ``PreActBlock`` with the same parameters), so a
member's state_dict loads into a plain ``preact_resnet20()`` and, with noise off, computes the
same function.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise.models._checks import checked_architecture, scale_width
from tailwise.models.preact import PreActBlock, PreActResNet

DEFAULT_NOISE_COEF = 0.1
"""Source 002 / its [65]: the noise of each block has std 0.1 * std(block output)."""


def _check_noise_coef(where: str, noise_coef: float) -> float:
    if (
        isinstance(noise_coef, bool)
        or not isinstance(noise_coef, int | float)
        or not math.isfinite(noise_coef)
        or noise_coef < 0
    ):
        raise UsageError(f"{where}: noise_coef must be a finite number >= 0, got {noise_coef!r}")
    return float(noise_coef)


def _check_flag(where: str, name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {name} must be True or False, got {value!r}")
    return value


def _check_count(where: str, name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: {name} must be a positive int, got {value!r}")
    return value


class NoisyPreActBlock(PreActBlock):
    """A :class:`~tailwise.models.preact.PreActBlock` whose output gets scaled Gaussian noise.

    ``forward(x) = y + noise_coef * std(y) * randn_like(y)`` with ``y`` the pre-activation
    block's output (residual branch + shortcut) and ``std(y)`` the scalar sample standard
    deviation over all of ``y`` (module docstring; source 002 §4.2.1). With ``noise`` False,
    or ``noise_coef`` 0, it is exactly the parent block and draws no random numbers. The flag
    is independent of ``training``. Same parameters and state_dict keys as ``PreActBlock``.

    Input (N, C_in, H, W); output (N, C_out, ceil(H / stride), ceil(W / stride)).

    >>> block = NoisyPreActBlock(4, 4).eval()
    >>> x = torch.randn(2, 4, 8, 8)
    >>> bool((block(x) != block(x)).any())  # noise on, in eval mode too
    True
    >>> block.noise = False
    >>> torch.equal(block(x), PreActBlock.forward(block, x))
    True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dropout: float = 0.0,
        *,
        noise_coef: float = DEFAULT_NOISE_COEF,
        noise: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, dropout)
        where = type(self).__name__
        self.noise_coef = _check_noise_coef(where, noise_coef)
        self.noise = _check_flag(where, "noise", noise)

    @classmethod
    def from_block(
        cls, block: PreActBlock, *, noise_coef: float = DEFAULT_NOISE_COEF, noise: bool = True
    ) -> NoisyPreActBlock:
        """A noisy block that takes over ``block``'s parameters and buffers (no copy, no
        random numbers drawn: the twin is built on the meta device, then assigned)."""
        with torch.device("meta"):
            noisy = cls(
                block.conv1.in_channels,
                block.conv1.out_channels,
                block.conv1.stride[0],
                block.dropout.p,
                noise_coef=noise_coef,
                noise=noise,
            )
        noisy.load_state_dict(block.state_dict(keep_vars=True), assign=True)
        noisy.train(block.training)
        return noisy

    def forward(self, x: Tensor) -> Tensor:
        """Block output (N, C_out, H', W') plus the scaled noise when ``noise`` is on."""
        out = super().forward(x)
        if not self.noise or self.noise_coef == 0:
            return out
        noisy: Tensor = out + self.noise_coef * out.std() * torch.randn_like(out)
        return noisy

    def extra_repr(self) -> str:
        return f"noise_coef={self.noise_coef}, noise={self.noise}"


def noisy_blocks(model: nn.Module) -> Iterator[NoisyPreActBlock]:
    """Every :class:`NoisyPreActBlock` in ``model`` (itself included), in module order."""
    for module in model.modules():
        if isinstance(module, NoisyPreActBlock):
            yield module


def set_noise(model: nn.Module, enabled: bool) -> int:
    """Switch the noise of every :class:`NoisyPreActBlock` in ``model`` on or off, in place.

    Works on any module containing them (an :class:`EnResNet`, one wrapped by
    ``with_normalization``, ...); ``train()`` / ``eval()`` never change the flag. Returns the
    number of blocks switched (0 for a model without noisy blocks, which is left as it was).
    Raises :class:`tailwise.UsageError` unless ``enabled`` is a bool.

    >>> model = en2resnet20()
    >>> set_noise(model, False), model.noise
    (18, False)
    """
    _check_flag("set_noise", "enabled", enabled)
    count = 0
    for block in noisy_blocks(model):
        block.noise = enabled
        count += 1
    return count


def _noisy_member(
    depth: int,
    widths: Sequence[int],
    in_channels: int,
    num_classes: int,
    noise_coef: float,
    noise: bool,
) -> PreActResNet:
    """A PreActResNet of depth ``depth`` whose blocks are :class:`NoisyPreActBlock` s.

    Its parameters are drawn exactly as ``PreActResNet``'s (the blocks are taken over, not
    re-initialised), so a member built after ``torch.manual_seed(s)`` has the weights of the
    ``PreActResNet`` built after the same seed.
    """
    blocks = (depth - 2) // 6
    member = PreActResNet(
        (blocks, blocks, blocks), widths, in_channels=in_channels, num_classes=num_classes
    )
    for stage in member.stages:
        assert isinstance(stage, nn.Sequential)
        for index, block in enumerate(stage):
            assert isinstance(block, PreActBlock)
            stage[index] = NoisyPreActBlock.from_block(block, noise_coef=noise_coef, noise=noise)
    return member


class EnResNet(nn.Module):
    """An ensemble of ``k`` noise-injected pre-activation ResNets averaging their logits.

    Source 002 §4.2.1 (En_kResNet``depth``; REFERENCES §7): member ``i`` is a CIFAR
    pre-activation ResNet of ``depth`` = 6 n + 2 layers (3 stages of n blocks, widths
    ``widths``, default 16/32/64) whose blocks are :class:`NoisyPreActBlock` s adding
    ``noise_coef * std(y) * N(0, I)`` to each block output ``y`` (module docstring); the
    output is ``(1 / k) sum_i member_i(x)``. Members are trained jointly (one loss on the
    averaged logits, as in the public code).

    ``noise`` (attribute, also a constructor argument) switches the noise of every block;
    ``train()`` / ``eval()`` leave it alone: the original evaluates with noise on. Reading
    ``model.noise`` says whether any block is noisy. Noise is drawn from torch's global
    generator, so ``torch.manual_seed`` reproduces a forward pass.

    Parameters: ``k`` times those of the member (``preact_resnet20``: 272,282, so
    En2ResNet20 has 544,564, 002's "~0.54M"). State_dict keys: ``members.{i}.<PreActResNet
    keys>`` (``members.{i}.stem.weight``, ``members.{i}.stages.{s}.{b}.conv1.weight``, ...,
    ``members.{i}.head.bias``); each member's part loads into a plain ``PreActResNet``.

    Input (N, in_channels, H, W), any H, W (32x32 for CIFAR); output logits (N, num_classes).

    >>> model = EnResNet(k=2, depth=20)
    >>> sum(p.numel() for p in model.parameters())
    544564
    >>> x = torch.rand(2, 3, 32, 32)
    >>> model.eval()(x).shape, bool((model(x) != model(x)).any())  # noisy, even in eval()
    (torch.Size([2, 10]), True)
    >>> model.noise = False
    >>> torch.equal(model(x), model(x))
    True
    """

    def __init__(
        self,
        k: int = 2,
        depth: int = 20,
        *,
        noise_coef: float = DEFAULT_NOISE_COEF,
        noise: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        where = type(self).__name__
        _check_count(where, "k", k)
        _check_count(where, "depth", depth)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise UsageError(
                f"{where}: depth must be 6 n + 2 with n >= 1 blocks per stage (8, 14, 20, 26, "
                f"...), got {depth}"
            )
        _check_count(where, "num_classes", num_classes)
        _check_count(where, "in_channels", in_channels)
        if isinstance(widths, str) or not isinstance(widths, Sequence) or len(widths) != 3:
            raise UsageError(f"{where}: widths must be 3 stage widths, got {widths!r}")
        for width in widths:
            _check_count(where, "each entry of widths", width)
        noise_coef = _check_noise_coef(where, noise_coef)
        _check_flag(where, "noise", noise)
        self.in_channels = in_channels
        self.members = nn.ModuleList(
            _noisy_member(depth, widths, in_channels, num_classes, noise_coef, noise)
            for _ in range(k)
        )

    @property
    def k(self) -> int:
        """The number of members."""
        return len(self.members)

    @property
    def noise(self) -> bool:
        """Whether any block adds noise; setting it switches every block (:func:`set_noise`)."""
        return any(block.noise for block in noisy_blocks(self))

    @noise.setter
    def noise(self, enabled: bool) -> None:
        set_noise(self, enabled)

    def forward(self, x: Tensor) -> Tensor:
        """Mean logits (N, num_classes) of the members on images (N, in_channels, H, W).

        Members run in order (member 0 first), each drawing its noise from the global
        generator.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise UsageError(
                f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        logits = torch.stack([member(x) for member in self.members])
        return logits.mean(dim=0)

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class"``: ``"EnResNet"``.

        Read from the live layers (widths, depth, ``noise_coef`` and the ``noise`` flag of the
        blocks). Raises ``ValueError`` when the constructor cannot describe the model: members
        pruned unevenly, or blocks whose ``noise_coef`` / ``noise`` differ.

        >>> en2resnet20(width=0.5).architecture()["widths"]
        [8, 16, 32]
        """
        where = type(self).__name__
        member = self.members[0]
        assert isinstance(member, PreActResNet)
        described = member.architecture()
        blocks = described["blocks_per_stage"]
        if len(blocks) != 3 or len(set(blocks)) != 1:
            raise ValueError(f"{where}: members must have 3 equal stages, got {blocks}")
        coefs = {block.noise_coef for block in noisy_blocks(self)}
        flags = {block.noise for block in noisy_blocks(self)}
        if len(coefs) != 1 or len(flags) != 1:
            raise ValueError(
                f"{where}: blocks disagree on noise_coef {sorted(coefs)} or noise "
                f"{sorted(flags)}; one value of each describes the model"
            )
        return checked_architecture(
            self,
            {
                "k": self.k,
                "depth": 6 * blocks[0] + 2,
                "noise_coef": coefs.pop(),
                "noise": flags.pop(),
                "num_classes": described["num_classes"],
                "in_channels": described["in_channels"],
                "widths": described["widths"],
            },
        )


def _en_resnet20(
    where: str,
    k: int,
    in_channels: int,
    num_classes: int,
    width: float,
    noise_coef: float,
    noise: bool,
) -> EnResNet:
    widths = [scale_width(where, base, width) for base in (16, 32, 64)]
    return EnResNet(
        k,
        20,
        noise_coef=noise_coef,
        noise=noise,
        num_classes=num_classes,
        in_channels=in_channels,
        widths=widths,
    )


def en2resnet20(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    width: float = 1.0,
    noise_coef: float = DEFAULT_NOISE_COEF,
    noise: bool = True,
) -> EnResNet:
    """Source 002's En_2ResNet20: two noisy PreAct ResNet20 members (544,564 parameters for
    10 classes, 002 §4.2.3's "~0.54M"; compare with ``preact_resnet38``, "~0.56M", Table 4.6).

    ``width`` multiplies the widths 16/32/64 (rounded half up, >= 1). Input
    (N, in_channels, 32, 32).
    """
    return _en_resnet20("en2resnet20", 2, in_channels, num_classes, width, noise_coef, noise)


def en5resnet20(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    width: float = 1.0,
    noise_coef: float = DEFAULT_NOISE_COEF,
    noise: bool = True,
) -> EnResNet:
    """Source 002's En_5ResNet20: five noisy PreAct ResNet20 members (1,361,410 parameters for
    10 classes). ``width`` as for :func:`en2resnet20`. Input (N, in_channels, 32, 32).
    """
    return _en_resnet20("en5resnet20", 5, in_channels, num_classes, width, noise_coef, noise)
