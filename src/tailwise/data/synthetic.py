"""The synthetic data sets of source 004 §4.2: XOR, XOR Detection (XORD) and the regression
task y = a sin(X W) + a X B + noise. Generated in memory, seeded, no downloads.

Class labels are int64 indices (1 = positive, 0 = negative) for ``fit``'s cross-entropy and
accuracy; ``signed=True`` gives 004's float labels +1 / -1 instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "regression_dataset",
    "regression_loaders",
    "regression_teacher",
    "xor_dataset",
    "xord_dataset",
    "xord_loaders",
]

Loaders = tuple[DataLoader[tuple[Tensor, ...]], DataLoader[tuple[Tensor, ...]]]


def _check_int(where: str, name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")


def _check_real(where: str, name: str, value: float, *, positive: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{where}: {name} must be a finite number {bound}, got {value!r}")


def _check_dtype(where: str, dtype: torch.dtype) -> None:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{where}: dtype must be a floating torch.dtype, got {dtype!r}")


def _labels(positive: Tensor, signed: bool, dtype: torch.dtype) -> Tensor:
    """Class indices (int64, 1 = positive) or 004's +1 / -1 in ``dtype``."""
    if signed:
        return torch.where(positive, 1.0, -1.0).to(dtype)
    return positive.to(torch.int64)


def xor_dataset(
    *, signed: bool = False, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """The four XOR points of 004 §4.2.1: X = (-1,-1), (-1,1), (1,-1), (1,1); Y = -1, 1, 1, -1.

    Returns ``X`` (4, 2) in ``dtype`` and ``y`` (4,): class indices (0, 1, 1, 0) or, with
    ``signed=True``, 004's labels (-1, 1, 1, -1) in ``dtype``. Deterministic (no seed needed).

    >>> X, y = xor_dataset()
    >>> X.tolist(), y.tolist()
    ([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], [0, 1, 1, 0])
    """
    _check_dtype("xor_dataset", dtype)
    inputs = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=dtype)
    return inputs, _labels(inputs[:, 0] != inputs[:, 1], signed, dtype)


def _pairs_from_bits(bits: Tensor, pairs: int) -> Tensor:
    """Inputs (n, 2 * pairs) with pair j equal to (s_j, s_j), s_j = +1 if bit j is set else -1."""
    shifts = torch.arange(pairs)
    signs = ((bits[:, None] >> shifts) & 1).to(torch.float64) * 2 - 1
    return signs.repeat_interleave(2, dim=1)


