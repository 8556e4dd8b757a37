"""One rule for seeds: an int or a ``torch.Generator``, and per-item seeds derived by name."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import torch

__all__ = ["Seed", "derive_seed", "generator"]

Seed = int | torch.Generator


def derive_seed(seed: int, name: str) -> int:
    """A seed for the item called ``name``, independent of the order items are processed in.

    >>> derive_seed(0, "layers.0.weight") == derive_seed(0, "layers.0.weight")
    True
    >>> derive_seed(0, "a") != derive_seed(1, "a")
    True
    """
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def generator(seed: Seed, device: str | torch.device | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``; a generator is returned as is.

    >>> g = generator(3)
    >>> torch.randn(2, generator=g).shape
    torch.Size([2])
    """
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the block on torch RNG streams seeded with ``seed`` (the CPU's, and ``device``'s
    when it is a CUDA device); restore the global streams after. ``None``: leave them alone."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
