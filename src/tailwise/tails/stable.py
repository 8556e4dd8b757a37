"""Alpha-stable samplers: iid symmetric, totally skewed, sub-Gaussian elliptic (source 003).

All samplers use the Chambers-Mallows-Stuck (CMS) representation (REFERENCES §4): with
V ~ U(-pi/2, pi/2) and W ~ Exp(1) independent,

* symmetric alpha-stable, SaS(alpha), scale 1, characteristic function exp(-|t|^alpha):

      X = sin(alpha V) / cos(V)^(1/alpha) * (cos((1 - alpha) V) / W)^((1 - alpha) / alpha)

  (alpha = 1 reduces to X = tan V, the standard Cauchy; alpha = 2 is N(0, 2));
* totally skewed (beta = 1) alpha-stable with alpha in (0, 1), scale 1 (S1 parametrization,
  scipy's ``levy_stable`` default), which is positive:

      X = sin(alpha (V + pi/2)) / (cos(pi alpha / 2) cos V)^(1/alpha)
          * (cos(V - alpha (V + pi/2)) / W)^((1 - alpha) / alpha).

Sub-Gaussian (elliptic) vectors are X = sqrt(A) G with G ~ N(0, I_d) and A totally skewed
(alpha/2)-stable of scale 2 cos(pi alpha / 4)^(2/alpha): then E exp(i <t, X>) =
exp(-||t||^alpha), so every marginal is standard SaS(alpha) but the coordinates share A
(they are dependent, uncorrelated). Source 003's appendix builds its synthetic layers W1,
W2, W3 from these (:func:`synthetic_layer`).

Backends: ``"numpy"`` (``numpy.random.Generator``) returns float64 arrays; ``"torch"``
(``torch.Generator``, on ``device``) returns float64 tensors. A given integer ``seed``
reproduces the draw within a backend; the two backends give different draws of the same law.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = [
    "Backend",
    "LayerStructure",
    "sample_elliptic",
    "sample_sas",
    "sample_skewed_stable",
    "synthetic_layer",
    "synthetic_layers",
]

Size: TypeAlias = int | Sequence[int]
Seed: TypeAlias = int | np.random.Generator | torch.Generator | None
Samples: TypeAlias = NDArray[np.float64] | torch.Tensor


class Backend(str, enum.Enum):
    """Where the random numbers come from."""

    NUMPY = "numpy"
    TORCH = "torch"


class LayerStructure(str, enum.Enum):
    """The dependence structure of a synthetic layer (source 003, appendix A.6.1)."""

    IID = "iid"  # W1: iid SaS entries
    ELLIPTIC_COLUMNS = "elliptic_columns"  # W2: iid elliptic columns (one A per column)
    ELLIPTIC_MATRIX = "elliptic_matrix"  # W3: one elliptic vector for the whole matrix


def _parse(enum_type: Any, value: Any, what: str, where: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(e.value) for e in enum_type)
        raise ValueError(f"{where}: {what} must be one of {allowed}; got {value!r}") from None


def _shape(size: Size, where: str) -> tuple[int, ...]:
    shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"{where}: size must be an int or a sequence of ints, got {size!r}")
    if any(s < 0 for s in shape):
        raise ValueError(f"{where}: size must not be negative, got {size!r}")
    return tuple(int(s) for s in shape)


def _check_alpha(
    alpha: float, low_open: float, high: float, high_closed: bool, where: str
) -> float:
    ok = (
        isinstance(alpha, (int, float, np.integer, np.floating))
        and not isinstance(alpha, bool)
        and math.isfinite(alpha)
    )
    if ok:
        ok = low_open < alpha <= high if high_closed else low_open < alpha < high
    if not ok:
        interval = f"({low_open:g}, {high:g}{']' if high_closed else ')'}"
        raise ValueError(f"{where}: alpha must be in {interval}, got {alpha!r}")
    return float(alpha)


class _Uniforms:
    """V ~ U(-pi/2, pi/2), W ~ Exp(1) and N(0, 1) draws from one backend's generator."""

    def __init__(self, backend: Backend, seed: Seed, device: torch.device | str | None, where: str):
        self.backend = backend
        if backend is Backend.NUMPY:
            if isinstance(seed, torch.Generator):
                raise TypeError(f"{where}: a torch.Generator needs backend='torch'")
            if device is not None:
                raise ValueError(f"{where}: device is only used by backend='torch'")
            self.rng = (
                seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            )
        else:
            if isinstance(seed, np.random.Generator):
                raise TypeError(f"{where}: a numpy Generator needs backend='numpy'")
            self.device = torch.device(device) if device is not None else torch.device("cpu")
            if isinstance(seed, torch.Generator):
                self.gen = seed
            else:
                self.gen = torch.Generator(device=self.device)
                if seed is None:
                    self.gen.seed()
                else:
                    self.gen.manual_seed(int(seed))

    def angle(self, shape: tuple[int, ...]) -> Any:
        if self.backend is Backend.NUMPY:
            return self.rng.uniform(-math.pi / 2, math.pi / 2, size=shape)
        u = torch.rand(shape, generator=self.gen, dtype=torch.float64, device=self.device)
        return (u - 0.5) * math.pi

    def exponential(self, shape: tuple[int, ...]) -> Any:
        if self.backend is Backend.NUMPY:
            return self.rng.standard_exponential(size=shape)
        w = torch.empty(shape, dtype=torch.float64, device=self.device)
        return w.exponential_(generator=self.gen)

    def normal(self, shape: tuple[int, ...]) -> Any:
        if self.backend is Backend.NUMPY:
            return self.rng.standard_normal(size=shape)
        return torch.randn(shape, generator=self.gen, dtype=torch.float64, device=self.device)


