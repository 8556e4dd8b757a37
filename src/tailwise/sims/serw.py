"""Senile reinforced random walks (SeRW) and their perturbations (source 002 ch. 2).

The walk (source 002 §2.1; REFERENCES §8). A nearest-neighbour walk on Z^d starts at the
origin and takes its first step to one of the 2d neighbours uniformly. After step n it has
crossed the edge e_n = {S_(n-1), S_n} m_n times in a row (m_n >= 1). With reinforcement
f(m) = m it re-traverses that edge (steps back) with probability

    b(m) = (1 + m) / (2d + m)                                     (source 002 §2.1)

and otherwise steps to one of the other 2d - 1 neighbours uniformly. A *bout* is a maximal run
of consecutive traversals of one edge; its length T (the source's tau for the first edge) has

    P(T > m) = q(1) q(2) ... q(m),   q(k) = the re-traversal probability after k traversals,

so P(T > m) = 2 / (m + 2) for the unperturbed 1-D walk: T has infinite mean there.

Perturbations (source 002 §2.2), each lowering the re-traversal probability:

* model ``"I"``: q(k) = clip(b(k) - delta, 0, 1), delta >= 0 deterministic;
* model ``"II"``: before every step n + 1 a fresh xi_n >= 0 is drawn, iid over steps and
  walkers, and the re-traversal probability is max(b(m_n) - delta xi_n, 0). xi_n is
  independent of the past, so the walk has the law of the walk with
  q(k) = E[max(b(k) - delta xi, 0)] = b(k) - delta E[min(xi, b(k) / delta)];
* model ``"III"``: the same with laws that change along a bout: the xi drawn after k
  consecutive traversals is k**growth times a draw of the base law (:class:`XiLaw` with
  ``growth > 0``). The source indexes xi_n by time n and proves Theorem 2.5 with
  P(tau > n) = prod_i E[...xi_i...], i the traversal count of the first bout (where the two
  indices coincide); indexing by the traversal count keeps the bouts iid, so eq. (2.2) holds
  exactly. The source's example (same mean, variance n^2) would *lower* the escape
  probability: min(xi, c) is concave, so a mean-preserving spread lowers E[min(xi, c)]; a
  growing scale raises it, which is what "further enhance diffusivity" asks for.

Where the source writes "+ delta" for each of the 2d - 1 other neighbours in d >= 2 (which
does not sum to one), the escape probability 1 - q(k) is shared uniformly among them here.

Theory (:func:`diffusion_constant`): after a bout of length T the walker stands on the far
end of the edge (T odd) or back at its start (T even) and leaves along one of the other 2d - 1
directions. With p = P(T odd) the walk seen at bout ends is a correlated walk whose steps have
E|X|^2 = p and E[X_i . X_j] = p^2 c^(j-i-1) / (2d - 1), c = (2p - 1) / (2d - 1), so

    v = lim E|S_n|^2 / n = d p / ((d - p) E[T])      (source 002 eq. (2.2) for d = 1)

(REFERENCES §8). Unperturbed 1-D: E S_n^2 ln n / n -> (1 - ln 2) / (2 ln 2 - 1) ~ 0.794
(source 002 Proposition 2.2.1). :func:`exact_msd` gives E|S_n|^2 at every finite n from the
renewal equation over the first bout (no simulation).

Simulation (:func:`simulate_serw`): whole bouts, not single steps. Bout lengths come from
P(T > m) by inverse transform (a closed form for the unperturbed 1-D walk, else a table
with a guide index); a bout moves the walker by 0 or one unit along its direction, and the
next direction is the previous one plus d [T odd] + r (mod 2d) with r uniform in
{1, ..., 2d - 1} (directions 0..2d-1, direction k + d opposite to k): every walker's path
over a block of bouts is a few cumulative sums. Positions at requested times inside a bout
follow from the parity of the steps taken in it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from scipy import signal, special

from tailwise._errors import UsageError
from tailwise._progress import progress_bar, progress_task
from tailwise.sims._result import SimulationResult

__all__ = [
    "SERW_1D_LIMIT",
    "InverseLogFit",
    "SeRWResult",
    "XiLaw",
    "bout_survival",
    "diffusion_constant",
    "exact_msd",
    "serw_diffusion_experiment",
    "serw_experiment",
    "simulate_serw",
]

Model = Literal["none", "I", "II", "III"]
XiFamily = Literal["exponential", "pareto", "log_pareto"]
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

#: lim E S_n^2 ln n / n of the unperturbed 1-D walk, (1 - ln 2) / (2 ln 2 - 1) (002 Prop. 2.2.1).
SERW_1D_LIMIT = (1.0 - math.log(2.0)) / (2.0 * math.log(2.0) - 1.0)

_MODELS = ("none", "I", "II", "III")
# A survival table stops once P(T > m) drops below this: the only uniform double in [0, 1)
# below it is 0 (numpy's doubles are spaced 2^-53), so longer bouts have probability 2^-53.
_NEGLIGIBLE = 2.0**-60
_GUIDE_BINS = 1 << 16
_BLOCK_ELEMENTS = 1 << 17  # bouts per block (walkers x bouts): a few arrays stay in L2 cache
_MAX_BLOCK = 4096


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _positive_float(value: Any, what: str, where: str) -> float:
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise UsageError(f"{where}: {what} must be a finite number > 0, got {value!r}")
    return float(value)


def _count(value: Any, what: str, where: str, minimum: int = 1) -> int:
    if not (_is_int(value) and value >= minimum):
        raise UsageError(f"{where}: {what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- xi laws


@dataclass(frozen=True)
class XiLaw:
    """The law of the perturbations xi >= 0 of models II and III (source 002 §2.2.2).

    Build one with :meth:`exponential`, :meth:`pareto` or :meth:`log_pareto`. The base law
    (traversal count 1) has survival function P(xi > x):

    * ``"exponential"``: exp(-x / scale), mean ``scale``;
    * ``"pareto"`` (Pareto type II, Lomax): (1 + x / scale)^(-shape), mean
      scale / (shape - 1) for shape > 1 and **infinite for shape <= 1** (source 002 §2.4.4,
      f(x) = O(x^-(1 + j)));
    * ``"log_pareto"``: 1 / (1 + ln(1 + x / scale)), infinite mean, heavier than any power
      (density ~ 1 / (x ln^2 x)): the construction of source 002 §2.4.4 case 3 behind
      Theorem 2.4 (ii), v(delta) = O(1 / ln|ln delta|).

    ``growth`` (model III): the xi drawn after k consecutive traversals of an edge is
    k**growth times a draw of the base law (0 for model II: iid).

    What the theory needs is :meth:`truncated_mean`, E[min(xi_k, c)] in closed form, since
    the re-traversal probability of model II/III is b - delta E[min(xi_k, b / delta)].

    >>> law = XiLaw.exponential(2.0)
    >>> float(law.truncated_mean(np.array([1e9]))[0]), law.mean
    (2.0, 2.0)
    >>> XiLaw.pareto(0.5).mean
    inf
    """

    family: XiFamily
    scale: float = 1.0
    shape: float = 1.0
    growth: float = 0.0

    def __post_init__(self) -> None:
        where = "XiLaw"
        if self.family not in ("exponential", "pareto", "log_pareto"):
            raise UsageError(
                f"{where}: family must be 'exponential', 'pareto' or 'log_pareto', "
                f"got {self.family!r}"
            )
        _positive_float(self.scale, "scale", where)
        _positive_float(self.shape, "shape", where)
        if not (_is_number(self.growth) and math.isfinite(self.growth) and self.growth >= 0):
            raise UsageError(f"{where}: growth must be a finite number >= 0, got {self.growth!r}")

    @classmethod
    def exponential(cls, mean: float = 1.0, *, growth: float = 0.0) -> XiLaw:
        """Exponential xi with the given mean (>0).

        >>> XiLaw.exponential(0.5).scale
        0.5
        """
        return cls(
            "exponential", scale=_positive_float(mean, "mean", "XiLaw.exponential"), growth=growth
        )

    @classmethod
    def pareto(cls, shape: float, scale: float = 1.0, *, growth: float = 0.0) -> XiLaw:
        """Pareto type II (Lomax) xi: P(xi > x) = (1 + x / scale)^-shape; infinite mean for
        shape <= 1.

        >>> XiLaw.pareto(3.0, 2.0).mean
        1.0
        """
        where = "XiLaw.pareto"
        return cls(
            "pareto",
            scale=_positive_float(scale, "scale", where),
            shape=_positive_float(shape, "shape", where),
            growth=growth,
        )

    @classmethod
    def log_pareto(cls, scale: float = 1.0, *, growth: float = 0.0) -> XiLaw:
        """Log-Pareto xi: P(xi > x) = 1 / (1 + ln(1 + x / scale)), infinite mean.

        >>> XiLaw.log_pareto().mean
        inf
        """
        return cls(
            "log_pareto", scale=_positive_float(scale, "scale", "XiLaw.log_pareto"), growth=growth
        )

    @classmethod
    def parse(cls, spec: str | XiLaw) -> XiLaw:
        """A law from text, ``family[:key=value,...]`` (what the command line passes):
        ``"exponential:mean=2"``, ``"pareto:shape=0.5,scale=1"``, ``"log_pareto"``, with an
        optional ``growth=`` for model III. A :class:`XiLaw` is returned as is.

        >>> XiLaw.parse("pareto:shape=0.5,growth=1")
        XiLaw(family='pareto', scale=1.0, shape=0.5, growth=1.0)
        """
        if isinstance(spec, XiLaw):
            return spec
        if not isinstance(spec, str):
            raise UsageError(
                f"XiLaw.parse: expected a string such as 'exponential:mean=1', got {spec!r}"
            )
        family, _, rest = spec.partition(":")
        allowed = {"exponential": ("mean",), "pareto": ("shape", "scale"), "log_pareto": ("scale",)}
        if family not in allowed:
            raise UsageError(
                f"XiLaw.parse: unknown family {family!r} in {spec!r}; use "
                f"'exponential', 'pareto' or 'log_pareto'"
            )
        values: dict[str, float] = {}
        for item in filter(None, rest.split(",")):
            key, eq, text = item.partition("=")
            key = key.strip()
            if not eq or key not in (*allowed[family], "growth") or key in values:
                raise UsageError(
                    f"XiLaw.parse: bad parameter {item!r} in {spec!r}; "
                    f"{family} takes {', '.join((*allowed[family], 'growth'))}"
                )
            try:
                values[key] = float(text)
            except ValueError:
                raise UsageError(
                    f"XiLaw.parse: {key} must be a number, got {text!r} in {spec!r}"
                ) from None
        growth = values.pop("growth", 0.0)
        if family == "exponential":
            return cls.exponential(values.get("mean", 1.0), growth=growth)
        if family == "pareto":
            if "shape" not in values:
                raise UsageError(f"XiLaw.parse: pareto needs shape=..., got {spec!r}")
            return cls.pareto(values["shape"], values.get("scale", 1.0), growth=growth)
        return cls.log_pareto(values.get("scale", 1.0), growth=growth)

    @property
    def mean(self) -> float:
        """E[xi] of the base law (traversal count 1); ``inf`` when it is infinite."""
        if self.family == "exponential":
            return self.scale
        if self.family == "pareto" and self.shape > 1.0:
            return self.scale / (self.shape - 1.0)
        return math.inf

    def _factor(self, count: ArrayLike) -> Floats:
        counts = np.asarray(count, dtype=np.float64)
        if np.any(counts < 1):
            raise UsageError(f"XiLaw: traversal counts must be >= 1, got min {counts.min()!r}")
        if self.growth == 0.0:
            return np.ones_like(counts)
        return counts**self.growth

    def sample(
        self, rng: np.random.Generator, size: int | tuple[int, ...], *, count: ArrayLike = 1
    ) -> Floats:
        """``size`` independent draws of xi after ``count`` consecutive traversals (an int or
        an array broadcast to ``size``); float64, possibly ``inf`` for log-Pareto draws
        beyond e^700 (they all push the re-traversal probability to 0).

        >>> x = XiLaw.exponential(3.0).sample(np.random.default_rng(0), 200_000)
        >>> bool(abs(x.mean() - 3.0) < 0.05)
        True
        """
        u = 1.0 - rng.random(size)  # in (0, 1]
        if self.family == "exponential":
            base = -self.scale * np.log(u)
        elif self.family == "pareto":
            base = self.scale * np.expm1(-np.log(u) / self.shape)
        else:  # P(Y > y) = 1 / (1 + y) for Y = 1 / u - 1; xi = scale (e^Y - 1)
            with np.errstate(over="ignore"):
                base = self.scale * np.expm1(np.minimum(1.0 / u - 1.0, 710.0))
        return base * self._factor(count)

    def truncated_mean(self, c: ArrayLike, *, count: ArrayLike = 1) -> Floats:
        """E[min(xi_k, c)] = integral_0^c P(xi_k > x) dx for c >= 0 (elementwise), k = count.

        With xi_k = k^g xi: E[min(xi_k, c)] = k^g E[min(xi, c / k^g)], and for the base law

        * exponential: scale (1 - e^(-c / scale));
        * Pareto II: scale (1 - (1 + c / scale)^(1 - shape)) / (shape - 1)
          (scale ln(1 + c / scale) at shape 1);
        * log-Pareto: scale e^-1 (Ei(1 + L) - Ei(1)), L = ln(1 + c / scale)
          (substitute x = scale (e^u - 1)).

        >>> law = XiLaw.pareto(1.0)
        >>> float(law.truncated_mean(np.array([math.e - 1]))[0])
        1.0
        """
        factor = self._factor(count)
        x = np.asarray(c, dtype=np.float64) / factor
        s = self.scale
        if self.family == "exponential":
            base = -s * np.expm1(-x / s)
        elif self.family == "pareto":
            log1p = np.log1p(x / s)
            if self.shape == 1.0:
                base = s * log1p
            else:
                base = s * -np.expm1((1.0 - self.shape) * log1p) / (self.shape - 1.0)
        else:
            base = s * math.exp(-1.0) * (special.expi(1.0 + np.log1p(x / s)) - special.expi(1.0))
        return base * factor


# --------------------------------------------------------------------------- the bout law


@dataclass(frozen=True)
class _Walk:
    """A validated (model, delta, d, xi): the one place options are parsed."""

    model: Model
    delta: float
    d: int
    xi: XiLaw | None

    @classmethod
    def parse(cls, model: Any, delta: Any, d: Any, xi: Any, where: str) -> _Walk:
        if model not in _MODELS:
            raise UsageError(
                f"{where}: model must be one of 'none', 'I', 'II', 'III', got {model!r}"
            )
        if not (_is_number(delta) and math.isfinite(delta) and delta >= 0):
            raise UsageError(f"{where}: delta must be a finite number >= 0, got {delta!r}")
        d = _count(d, "d", where)
        if xi is not None and not isinstance(xi, XiLaw):
            raise UsageError(f"{where}: xi must be a XiLaw (or None), got {type(xi).__name__}")
        if model == "none":
            if delta != 0:
                raise UsageError(
                    f"{where}: delta applies to models I-III; model 'none' has "
                    f"delta 0, got {delta!r}"
                )
            if xi is not None:
                raise UsageError(f"{where}: xi applies to models II and III, not {model!r}")
        elif model == "I":
            if xi is not None:
                raise UsageError(f"{where}: xi applies to models II and III, not 'I'")
        elif model == "II":
            xi = XiLaw.exponential() if xi is None else xi
            if xi.growth != 0:
                raise UsageError(
                    f"{where}: model II takes iid xi (growth 0), got growth "
                    f"{xi.growth!r}; use model 'III'"
                )
        else:
            xi = XiLaw.exponential(growth=1.0) if xi is None else xi
            if xi.growth <= 0:
                raise UsageError(
                    f"{where}: model III needs xi laws that change along a bout "
                    f"(growth > 0), got growth {xi.growth!r}; use model 'II'"
                )
        return cls(cast(Model, model), float(delta), d, xi)

    @property
    def unperturbed(self) -> bool:
        return self.model == "none" or self.delta == 0.0

    def retraversal(self, counts: Floats) -> Floats:
        """q(k): the probability of re-traversing an edge crossed k >= 1 times in a row."""
        base = (1.0 + counts) / (2.0 * self.d + counts)
        if self.unperturbed:
            return base
        if self.model == "I":
            return np.clip(base - self.delta, 0.0, 1.0)
        assert self.xi is not None
        q = base - self.delta * self.xi.truncated_mean(base / self.delta, count=counts)
        return np.clip(q, 0.0, 1.0)

    def escape_bound(self, count: int = 1) -> float:
        """eta > 0 with 1 - q(k) >= eta for every k >= count (perturbed walks): the tail of
        sum_m P(T > m) beyond M >= count is at most P(T > M) (1 - eta) / eta."""
        if self.model == "I":
            return min(self.delta, 1.0)  # 1 - q(k) = 1 - b(k) + delta > delta
        assert self.xi is not None
        # E[min(k^g xi, b(k) / delta)] grows with k (k^g and b(k) grow), so its value at
        # k = count bounds every later escape probability from below.
        b = (1.0 + count) / (2.0 * self.d + count)
        mean = self.xi.truncated_mean(np.array([b / self.delta]), count=np.array([count]))
        return float(min(self.delta * mean[0], 1.0))


def _survival_chunks(walk: _Walk, first: int = 4096, largest: int = 1 << 20) -> Iterator[Floats]:
    """P(T > m) for m = 0, 1, 2, ... in consecutive chunks (growing sizes)."""
    log_s = 0.0  # log P(T > m) at the end of the previous chunk
    start, size = 1, first
    yield np.ones(1)
    while True:
        counts = np.arange(start, start + size, dtype=np.float64)
        with np.errstate(divide="ignore"):
            logs = np.cumsum(np.log(walk.retraversal(counts))) + log_s
        chunk = np.exp(logs)
        yield chunk
        log_s = float(logs[-1])
        start += size
        size = min(2 * size, largest)


def _survival_table(walk: _Walk, m_max: int, stop_below: float = 0.0) -> Floats:
    """P(T > m) for m = 0..m_max, or fewer entries: up to the first one below ``stop_below``."""
    parts: list[Floats] = []
    length = 0
    for chunk in _survival_chunks(walk):
        take = chunk[: m_max + 1 - length]
        below = np.flatnonzero(take < stop_below)
        if below.size:
            parts.append(take[: below[0] + 1])
            break
        parts.append(take)
        length += take.size
        if length > m_max:
            break
    return np.concatenate(parts)


def bout_survival(
    m_max: int, *, model: Model = "none", delta: float = 0.0, d: int = 1, xi: XiLaw | None = None
) -> Floats:
    """P(T > m) for m = 0, ..., m_max, T the length of a bout (float64, shape (m_max + 1,)).

    P(T > m) = q(1) ... q(m) with q the re-traversal probability of the model (module
    docstring; source 002 §2.4.1 and §2.4.3). Unperturbed 1-D: 2 / (m + 2).

    >>> bout_survival(3).round(12).tolist()  # 2 / (m + 2)
    [1.0, 0.666666666667, 0.5, 0.4]
    >>> bout_survival(2, model="I", delta=0.1).round(4).tolist()
    [1.0, 0.5667, 0.3683]
    """
    walk = _Walk.parse(model, delta, d, xi, "bout_survival")
    m_max = _count(m_max, "m_max", "bout_survival", minimum=0)
    return _survival_table(walk, m_max)


def diffusion_constant(
    model: Model,
    delta: float,
    *,
    d: int = 1,
    xi: XiLaw | None = None,
    rtol: float = 1e-10,
    max_terms: int = 10**9,
) -> float:
    """The diffusion constant v = lim E|S_n|^2 / n of the (perturbed) SeRW on Z^d.

    v = d p / ((d - p) E[T]) with p = P(T odd) (source 002 eq. (2.2) for d = 1, REFERENCES
    §8; derivation in the module docstring), from P(T > m) exactly:
    E[T] = sum_m P(T > m) and p = sum_m (-1)^m P(T > m), summed in float64 until the tails
    are provably below ``rtol`` times the partial sums (the tail of E[T] beyond M is at most
    P(T > M) (1 - eta) / eta with eta a lower bound of every escape probability; the
    alternating tail of p at most P(T > M)), so the relative error of v is below about
    3 rtol plus rounding. Unperturbed: v = 0 in 1-D (E[T] = infinity: the walk is
    sub-diffusive, E S_n^2 ~ 0.794 n / ln n), and E[T] = d / (d - 1) in d >= 2.
    The series needs about ln(1 / rtol) / eta terms (model I: eta = delta); more than
    ``max_terms`` is a :class:`UsageError`.

    >>> round(diffusion_constant("I", 0.1), 6)
    0.595917
    >>> diffusion_constant("none", 0.0)
    0.0
    """
    where = "diffusion_constant"
    walk = _Walk.parse(model, delta, d, xi, where)
    rtol = _positive_float(rtol, "rtol", where)
    max_terms = _count(max_terms, "max_terms", where)
    if walk.unperturbed and walk.d == 1:
        return 0.0
    eta = math.inf if walk.unperturbed else walk.escape_bound()
    if eta <= 0:
        raise UsageError(
            f"{where}: the perturbation never lets the walker escape (delta "
            f"{delta!r} and xi give zero escape probability)"
        )
    if not walk.unperturbed and walk.model != "III":  # III: eta(1) is far too pessimistic
        needed = math.log(1.0 / (rtol * eta)) / eta
        if needed > max_terms:
            raise UsageError(
                f"{where}: delta={delta!r} needs about {needed:.3g} series terms, more than "
                f"max_terms={max_terms}; raise max_terms or use a larger delta"
            )
    total, odd, m = 0.0, 0.0, 0
    for chunk in _survival_chunks(walk):
        signs = np.where((np.arange(m, m + chunk.size) & 1) == 0, 1.0, -1.0)
        total += float(chunk.sum())
        odd += float(np.dot(signs, chunk))
        m += chunk.size
        last = float(chunk[-1])
        p_done = last <= rtol * odd
        if walk.unperturbed:
            if p_done:
                break
        elif p_done:
            eta = walk.escape_bound(m)  # valid for every k >= m (the terms still to come)
            if last * (1.0 - eta) / eta <= rtol * total:
                break
        if m > max_terms:
            raise UsageError(
                f"{where}: the series did not converge within max_terms="
                f"{max_terms} terms; raise max_terms or use a larger delta"
            )
    mean_t = walk.d / (walk.d - 1.0) if walk.unperturbed else total
    return walk.d * odd / ((walk.d - odd) * mean_t)


def _convolve(a: Floats, b: Floats, n: int) -> Floats:
    """The first n coefficients of the product of two power series (FFT)."""
    out = signal.fftconvolve(a[:n], b[:n])[:n]
    return np.pad(out, (0, n - out.size))


def _series_inverse(a: Floats, n: int) -> Floats:
    """The first n coefficients of 1 / a(z) (a[0] != 0), by Newton's iteration
    b <- b (2 - a b), doubling the number of correct coefficients each time."""
    b = np.array([1.0 / a[0]])
    k = 1
    while k < n:
        k = min(2 * k, n)
        correction = -_convolve(a, np.pad(b, (0, k - b.size)), k)
        correction[0] += 2.0
        b = _convolve(np.pad(b, (0, k - b.size)), correction, k)
    return b


def exact_msd(
    n_max: int,
    *,
    d: int = 1,
    model: Model = "none",
    delta: float = 0.0,
    xi: XiLaw | None = None,
) -> Floats:
    """E|S_n|^2 for n = 0, ..., n_max exactly (float64 rounding only): no simulation.

    Condition on the first bout T of a walk whose first step is e: if T >= n, S_n = e [n odd];
    else S_n = e [T odd] + S'_(n-T), S' a walk started afresh whose first step e' has
    E[e' | T] = +-e / (2d - 1) (+ for T odd: only the way back is excluded; - for T even).
    By the lattice's symmetry E[S'_k | e'] = f(k) e', so with f(n) = E[S_n . e],
    g(n) = E|S_n|^2, P_t = P(T = t), s_t = +1 (t odd), -1 (t even) and
    a(n) = [n odd] P(T >= n) + sum_(t < n) P_t [t odd]:

        f(n) = a(n) + sum_(t < n) P_t s_t f(n - t) / (2d - 1)
        g(n) = a(n) + sum_(t < n) P_t ([t odd] 2 f(n - t) / (2d - 1) + g(n - t)),

    two renewal equations solved as power series, F = A / (1 - P_s / (2d - 1)) and
    G = (A + 2 P_odd F / (2d - 1)) / (1 - P), by Newton inversion with FFT products:
    O(n_max log n_max) (about 2 s for n_max = 10^6).

    >>> g = exact_msd(1000)
    >>> g[:3].round(12).tolist()  # S_1 = +-1; S_2 = 0 or +-2 (P(T > 1) = 2/3: back to 0)
    [0.0, 1.0, 1.333333333333]
    >>> round(float(g[1000] * np.log(1000) / 1000), 4)  # -> 0.794 like 1 / ln n
    0.9705
    """
    where = "exact_msd"
    walk = _Walk.parse(model, delta, d, xi, where)
    n_max = _count(n_max, "n_max", where)
    size = n_max + 1
    survival = _survival_table(walk, n_max)  # P(T > m), m = 0..n_max
    p_t = np.zeros(size)
    p_t[1:] = survival[:-1] - survival[1:]
    odd = (np.arange(size) & 1).astype(np.float64)
    a = np.zeros(size)
    a[1:] = odd[1:] * survival[:-1] + np.cumsum(p_t * odd)[:-1]
    spread = 1.0 / (2.0 * walk.d - 1.0)
    keep = -p_t * (2.0 * odd - 1.0) * spread
    keep[0] += 1.0
    f = _convolve(a, _series_inverse(keep, size), size)
    renew = -p_t
    renew[0] += 1.0
    g = _convolve(
        a + 2.0 * spread * _convolve(p_t * odd, f, size), _series_inverse(renew, size), size
    )
    g[0] = 0.0
    return g


# --------------------------------------------------------------------------- simulation


class _BoutSampler:
    """Draws bout lengths T by inverse transform: T = #{m : P(T > m) > U}, U ~ U[0, 1).

    Lengths beyond ``n_steps`` are returned as ``n_steps + 1`` (the walk never needs more).
    The unperturbed 1-D walk has T = ceil(2 / U - 2) (P(T > m) = 2 / (m + 2)); every other
    walk uses the table of P(T > m) with a guide index: for U in [i/K, (i+1)/K) the answer
    is read off when no table value falls inside the bin, else found by binary search.
    """

    def __init__(self, walk: _Walk, n_steps: int) -> None:
        self.cap = n_steps + 1
        self.closed = walk.unperturbed and walk.d == 1
        if self.closed:
            self.table = np.ones(1)
            self.guide = np.zeros(1, dtype=np.int64)
            return
        self.table = _survival_table(walk, n_steps, stop_below=_NEGLIGIBLE)
        self.descending = -self.table  # ascending, for searchsorted
        edges = np.arange(_GUIDE_BINS + 1, dtype=np.float64) / _GUIDE_BINS
        at_left = np.searchsorted(self.descending, -edges[:-1], side="left")  # #{S > i/K}
        at_right = np.searchsorted(self.descending, -edges[1:], side="right")  # #{S >= (i+1)/K}
        self.guide = np.where(at_left == at_right, at_left, -1).astype(np.int64)

    def draw(self, rng: np.random.Generator, shape: tuple[int, int]) -> Ints:
        u = rng.random(shape)
        if self.closed:
            with np.errstate(divide="ignore"):
                t = np.ceil(2.0 / u - 2.0)
            np.minimum(t, self.cap, out=t)
            return t.astype(np.int64)
        lengths = self.guide[(u * _GUIDE_BINS).astype(np.intp)]
        miss = lengths < 0
        if miss.any():
            lengths[miss] = np.searchsorted(self.descending, -u[miss], side="left")
        return lengths

    def mean_truncated(self, horizon: int) -> float:
        """E[min(T, horizon)] = sum_{m < horizon} P(T > m), for the block size."""
        if self.closed:  # 2 (H_(r+1) - 1)
            return float(2.0 * (special.digamma(horizon + 2.0) + np.euler_gamma - 1.0))
        return float(self.table[: max(horizon, 1)].sum())


@dataclass(frozen=True)
class InverseLogFit:
    """Least-squares fit y_n = a + b / ln n of y_n = E|S_n|^2 ln n / n (unweighted, over the
    fitted times); the standard errors come from the per-walker values of the (linear)
    estimators, so they account for the correlation between times."""

    a: float
    a_stderr: float
    b: float
    b_stderr: float
    times: Ints


@dataclass(frozen=True)
class SeRWResult:
    """What :func:`simulate_serw` returns.

    Attributes:
        times: (K,) int64, the observed times n (increasing, within [0, n_steps]).
        positions: (n_walkers, K, d) int64, S_n of every walker at every time.
        msd: (K,) float64, the mean square displacement E|S_n|^2 over walkers.
        msd_stderr: (K,) float64, its Monte Carlo standard error (nan for one walker).
        bouts: (n_walkers, n_bouts) int64, each walker's first bout lengths T (iid with
            P(T > m) of :func:`bout_survival`); ``n_steps + 1`` stands for T > n_steps.
        n_steps, model, delta, d, xi: the options of the run.
    """

    times: Ints
    positions: Ints
    msd: Floats
    msd_stderr: Floats
    bouts: Ints
    n_steps: int
    model: Model
    delta: float
    d: int
    xi: XiLaw | None = None

    def squared_displacements(self) -> Floats:
        """(n_walkers, K) float64: |S_n|^2 of every walker at every time."""
        pos = self.positions.astype(np.float64)
        return cast(Floats, np.einsum("wkd,wkd->wk", pos, pos))

    def _time_index(self, time_: int, what: str) -> int:
        hits = np.flatnonzero(self.times == time_)
        if not hits.size:
            raise UsageError(f"SeRWResult: {what}={time_!r} is not one of the simulated times")
        return int(hits[0])

    def msd_slope(self, start: int | None = None, end: int | None = None) -> tuple[float, float]:
        """(E|S_end|^2 - E|S_start|^2) / (end - start) and its standard error: the diffusion
        constant v without the O(1) offset of E|S_n|^2 = v n + O(1) (a diffusive walk).

        Defaults: ``end`` the last time, ``start`` the simulated time nearest ``end / 2``.
        The error uses the per-walker differences (the two times share walkers).

        >>> r = simulate_serw(1000, 2000, model="I", delta=0.5, times=[500, 1000], seed=1)
        >>> v, err = r.msd_slope()
        >>> bool(abs(v - diffusion_constant("I", 0.5)) < 4 * err)
        True
        """
        end = int(self.times[-1]) if end is None else end
        j = self._time_index(end, "end")
        if start is None:
            i = int(np.argmin(np.abs(self.times[:j] - end / 2))) if j > 0 else j
        else:
            i = self._time_index(start, "start")
        if not self.times[i] < self.times[j]:
            raise UsageError(
                f"SeRWResult: start must be before end, got {self.times[i]} and {self.times[j]}"
            )
        sq = self.squared_displacements()
        diff = (sq[:, j] - sq[:, i]) / float(self.times[j] - self.times[i])
        err = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else math.nan
        return float(diff.mean()), err

    def inverse_log_fit(self, t_min: int = 1000) -> InverseLogFit:
        """Fit E|S_n|^2 ln n / n = a + b / ln n over the simulated times n >= ``t_min``
        (source 002 Prop. 2.2.1: a -> 0.794 for the unperturbed 1-D walk, O(1 / ln n)
        convergence); a is the extrapolation to n = infinity.

        >>> r = simulate_serw(10_000, 500, seed=0, times=[100, 1000, 10_000])
        >>> fit = r.inverse_log_fit(t_min=100)
        >>> bool(abs(fit.a - SERW_1D_LIMIT) < 5 * fit.a_stderr)
        True
        """
        keep = np.flatnonzero(self.times >= max(t_min, 2))
        if keep.size < 2:
            raise UsageError(
                f"SeRWResult: inverse_log_fit needs two simulated times >= "
                f"t_min={t_min}, got {keep.size}"
            )
        times = self.times[keep]
        logs = np.log(times.astype(np.float64))
        solve = _inverse_log_solver(times)
        per_walker = self.squared_displacements()[:, keep] * (logs / times) @ solve.T
        mean = per_walker.mean(axis=0)
        if per_walker.shape[0] > 1:
            err = per_walker.std(axis=0, ddof=1) / math.sqrt(per_walker.shape[0])
        else:
            err = np.full(2, math.nan)
        return InverseLogFit(float(mean[0]), float(err[0]), float(mean[1]), float(err[1]), times)


def _inverse_log_solver(times: Ints) -> Floats:
    """(2, K) least-squares solver of y_n = a + b / ln n: (a, b) = solver @ y."""
    logs = np.log(times.astype(np.float64))
    return cast(Floats, np.linalg.pinv(np.stack([np.ones_like(logs), 1.0 / logs], axis=1)))


def _default_times(n_steps: int, count: int = 48) -> Ints:
    grid = np.geomspace(1.0, float(n_steps), count)
    return np.unique(np.round(grid).astype(np.int64))


def _parse_times(times: ArrayLike | None, n_steps: int, where: str) -> Ints:
    if times is None:
        return _default_times(n_steps)
    arr = np.asarray(times)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise UsageError(
            f"{where}: times must be a non-empty 1-D sequence of integers, got {times!r}"
        )
    arr = arr.astype(np.int64)
    if arr[0] < 0 or arr[-1] > n_steps or np.any(np.diff(arr) <= 0):
        raise UsageError(
            f"{where}: times must increase strictly within [0, n_steps="
            f"{n_steps}], got {arr.tolist()[:8]}{' ...' if arr.size > 8 else ''}"
        )
    return arr


def _block_size(sampler: _BoutSampler, remaining: int, smallest: int) -> int:
    bouts = 1.25 * remaining / max(sampler.mean_truncated(remaining), 1.0) + 4
    return int(min(max(math.ceil(bouts), smallest, 4), max(_MAX_BLOCK, smallest)))


def _walk_chunk(
    sampler: _BoutSampler,
    rng: np.random.Generator,
    n_walkers: int,
    d: int,
    times: Ints,
    n_steps: int,
    n_bouts: int,
) -> tuple[Ints, Ints]:
    """Positions (n_walkers, K, d) at ``times`` and the first ``n_bouts`` bouts of a group
    of independent walkers, simulated block of bouts by block of bouts."""
    two_d = 2 * d
    positions = np.zeros((n_walkers, times.size, d), dtype=np.int64)
    bouts = np.zeros((n_walkers, n_bouts), dtype=np.int64)
    ids = np.arange(n_walkers)
    t = np.zeros(n_walkers, dtype=np.int64)  # steps taken (time at which the next bout starts)
    x = np.zeros((n_walkers, d), dtype=np.int64)  # position at that time
    u = rng.integers(0, two_d, n_walkers)  # direction of the next bout's first step
    j = np.full(n_walkers, np.searchsorted(times, 0, side="right"), dtype=np.int64)
    first = True
    while ids.size:
        width = _block_size(sampler, int(n_steps - np.median(t)), n_bouts if first else 1)
        lengths = sampler.draw(rng, (ids.size, width))
        if first:
            bouts[:] = lengths[:, :n_bouts]
            first = False
        odd = lengths & 1
        # direction of bout i + 1 = direction of bout i + d [T_i odd] + r_i (mod 2d); in 1-D
        # r_i = 1: the direction flips after an even bout
        if d == 1:
            turn = odd ^ 1
            dirs = (np.cumsum(turn, axis=1) - turn + u[:, None]) & 1
            turned = dirs[:, -1] ^ turn[:, -1]
            signed = odd - 2 * (dirs & odd)  # displacement of each bout
            axis = np.zeros(0, dtype=np.int64)
            x[:, 0] += signed.sum(axis=1)
        else:
            inc = d * odd + rng.integers(1, two_d, lengths.shape)
            dirs = (np.cumsum(inc, axis=1) - inc + u[:, None]) % two_d
            turned = (dirs[:, -1] + inc[:, -1]) % two_d
            back = dirs >= d
            signed = odd - 2 * (back & (odd == 1))  # displacement along the bout's axis
            axis = dirs - d * back
            keys = axis + d * np.arange(ids.size)[:, None]
            x += (
                np.bincount(keys.ravel(), signed.ravel(), ids.size * d)
                .reshape(-1, d)
                .astype(np.int64)
            )
        ends = t + lengths.sum(axis=1)
        # answer the requested times that fall inside this block's bouts
        k = np.searchsorted(times, np.minimum(ends, n_steps), side="right")
        counts = k - j
        if counts.any():
            _answer(positions, ids, counts, j, times, t, x, lengths, dirs, signed, axis, d)
        u = turned
        t, j = ends, k
        keep = t < n_steps
        if not keep.all():
            ids, t, x, u, j = ids[keep], t[keep], x[keep], u[keep], j[keep]
    return positions, bouts


def _answer(
    positions: Ints,
    ids: Ints,
    counts: Ints,
    j: Ints,
    times: Ints,
    t: Ints,
    x_after: Ints,
    lengths: Ints,
    dirs: Ints,
    signed: Ints,
    axis: Ints,
    d: int,
) -> None:
    """Write the positions at the requested times inside this block: ``counts`` of them per
    walker, from time index ``j``; ``x_after`` is the position after the block, ``t`` the
    time before it. Works on the walkers that have some (prefix sums for those only)."""
    qrows = np.flatnonzero(counts)
    c = counts[qrows]
    local = np.repeat(np.arange(qrows.size), c)  # query -> its walker among qrows
    tidx = j[qrows][local] + np.arange(local.size) - np.repeat(np.cumsum(c) - c, c)
    query = times[tidx] - t[qrows][local]  # steps into this block, in [1, block length]
    sub_len = lengths[qrows]
    elapsed = np.cumsum(sub_len, axis=1)
    bout = _first_reaching(elapsed, local, query)
    inside = (query - elapsed[local, bout] + sub_len[local, bout]) & 1
    sub_signed = signed[qrows]
    pos = np.empty((local.size, d), dtype=np.int64)
    for a in range(d):
        moves = sub_signed if d == 1 else np.where(axis[qrows] == a, sub_signed, 0)
        after = np.cumsum(moves, axis=1)  # displacement after each bout of the block
        # position before the bout = position after the block - what came from that bout on
        pos[:, a] = (
            x_after[qrows, a][local] - after[local, -1] + after[local, bout] - moves[local, bout]
        )
    q_dirs = dirs[qrows][local, bout]
    pos[np.arange(local.size), q_dirs % d] += np.where(q_dirs < d, inside, -inside)
    positions[ids[qrows][local], tidx] = pos


def _first_reaching(elapsed: Ints, rows: Ints, query: Ints) -> Ints:
    """For each query, the first column b of ``elapsed[rows]`` (increasing along rows) with
    elapsed[row, b] >= query (every query <= the row's last value): a binary search
    vectorized over the queries; hi always satisfies the condition."""
    width = elapsed.shape[1]
    flat = elapsed.ravel()
    base = rows * width
    lo = np.zeros(rows.size, dtype=np.int64)
    hi = np.full(rows.size, width - 1, dtype=np.int64)
    for _ in range(max(width - 1, 1).bit_length()):
        mid = (lo + hi) >> 1
        reached = flat[base + mid] >= query
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid + 1)
    return hi


def simulate_serw(
    n_steps: int,
    n_walkers: int,
    *,
    d: int = 1,
    model: Model = "none",
    delta: float = 0.0,
    xi: XiLaw | None = None,
    seed: int = 0,
    times: ArrayLike | None = None,
    n_bouts: int = 8,
    progress: bool = True,
) -> SeRWResult:
    """Simulate ``n_walkers`` independent (perturbed) senile reinforced random walks on Z^d.

    The walk, the models ``"none"``, ``"I"``, ``"II"``, ``"III"``, ``delta`` and ``xi`` (a
    :class:`XiLaw`; default exponential with mean 1 for model II, and for model III with
    growth 1) are defined in the module docstring (source 002 §2.1-2.2). Whole bouts are
    drawn from P(T > m) (:func:`bout_survival`), vectorized over walkers and over blocks of
    bouts; the positions at ``times`` (default: about 48 log-spaced times in [1, n_steps];
    else strictly increasing integers in [0, n_steps]) are exact, inside bouts included.
    ``seed`` (an int) reproduces the run exactly; ``progress`` shows a bar over walkers.
    Cost: about 10-15 ns per bout, so the unperturbed 1-D walk (bouts of mean ~2 ln n steps)
    runs at 10^8-10^9 walker-steps per second on one core; short bouts (large delta, d >= 2)
    bring it near 10^8 (``benchmarks/sims_serw.py``).

    Returns a :class:`SeRWResult`: positions (n_walkers, len(times), d), the mean square
    displacement curve with its standard error, and each walker's first ``n_bouts`` bouts.

    >>> r = simulate_serw(1000, 4, times=[10, 1000], seed=0)
    >>> r.positions.shape, r.bouts.shape
    ((4, 2, 1), (4, 8))
    >>> bool(np.all(np.abs(r.positions[:, 0, 0]) <= 10))
    True
    """
    where = "simulate_serw"
    walk = _Walk.parse(model, delta, d, xi, where)
    n_steps = _count(n_steps, "n_steps", where)
    n_walkers = _count(n_walkers, "n_walkers", where)
    n_bouts = _count(n_bouts, "n_bouts", where, minimum=0)
    if not _is_int(seed):
        raise UsageError(f"{where}: seed must be an integer, got {seed!r}")
    times_arr = _parse_times(times, n_steps, where)
    if n_steps >= 2**50:  # block times (up to 4096 bouts of n_steps + 1) stay in int64
        raise UsageError(f"{where}: n_steps must be < 2**50, got {n_steps}")
    rng = np.random.default_rng(int(seed))
    sampler = _BoutSampler(walk, n_steps)
    width = _block_size(sampler, n_steps, n_bouts)
    group = max(1, _BLOCK_ELEMENTS // width)
    parts: list[tuple[Ints, Ints]] = []
    with progress_task("serw", n_walkers, progress) as advance:
        for lo in range(0, n_walkers, group):
            size = min(group, n_walkers - lo)
            parts.append(_walk_chunk(sampler, rng, size, walk.d, times_arr, n_steps, n_bouts))
            advance(size)
    positions = np.concatenate([p for p, _ in parts])
    bouts = np.concatenate([b for _, b in parts])
    sq = np.einsum("wkd,wkd->wk", positions.astype(np.float64), positions.astype(np.float64))
    msd = sq.mean(axis=0)
    if n_walkers > 1:
        msd_stderr = sq.std(axis=0, ddof=1) / math.sqrt(n_walkers)
    else:
        msd_stderr = np.full(times_arr.size, math.nan)
    return SeRWResult(
        times_arr,
        positions,
        msd,
        msd_stderr,
        bouts,
        n_steps,
        walk.model,
        walk.delta,
        walk.d,
        walk.xi,
    )


# --------------------------------------------------------------------------- experiments

_Z_LIMIT = 4.0  # verdicts: simulation and theory agree within this many standard errors


def _agreement(z: float) -> str:
    return "agrees" if abs(z) <= _Z_LIMIT else "DISAGREES"


def serw_experiment(
    *,
    seed: int = 0,
    progress: bool = True,
    n_steps: int = 10**6,
    n_walkers: int = 20_000,
    t_min: int = 1000,
    perturbed_model: Model | None = "I",
    delta: float = 0.01,
    xi: XiLaw | str | None = None,
    perturbed_walkers: int = 2000,
) -> SimulationResult:
    """``tailwise simulate serw``: the sub-diffusive 1-D SeRW (source 002 Prop. 2.2.1).

    Simulates ``n_walkers`` unperturbed walks for ``n_steps`` steps and fits
    E S_n^2 ln n / n = a + b / ln n over the simulated n >= ``t_min``
    (:meth:`SeRWResult.inverse_log_fit`): a estimates the limit (1 - ln 2) / (2 ln 2 - 1)
    ~ 0.794 (the convergence is O(1 / ln n), hence the extrapolation). Optionally
    (``perturbed_model`` "I", "II" or "III"; None or "none" for none; ``delta``, ``xi`` as
    :func:`simulate_serw`, ``xi`` also as text for :meth:`XiLaw.parse`) a perturbed walk
    with ``perturbed_walkers`` walkers on the same plot: diffusive, E S_n^2 ~ v n with v from
    :func:`diffusion_constant`.

    The exact E S_n^2 (:func:`exact_msd`) is shown too: the simulation is compared with it
    at every time, and the same fit on the exact values measures the bias of the fitted form.

    Table: one row per simulated time ``n`` with ``msd`` / ``msd_stderr``, ``exact_msd``,
    ``z_exact``, ``scaled`` = msd ln n / n with ``scaled_stderr``, ``exact_scaled``, the
    fit ``fit_scaled`` (NaN below t_min) and the theory limit ``theory_scaled``; for the
    perturbed walk ``perturbed_msd``, ``perturbed_msd_stderr`` and ``perturbed_theory`` =
    v n. Summary: ``a``, ``a_stderr``, ``b``, ``theory_a``, ``z``, ``verdict``, ``a_exact``,
    ``max_abs_z_exact``, ``exact_verdict``; ``v_sim`` / ``v_sim_stderr`` (slope of the
    perturbed MSD over the second half), ``v_theory``, ``v_z``, ``v_verdict``. Figure:
    E S_n^2 against n (log-log) and E S_n^2 ln n / n against 1 / ln n with the
    extrapolated fit.

    >>> r = serw_experiment(n_steps=2000, n_walkers=200, t_min=100, perturbed_walkers=100,
    ...                     progress=False)
    >>> r.summary["theory_a"], list(r.table.columns[:4]), r.figure() is not None
    (0.794349724781045, ['n', 'msd', 'msd_stderr', 'exact_msd'], True)
    """
    where = "serw_experiment"
    n_steps = _count(n_steps, "n_steps", where, minimum=2)
    t_min = _count(t_min, "t_min", where, minimum=2)
    if perturbed_model == "none":  # the command line's spelling of None
        perturbed_model = None
    if perturbed_model is not None and perturbed_model not in ("I", "II", "III"):
        raise UsageError(
            f"{where}: perturbed_model must be 'I', 'II', 'III' or None, got {perturbed_model!r}"
        )
    law = None if xi is None else XiLaw.parse(xi)
    times = _default_times(n_steps, 40)
    base = simulate_serw(n_steps, n_walkers, seed=seed, times=times, progress=progress)
    fit = base.inverse_log_fit(t_min)
    exact = exact_msd(n_steps)[times]
    n = times.astype(np.float64)
    logs = np.log(np.maximum(n, 2.0))
    scaled = base.msd * logs / n
    with np.errstate(divide="ignore", invalid="ignore"):
        z_exact = np.where(base.msd_stderr > 0, (base.msd - exact) / base.msd_stderr, 0.0)
    exact_a = float((_inverse_log_solver(fit.times) @ (exact * logs / n)[times >= t_min])[0])
    table = pd.DataFrame(
        {
            "n": times,
            "msd": base.msd,
            "msd_stderr": base.msd_stderr,
            "exact_msd": exact,
            "z_exact": z_exact,
            "scaled": scaled,
            "scaled_stderr": base.msd_stderr * logs / n,
            "exact_scaled": exact * logs / n,
            "fit_scaled": np.where(times >= t_min, fit.a + fit.b / logs, np.nan),
            "theory_scaled": SERW_1D_LIMIT,
        }
    )
    z = (fit.a - SERW_1D_LIMIT) / fit.a_stderr
    max_z_exact = float(np.abs(z_exact).max())
    summary: dict[str, float | int | str] = {
        "a": fit.a,
        "a_stderr": fit.a_stderr,
        "b": fit.b,
        "theory_a": SERW_1D_LIMIT,
        "z": z,
        "verdict": (
            f"a = {fit.a:.4f} +- {fit.a_stderr:.4f} (fit a + b/ln n over n in "
            f"[{fit.times[0]}, {fit.times[-1]}]) {_agreement(z)} with (1 - ln 2)/(2 ln 2 - 1) "
            f"= {SERW_1D_LIMIT:.4f} (z = {z:+.2f})"
        ),
        "a_exact": exact_a,
        "max_abs_z_exact": max_z_exact,
        "exact_verdict": (
            f"simulated E S_n^2 {_agreement(max_z_exact)} with the exact values at all "
            f"{times.size} times (max |z| = {max_z_exact:.2f}); the same fit on the exact "
            f"values gives a = {exact_a:.4f} (the bias of the a + b/ln n form)"
        ),
    }
    perturbed: SeRWResult | None = None
    v_theory = math.nan
    if perturbed_model is not None:
        perturbed = simulate_serw(
            n_steps,
            perturbed_walkers,
            model=perturbed_model,
            delta=delta,
            xi=law,
            seed=seed + 1,
            times=times,
            progress=progress,
        )
        v_theory = diffusion_constant(perturbed_model, delta, xi=perturbed.xi)
        v_sim, v_err = perturbed.msd_slope()
        table["perturbed_msd"] = perturbed.msd
        table["perturbed_msd_stderr"] = perturbed.msd_stderr
        table["perturbed_theory"] = v_theory * n
        zp = (v_sim - v_theory) / v_err
        summary.update(
            {
                "perturbed_model": perturbed_model,
                "delta": float(delta),
                "v_sim": v_sim,
                "v_sim_stderr": v_err,
                "v_theory": v_theory,
                "v_z": zp,
                "v_verdict": f"model {perturbed_model}, delta = {delta:g}: v = {v_sim:.4f} +- "
                f"{v_err:.4f} {_agreement(zp)} with eq. (2.2) v = {v_theory:.4f} (z = {zp:+.2f})",
            }
        )

    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        ok = times >= 2
        left.errorbar(
            n[ok],
            base.msd[ok],
            yerr=2 * base.msd_stderr[ok],
            fmt="o",
            ms=3,
            label="SeRW, simulated (2 s.e.)",
        )
        left.plot(n[ok], exact[ok], "C0-", lw=1, label="exact (renewal equation)")
        left.plot(n[ok], SERW_1D_LIMIT * n[ok] / logs[ok], "k--", label="0.794 n / ln n")
        if perturbed is not None:
            left.errorbar(
                n[ok],
                perturbed.msd[ok],
                yerr=2 * perturbed.msd_stderr[ok],
                fmt="s",
                ms=3,
                label=f"model {perturbed_model}, delta={delta:g}",
            )
            left.plot(n[ok], v_theory * n[ok], ":", color="C1", label=f"v n, v = {v_theory:.3f}")
        left.set(
            xscale="log",
            yscale="log",
            xlabel="n",
            ylabel="E S_n^2",
            title="mean square displacement",
        )
        left.legend(fontsize="small")
        x = 1.0 / logs
        fitted = times >= t_min
        right.errorbar(
            x[ok],
            scaled[ok],
            yerr=2 * base.msd_stderr[ok] * logs[ok] / n[ok],
            fmt="o",
            ms=3,
            label="E S_n^2 ln n / n",
        )
        right.plot(x[ok], (exact * logs / n)[ok], "C2-", lw=1, label="exact")
        grid = np.linspace(0.0, x[fitted].max(), 50)
        right.plot(grid, fit.a + fit.b * grid, "C0-", label="fit a + b / ln n")
        right.errorbar([0.0], [fit.a], yerr=[2 * fit.a_stderr], fmt="D", color="C0", capsize=3)
        right.plot([0.0], [SERW_1D_LIMIT], "k*", ms=10, label="(1 - ln 2)/(2 ln 2 - 1)")
        right.set(xlabel="1 / ln n", ylabel="E S_n^2 ln n / n", title="extrapolation n -> inf")
        right.legend(fontsize="small")

    options = {
        "seed": seed,
        "n_steps": n_steps,
        "n_walkers": n_walkers,
        "t_min": t_min,
        "perturbed_model": perturbed_model,
        "delta": delta,
        "xi": None if perturbed is None or perturbed.xi is None else repr(perturbed.xi),
        "perturbed_walkers": perturbed_walkers,
    }
    return SimulationResult("serw", table, summary, draw, options)


def _theory_curve(model: Model, deltas: Floats, d: int, xi: XiLaw | None) -> Floats:
    return np.array([diffusion_constant(model, float(x), d=d, xi=xi) for x in deltas])


def serw_diffusion_experiment(
    *,
    seed: int = 0,
    progress: bool = True,
    d: int = 1,
    models: Sequence[Model] = ("I", "II", "III"),
    deltas: Sequence[float] = (0.3, 0.1, 0.03, 0.01),
    n_steps: int = 20_000,
    n_walkers: int | None = None,
    xi_ii: XiLaw | str = "exponential:mean=1",
    xi_iii: XiLaw | str = "exponential:mean=1,growth=1",
    theory_min_delta: float = 1e-5,
) -> SimulationResult:
    """``tailwise simulate serw-diffusion``: the diffusion constant v against delta, simulation
    and theory on one plot, for the perturbed models I-III on Z^d (source 002 Theorems
    2.3-2.6).

    For each model and delta, ``n_walkers`` walks (default 20000 for d = 1, 6000 for d >= 2,
    whose bouts are short and so cost more per step) of ``n_steps`` steps give
    v_sim = (E|S_n|^2 - E|S_(n/2)|^2) / (n / 2) (:meth:`SeRWResult.msd_slope`) with its
    standard error, next to :func:`diffusion_constant` (eq. (2.2)). ``xi_ii`` / ``xi_iii``
    are the xi laws of models II and III (text for :meth:`XiLaw.parse` or a
    :class:`XiLaw`). In d >= 2 the unperturbed walk (``model`` "none", delta 0) is simulated
    too. The theory is traced down to ``theory_min_delta``, with model II under a log-Pareto
    xi (infinite mean) added, and the right panel shows the rate as delta -> 0:

    * d = 1: v |ln delta|, bounded (Theorem 2.3, v = O(1 / |ln delta|); it tends to 0.794
      for model I and for model II with finite-mean xi), while the log-Pareto xi makes it grow
      without bound (Theorem 2.4 (ii): v = O(1 / ln |ln delta|) decays more slowly);
    * d >= 2: (v - v_0) / delta, finite as delta -> 0 (Theorem 2.6 (i): v = v_0 + O(delta)).

    Table: ``model``, ``delta``, ``v_sim``, ``v_sim_stderr``, ``v_theory``, ``z``.
    Summary: ``points``, ``max_abs_z``, ``verdict``, and the theory rate at
    ``theory_min_delta`` per line: ``v_log_delta_<line>`` (d = 1) or
    ``enhancement_slope_<line>`` and ``v_unperturbed`` (d >= 2), ``<line>`` one of the
    models or ``II_log_pareto``.

    >>> r = serw_diffusion_experiment(deltas=(0.3,), n_steps=400, n_walkers=300,
    ...                               theory_min_delta=1e-2, progress=False)
    >>> r.table[["model", "delta"]].values.tolist()
    [['I', 0.3], ['II', 0.3], ['III', 0.3]]
    """
    where = "serw_diffusion_experiment"
    d = _count(d, "d", where)
    n_walkers = (20_000 if d == 1 else 6_000) if n_walkers is None else n_walkers
    n_walkers = _count(n_walkers, "n_walkers", where, minimum=2)
    laws: dict[str, XiLaw | None] = {
        "none": None,
        "I": None,
        "II": XiLaw.parse(xi_ii),
        "III": XiLaw.parse(xi_iii),
    }
    models = tuple(models)
    if not models or any(m not in ("I", "II", "III") for m in models):
        raise UsageError(
            f"{where}: models must be a non-empty selection of 'I', 'II', 'III', got {models!r}"
        )
    grid = [float(x) for x in deltas] if isinstance(deltas, Sequence) else []
    if not grid or any(not (math.isfinite(x) and x > 0) for x in grid):
        raise UsageError(f"{where}: deltas must be finite numbers > 0, got {deltas!r}")
    floor = _positive_float(theory_min_delta, "theory_min_delta", where)
    n_steps = _count(n_steps, "n_steps", where, minimum=2)
    times = np.array([n_steps // 2, n_steps], dtype=np.int64)
    cells: list[tuple[Model, float]] = [(m, x) for m in models for x in grid]
    if d >= 2:
        cells.insert(0, ("none", 0.0))
    rows = []
    labelled = progress_bar(
        cells, len(cells), progress, "serw-diffusion", lambda c: f"model {c[0]}, delta {c[1]:g}"
    )
    for index, (model, delta) in enumerate(labelled):
        law = laws[model]
        result = simulate_serw(
            n_steps,
            n_walkers,
            d=d,
            model=model,
            delta=delta,
            xi=law,
            seed=seed + index,
            times=times,
            progress=False,
        )
        v_sim, v_err = result.msd_slope()
        v_theory = diffusion_constant(model, delta, d=d, xi=law)
        z = (v_sim - v_theory) / v_err
        rows.append(
            {
                "model": model,
                "delta": delta,
                "v_sim": v_sim,
                "v_sim_stderr": v_err,
                "v_theory": v_theory,
                "z": z,
            }
        )
    table = pd.DataFrame(rows)
    dense = np.geomspace(max(grid), min(floor, min(grid)), 25)
    lines: list[tuple[str, str, Model, XiLaw | None]] = [
        (m, f"model {m}", m, laws[m]) for m in models
    ]
    lines.append(("II_log_pareto", "model II, log-Pareto xi", "II", XiLaw.log_pareto()))
    curves = {key: _theory_curve(model, dense, d, law) for key, _, model, law in lines}
    v_zero = diffusion_constant("none", 0.0, d=d)
    if d == 1:
        rate_key, rate_label = "v_log_delta_", "v |ln delta|"
        rates = {key: curve * np.abs(np.log(dense)) for key, curve in curves.items()}
    else:
        rate_key, rate_label = "enhancement_slope_", "(v - v_0) / delta"
        rates = {key: (curve - v_zero) / dense for key, curve in curves.items()}
    max_z = float(np.abs(table["z"]).max())
    summary: dict[str, float | int | str] = {
        "points": len(table),
        "max_abs_z": max_z,
        "verdict": (
            f"simulated v {'agrees' if max_z <= _Z_LIMIT else 'DISAGREES'} with eq. (2.2) at "
            f"all {len(table)} points (max |z| = {max_z:.2f}, limit {_Z_LIMIT:g})"
        ),
    }
    summary.update({rate_key + key: float(rate[-1]) for key, rate in rates.items()})
    if d >= 2:
        summary["v_unperturbed"] = v_zero

    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        for i, (key, label, _, _) in enumerate(lines):
            style = "--" if key == "II_log_pareto" else "-"
            left.plot(dense, curves[key], style, color=f"C{i}", label=f"theory, {label}")
            right.plot(dense, rates[key], style, color=f"C{i}", label=label)
            part = table[table["model"] == key]
            if len(part):
                left.errorbar(
                    part["delta"],
                    part["v_sim"],
                    yerr=2 * part["v_sim_stderr"],
                    fmt="o",
                    color=f"C{i}",
                    ms=4,
                    capsize=2,
                )
        if d >= 2:
            left.axhline(v_zero, color="k", ls=":", label="unperturbed v_0")
        else:
            right.axhline(SERW_1D_LIMIT, color="k", ls=":", label="0.794")
        left.set(
            xscale="log",
            xlabel="delta",
            ylabel="v",
            title=f"v(delta), d = {d} (points: simulated, 2 s.e.)",
        )
        left.legend(fontsize="small")
        right.set(
            xscale="log",
            yscale="linear" if d == 1 else "log",  # d >= 2: slopes differ by decades
            xlabel="delta",
            ylabel=rate_label,
            title="theory: rate as delta -> 0",
        )
        right.legend(fontsize="small")

    options = {
        "seed": seed,
        "d": d,
        "models": list(models),
        "deltas": grid,
        "n_steps": n_steps,
        "n_walkers": n_walkers,
        "xi_ii": repr(laws["II"]),
        "xi_iii": repr(laws["III"]),
        "theory_min_delta": floor,
    }
    return SimulationResult("serw-diffusion", table, summary, draw, options)