def xord_dataset(
    C: int = 5,
    n: int = 22,
    *,
    seed: int = 0,
    signed: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """XOR Detection (004 §4.2.1, after Brutzkus & Globerson 2019): ``n`` distinct samples.

    An input is ``C`` pairs of values in {-1, 1} (``2 C`` entries, pair j at columns 2j, 2j+1).
    Each pair is an XOR task on its own: it is *positive* when its two values disagree.
    A sample is positive when any pair is positive. As in 004, half of the samples are
    positive and half negative, and every positive sample has exactly one positive pair
    ("All positive samples have at most 1 positive input pair"); negative samples have none.

    Samples are drawn without replacement (all ``n`` rows differ) and alternate positive,
    negative, positive, ..., so every even-length prefix is balanced: 004's 12 training and
    10 test samples are ``X[:12]`` and ``X[12:]`` of the default ``n = 22`` (see
    :func:`xord_loaders`). There are 2^C negative and C 2^C positive strings, so ``n / 2``
    may be at most 2^C.

    Returns ``X`` (n, 2 C) in ``dtype`` and ``y`` (n,): class indices (1 = positive) or
    +1 / -1 in ``dtype`` with ``signed=True``. The same arguments give the same data.

    >>> X, y = xord_dataset(5, 22, seed=0)
    >>> tuple(X.shape), y[:4].tolist()
    ((22, 10), [1, 0, 1, 0])
    """
    where = "xord_dataset"
    _check_int(where, "C", C, 1)
    _check_int(where, "n", n, 2)
    _check_int(where, "seed", seed, 0)
    _check_dtype(where, dtype)
    if n % 2:
        raise ValueError(f"{where}: n must be even (half positive, half negative), got {n}")
    if n // 2 > 2**C:
        raise ValueError(f"{where}: n / 2 = {n // 2} exceeds the 2^C = {2**C} negative inputs")
    generator = torch.Generator().manual_seed(seed)
    half = n // 2
    negative_codes = torch.randperm(2**C, generator=generator)[:half]
    # A positive string is (which pair is positive, the first sign of every pair).
    positive_codes = torch.randperm(C * 2**C, generator=generator)[:half]
    negatives = _pairs_from_bits(negative_codes, C)
    positives = _pairs_from_bits(positive_codes % 2**C, C)
    flipped = 2 * (positive_codes // 2**C) + 1  # second entry of the positive pair
    positives[torch.arange(half), flipped] *= -1
    inputs = torch.stack([positives, negatives], dim=1).reshape(n, 2 * C)
    is_positive = torch.arange(n) % 2 == 0
    return inputs.to(dtype), _labels(is_positive, signed, dtype)


def xord_loaders(
    C: int = 5,
    n_train: int = 12,
    n_test: int = 10,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    signed: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Loaders:
    """Train and test loaders over disjoint, balanced XORD samples (004: 12 and 10, C = 5).

    Both parts come from one :func:`xord_dataset` of ``n_train + n_test`` samples (each must
    be even). ``batch_size`` defaults to the whole training set; the train loader reshuffles
    every epoch from a ``torch.Generator`` seeded with ``seed``, the test loader does not.
    Inputs of a batch are (B, 2 C); reshape to (B, 1, 2 C) for a ``Conv1d`` with kernel and
    stride 2 (004 Figure 4.5).

    >>> train, test = xord_loaders()
    >>> len(train.dataset), len(test.dataset)
    (12, 10)
    """
    where = "xord_loaders"
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        _check_int(where, name, value, 2)
        if value % 2:
            raise ValueError(f"{where}: {name} must be even (balanced classes), got {value}")
    if batch_size is not None:
        _check_int(where, "batch_size", batch_size, 1)
    inputs, labels = xord_dataset(C, n_train + n_test, seed=seed, signed=signed, dtype=dtype)
    train = TensorDataset(inputs[:n_train], labels[:n_train])
    test = TensorDataset(inputs[n_train:], labels[n_train:])
    generator = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size or n_train, shuffle=True, generator=generator),
        DataLoader(test, batch_size=batch_size or n_test, shuffle=False),
    )


def regression_teacher(
    d: int = 256, *, c: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Ground-truth vectors ``W, B`` (each (d,)) ~ Uniform(0, c) of 004 §4.2.3."""
    where = "regression_teacher"
    _check_int(where, "d", d, 1)
    _check_real(where, "c", c)
    _check_int(where, "seed", seed, 0)
    _check_dtype(where, dtype)
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(2, d, generator=generator, dtype=torch.float64) * c
    return weights[0].to(dtype), weights[1].to(dtype)


def regression_dataset(
    n: int = 2000,
    d: int = 256,
    *,
    a: float = 1.0,
    b: float = 2.0,
    c: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
    teacher: tuple[Tensor, Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """004's synthetic regression data (§4.2.3): y = a sin(X W) + a X B + eps.

    X ~ Uniform(0, b) of shape (n, d); W, B ~ Uniform(0, c) of shape (d,) (the teacher,
    :func:`regression_teacher` with the same ``c`` and ``seed``, unless ``teacher = (W, B)``
    is given); eps ~ N(0, noise^2) per sample. 004 writes N(0, sigma-hat) and uses
    sigma-hat = 1, where standard deviation and variance agree; ``noise`` is the standard
    deviation. Defaults are 004's: n = 2000, d = 256, a = 1, b = 2, c = 1, noise = 1, which
    give Var(y) of about 30 (004 reports 29.66 and 30.98 for its two draws).

    Returns ``X`` (n, d) and ``y`` (n, 1), both in ``dtype`` (computed in float64). The same
    arguments give the same data. 004 trains on 80% of the samples and tests on 20%
    (:func:`regression_loaders`).

    >>> X, y = regression_dataset(100, 8, seed=0)
    >>> tuple(X.shape), tuple(y.shape)
    ((100, 8), (100, 1))
    """
    where = "regression_dataset"
    _check_int(where, "n", n, 1)
    _check_int(where, "d", d, 1)
    _check_real(where, "b", b)
    _check_real(where, "noise", noise)
    _check_int(where, "seed", seed, 0)
    _check_dtype(where, dtype)
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
        raise ValueError(f"{where}: a must be a finite number, got {a!r}")
    if teacher is None:
        teacher = regression_teacher(d, c=c, seed=seed, dtype=torch.float64)
    weight, bias = (t.detach().to("cpu", torch.float64) for t in teacher)
    if weight.shape != (d,) or bias.shape != (d,):
        raise ValueError(
            f"{where}: teacher must be two vectors of shape ({d},), got "
            f"{tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    # Offset so that the data draws differ from the teacher's draws of the same seed.
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.rand(n, d, generator=generator, dtype=torch.float64) * b
    eps = torch.randn(n, generator=generator, dtype=torch.float64) * noise
    targets = a * torch.sin(inputs @ weight) + a * (inputs @ bias) + eps
    return inputs.to(dtype), targets[:, None].to(dtype)


def regression_loaders(
    n: int = 2000,
    d: int = 256,
    *,
    train_fraction: float = 0.8,
    batch_size: int = 32,
    a: float = 1.0,
    b: float = 2.0,
    c: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Loaders:
    """Train / test loaders over one :func:`regression_dataset` split 80 / 20 as in 004.

    The first ``round(train_fraction * n)`` samples train (reshuffled every epoch from a
    generator seeded with ``seed``), the rest test (not shuffled). Batches are
    ``[X (B, d), y (B, 1)]``: use ``loss_fn=nn.MSELoss()`` with ``fit``.

    >>> train, test = regression_loaders(100, 8)
    >>> len(train.dataset), len(test.dataset)
    (80, 20)
    """
    where = "regression_loaders"
    _check_int(where, "batch_size", batch_size, 1)
    ok = isinstance(train_fraction, (int, float)) and not isinstance(train_fraction, bool)
    if not (ok and 0 < train_fraction < 1):
        raise ValueError(f"{where}: train_fraction must be in (0, 1), got {train_fraction!r}")
    inputs, targets = regression_dataset(n, d, a=a, b=b, c=c, noise=noise, seed=seed, dtype=dtype)
    n_train = round(train_fraction * n)
    if not 0 < n_train < n:
        raise ValueError(f"{where}: train_fraction={train_fraction} leaves an empty part of {n}")
    train = TensorDataset(inputs[:n_train], targets[:n_train])
    test = TensorDataset(inputs[n_train:], targets[n_train:])
    generator = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
        DataLoader(test, batch_size=batch_size, shuffle=False),
    )