def _math(backend: Backend) -> Any:
    return np if backend is Backend.NUMPY else torch


def _sas(alpha: float, shape: tuple[int, ...], draws: _Uniforms) -> Samples:
    xp = _math(draws.backend)
    v = draws.angle(shape)
    if alpha == 1.0:
        # The CMS exponent (1 - alpha) / alpha vanishes: the Cauchy law, no W needed.
        out: Samples = xp.tan(v)
        return out
    w = draws.exponential(shape)
    out = (
        xp.sin(alpha * v)
        / xp.cos(v) ** (1.0 / alpha)
        * (xp.cos((1.0 - alpha) * v) / w) ** ((1.0 - alpha) / alpha)
    )
    return out


def _positive_stable(alpha: float, shape: tuple[int, ...], draws: _Uniforms) -> Samples:
    """Totally skewed alpha-stable, alpha in (0, 1), scale 1 (S1): CMS with beta = 1."""
    xp = _math(draws.backend)
    v = draws.angle(shape)
    w = draws.exponential(shape)
    shifted = alpha * (v + math.pi / 2)
    out: Samples = (
        xp.sin(shifted)
        / (math.cos(math.pi * alpha / 2) * xp.cos(v)) ** (1.0 / alpha)
        * (xp.cos(v - shifted) / w) ** ((1.0 - alpha) / alpha)
    )
    return out


def sample_sas(
    alpha: float,
    size: Size,
    *,
    seed: Seed = None,
    backend: str | Backend = "numpy",
    device: torch.device | str | None = None,
) -> Samples:
    """Symmetric alpha-stable samples SaS(alpha), scale 1 (CMS, REFERENCES §4).

    ``alpha`` in (0, 2] (1: standard Cauchy; 2: N(0, 2)); ``size``: an int or a shape.
    ``seed``: an int (reproducible), None (fresh entropy) or a generator of the backend's
    type. ``backend="numpy"`` returns a float64 ``ndarray`` of shape ``size``;
    ``backend="torch"`` a float64 tensor on ``device`` (default CPU) drawn with a
    ``torch.Generator``. Same law as ``scipy.stats.levy_stable(alpha, 0)`` (tested).

    >>> x = sample_sas(1.5, (2, 3), seed=0)
    >>> x.shape, x.dtype
    ((2, 3), dtype('float64'))
    """
    where = "sample_sas"
    alpha = _check_alpha(alpha, 0.0, 2.0, True, where)
    draws = _Uniforms(_parse(Backend, backend, "backend", where), seed, device, where)
    return _sas(alpha, _shape(size, where), draws)


def sample_skewed_stable(
    alpha: float,
    size: Size,
    *,
    scale: float = 1.0,
    seed: Seed = None,
    backend: str | Backend = "numpy",
    device: torch.device | str | None = None,
) -> Samples:
    """Totally skewed (beta = 1) alpha-stable samples, alpha in (0, 1): positive values.

    S1 parametrization with scale ``scale`` (the law of ``scipy.stats.levy_stable(alpha, 1,
    scale=scale)``, tested): characteristic function
    exp(-scale^alpha |t|^alpha (1 - i sign(t) tan(pi alpha / 2))); with
    ``scale = cos(pi alpha / 2)^(1/alpha)`` the Laplace transform is exp(-s^alpha). The
    mixing variable of :func:`sample_elliptic`. Other arguments as :func:`sample_sas`.

    >>> bool((sample_skewed_stable(0.6, 1000, seed=0) > 0).all())
    True
    """
    where = "sample_skewed_stable"
    alpha = _check_alpha(alpha, 0.0, 1.0, False, where)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{where}: scale must be a positive finite number, got {scale!r}")
    draws = _Uniforms(_parse(Backend, backend, "backend", where), seed, device, where)
    return float(scale) * _positive_stable(alpha, _shape(size, where), draws)


def _elliptic_mixing(alpha: float, shape: tuple[int, ...], draws: _Uniforms) -> Samples:
    """Mixing variable A of sqrt(A) G ~ SaS(alpha) (totally skewed alpha/2-stable)."""
    if alpha == 2.0:
        # The mixing law degenerates to the constant 2: X = sqrt(2) G, i.e. SaS(2) = N(0, 2).
        if draws.backend is Backend.NUMPY:
            return np.full(shape, 2.0)
        return torch.full(shape, 2.0, dtype=torch.float64, device=draws.device)
    half = alpha / 2
    scale = 2.0 * math.cos(math.pi * half / 2) ** (1.0 / half)
    return scale * _positive_stable(half, shape, draws)


def sample_elliptic(
    alpha: float,
    n: int,
    d: int,
    *,
    seed: Seed = None,
    backend: str | Backend = "numpy",
    device: torch.device | str | None = None,
) -> Samples:
    """n sub-Gaussian (elliptic) alpha-stable vectors of dimension d: shape (n, d).

    Row i is sqrt(A_i) G_i, G_i ~ N(0, I_d), A_i iid totally skewed (alpha/2)-stable with
    scale 2 cos(pi alpha / 4)^(2/alpha) (REFERENCES §4), so E exp(i <t, X_i>) =
    exp(-||t||^alpha): every coordinate is standard SaS(alpha); coordinates of one row share
    A_i. ``alpha`` in (0, 2]; other arguments as :func:`sample_sas`.

    >>> sample_elliptic(1.5, 4, 3, seed=0).shape
    (4, 3)
    """
    where = "sample_elliptic"
    alpha = _check_alpha(alpha, 0.0, 2.0, True, where)
    (rows, dims) = _shape((n, d), where)
    draws = _Uniforms(_parse(Backend, backend, "backend", where), seed, device, where)
    mixing = _elliptic_mixing(alpha, (rows, 1), draws)
    gaussian = draws.normal((rows, dims))
    xp = _math(draws.backend)
    out: Samples = xp.sqrt(mixing) * gaussian
    return out


def synthetic_layer(
    kind: str | LayerStructure,
    alpha: float,
    shape: tuple[int, int],
    *,
    seed: Seed = None,
    backend: str | Backend = "numpy",
    device: torch.device | str | None = None,
) -> Samples:
    """A synthetic (rows, cols) weight matrix with SaS(alpha) entries (003 appendix A.6.1).

    Every entry is marginally standard SaS(alpha); ``kind`` sets the dependence:

    * ``"iid"`` -- W1: independent entries (what the heavy-tailed mean-field limit predicts);
    * ``"elliptic_columns"`` -- W2: independent columns, each one elliptic vector of
      dimension ``rows`` (entries of a column share a mixing variable);
    * ``"elliptic_matrix"`` -- W3: the whole matrix is one elliptic vector of dimension
      rows * cols, i.e. sqrt(A) times a Gaussian matrix (all entries dependent).

    003 finds that heavier tails make W1 more compressible (a smaller keep ratio for a given
    relative error) and that the advantage disappears as the entries become dependent: W3 is
    exactly as compressible as a Gaussian matrix, whatever alpha.

    >>> synthetic_layer("elliptic_columns", 1.5, (3, 2), seed=0).shape
    (3, 2)
    """
    where = "synthetic_layer"
    structure = _parse(LayerStructure, kind, "kind", where)
    alpha = _check_alpha(alpha, 0.0, 2.0, True, where)
    dims = _shape(shape, where)
    if len(dims) != 2:
        raise ValueError(f"{where}: shape must be (rows, cols), got {shape!r}")
    rows, cols = dims
    draws = _Uniforms(_parse(Backend, backend, "backend", where), seed, device, where)
    if structure is LayerStructure.IID:
        return _sas(alpha, (rows, cols), draws)
    xp = _math(draws.backend)
    mixing_shape = (1, cols) if structure is LayerStructure.ELLIPTIC_COLUMNS else (1, 1)
    mixing = _elliptic_mixing(alpha, mixing_shape, draws)
    out: Samples = xp.sqrt(mixing) * draws.normal((rows, cols))
    return out


def synthetic_layers(
    alpha: float,
    shape: tuple[int, int],
    kind: str | LayerStructure = "iid",
    *,
    seed: Seed = None,
    backend: str | Backend = "numpy",
    device: torch.device | str | None = None,
) -> Samples:
    """:func:`synthetic_layer` with issue 12's argument order: ``(alpha, shape, kind)``.

    The same matrix as ``synthetic_layer(kind, alpha, shape, ...)`` for the same arguments
    (003 appendix A.6.1: ``"iid"`` W1, ``"elliptic_columns"`` W2, ``"elliptic_matrix"`` W3).

    >>> w = synthetic_layers(1.5, (4, 3), "elliptic_matrix", seed=0)
    >>> w.shape, bool((w == synthetic_layer("elliptic_matrix", 1.5, (4, 3), seed=0)).all())
    ((4, 3), True)
    """
    return synthetic_layer(kind, alpha, shape, seed=seed, backend=backend, device=device)
