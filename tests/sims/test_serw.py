"""tailwise.sims.serw against exact oracles and the theorems of source 002 ch. 2.

Oracles: the exact law of S_n for small n by dynamic programming over the walk's states
(position, last direction, consecutive traversals), written from the definition (source 002
§2.1-2.2) and independent of the bout machinery; the exact E S_n^2 of the 1-D walk by a
renewal recursion over the first bout (checked against the dynamic program); a literal
step-by-step simulation that draws xi afresh at every step (models II and III); closed forms
(P(T > m) as Gamma ratios, E[T] and P(T odd) as Gauss hypergeometric series, evaluated by
mpmath); numerical quadrature against the xi densities. Monte Carlo tolerances are a few
standard errors of the estimate (4 for single checks, 5 where many are made at once), so
they hold for most seeds, not only the one used.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import mpmath
import numpy as np
import pytest
from scipy import integrate, stats

from tailwise._errors import UsageError
from tailwise.sims.serw import (
    SERW_1D_LIMIT,
    SeRWResult,
    XiLaw,
    bout_survival,
    diffusion_constant,
    exact_msd,
    serw_diffusion_experiment,
    serw_experiment,
    simulate_serw,
)

# ----------------------------------------------------------------------------- oracles


def _base(m: float, d: int) -> float:
    return (1.0 + m) / (2.0 * d + m)


def _density(law: XiLaw) -> Callable[[float], float]:
    s = law.scale
    if law.family == "exponential":
        return lambda x: math.exp(-x / s) / s
    if law.family == "pareto":
        return lambda x: law.shape / s * (1.0 + x / s) ** (-law.shape - 1.0)
    return lambda x: 1.0 / ((1.0 + math.log1p(x / s)) ** 2 * (s + x))


def _quad_retraversal(m: int, d: int, delta: float, law: XiLaw) -> float:
    """E[max(b(m) - delta xi_m, 0)] by quadrature, xi_m = m^growth xi (definition of II/III)."""
    b, scale = _base(m, d), m**law.growth
    f = _density(law)
    upper = b / (delta * scale)
    value, _ = integrate.quad(lambda x: (b - delta * scale * x) * f(x), 0.0, upper, limit=200)
    return float(value)


def _q_function(model: str, d: int, delta: float, law: XiLaw | None) -> Callable[[int], float]:
    if model == "none":
        return lambda m: _base(m, d)
    if model == "I":
        return lambda m: min(max(_base(m, d) - delta, 0.0), 1.0)
    assert law is not None
    return lambda m: _quad_retraversal(m, d, delta, law)


def _exact_laws(n_max: int, d: int, q: Callable[[int], float]) -> dict[int, dict[tuple, float]]:
    """Exact law of S_n, n = 1..n_max, from the definition: state (position, direction of
    the last step, consecutive traversals m); re-traverse (step back) with q(m), else one of
    the other 2d - 1 neighbours uniformly."""
    units = [
        tuple(int(a == k) * (1 if v < d else -1) for a in range(d))
        for v in range(2 * d)
        for k in [v % d]
    ]

    def move(pos: tuple, v: int) -> tuple:
        return tuple(p + e for p, e in zip(pos, units[v], strict=True))

    origin = (0,) * d
    states: dict[tuple, float] = {(move(origin, v), v, 1): 1.0 / (2 * d) for v in range(2 * d)}
    q_cache: dict[int, float] = {}
    laws = {}
    for n in range(1, n_max + 1):
        if n > 1:
            new: dict[tuple, float] = defaultdict(float)
            for (pos, v, m), pr in states.items():
                qm = q_cache.setdefault(m, q(m))
                back = (v + d) % (2 * d)
                new[(move(pos, back), back, m + 1)] += pr * qm
                for w in range(2 * d):
                    if w != back:
                        new[(move(pos, w), w, 1)] += pr * (1.0 - qm) / (2 * d - 1)
            states = new
        law: dict[tuple, float] = defaultdict(float)
        for (pos, _, _), pr in states.items():
            law[pos] += pr
        laws[n] = dict(law)
    return laws


def _renewal_msd(n_max: int, survival: np.ndarray) -> np.ndarray:
    """Exact E S_n^2, n = 0..n_max, of the 1-D walk with bout survival P(T > m) (length >=
    n_max + 1), by conditioning on the first bout T of a walk started at a bout boundary with
    direction +1: S_n = [n odd] if T >= n, else [T odd] + s_T S'_(n-T) with s_T = +1 for T
    odd (same direction), -1 for T even (turned back), S' an independent copy."""
    pt = np.zeros(n_max + 1)
    pt[1:] = survival[:n_max] - survival[1 : n_max + 1]
    odd = (np.arange(n_max + 1) % 2).astype(float)
    sign = 2.0 * odd - 1.0
    cum_odd = np.cumsum(pt * odd)
    f = np.zeros(n_max + 1)  # E S_n
    g = np.zeros(n_max + 1)  # E S_n^2
    for n in range(1, n_max + 1):
        start = survival[n - 1] * (n % 2) + cum_odd[n - 1]
        f_rev, g_rev = f[n - 1 : 0 : -1], g[n - 1 : 0 : -1]
        f[n] = start + np.dot(pt[1:n] * sign[1:n], f_rev)
        g[n] = start + 2.0 * np.dot(pt[1:n] * odd[1:n], f_rev) + np.dot(pt[1:n], g_rev)
    return g


def _literal_walk(
    n_steps: int, n_walkers: int, model: str, delta: float, law: XiLaw | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Step-by-step 1-D walk from the definition (xi drawn afresh before every step): final
    positions and first-bout lengths (0 while the first bout has not ended)."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 2, n_walkers)  # last direction: 0 -> +1, 1 -> -1
    pos = np.where(v == 0, 1, -1)
    m = np.ones(n_walkers)
    first = np.zeros(n_walkers, dtype=np.int64)
    for _ in range(n_steps - 1):
        b = (1.0 + m) / (2.0 + m)
        if model == "none":
            q = b
        elif model == "I":
            q = np.clip(b - delta, 0.0, 1.0)
        else:
            assert law is not None
            q = np.maximum(b - delta * law.sample(rng, n_walkers, count=m), 0.0)
        back = rng.random(n_walkers) < q
        first = np.where((first == 0) & ~back, m, first).astype(np.int64)
        v = np.where(back, 1 - v, v)  # in 1-D the only other neighbour continues ahead
        pos += np.where(v == 0, 1, -1)
        m = np.where(back, m + 1, 1.0)
    return pos, first


def _closed_model_i(delta: float, d: int) -> tuple[float, float, float]:
    """(E[T], P(T odd), v) of model I when q(1) > 0: q(k) = (1 - delta)(k + a)/(k + 2d) with
    a = (1 - 2d delta)/(1 - delta), so P(T > m) = (1 - delta)^m (1 + a)_m / (2d + 1)_m and
    E[T] = 2F1(1, 1 + a; 2d + 1; 1 - delta), P(T odd) = 2F1(1, 1 + a; 2d + 1; delta - 1)."""
    mpmath.mp.dps = 30
    a = (1 - 2 * d * mpmath.mpf(delta)) / (1 - mpmath.mpf(delta))
    mean_t = mpmath.hyp2f1(1, 1 + a, 2 * d + 1, 1 - mpmath.mpf(delta))
    p = mpmath.hyp2f1(1, 1 + a, 2 * d + 1, mpmath.mpf(delta) - 1)
    return float(mean_t), float(p), float(d * p / ((d - p) * mean_t))


def _law_matches(result: SeRWResult, laws: dict[int, dict[tuple, float]]) -> None:
    """Every probability of the exact law within 5 binomial standard errors (plus mass
    outside the support of the exact law: none)."""
    walkers = result.positions.shape[0]
    for k, n in enumerate(result.times.tolist()):
        law = laws[n]
        points, counts = np.unique(result.positions[:, k, :], axis=0, return_counts=True)
        seen = {tuple(p.tolist()): c / walkers for p, c in zip(points, counts, strict=True)}
        assert set(seen) <= set(law), f"n={n}: positions outside the exact support"
        for pos, p in law.items():
            err = math.sqrt(p * (1 - p) / walkers) + 1e-12
            assert abs(seen.get(pos, 0.0) - p) <= 5 * err + 1e-9, (n, pos, seen.get(pos), p)


# ----------------------------------------------------------------------------- the oracles agree


def test_renewal_recursion_matches_the_dynamic_program() -> None:
    n_max = 12
    for model, delta in [("none", 0.0), ("I", 0.2)]:
        q = _q_function(model, 1, delta, None)
        laws = _exact_laws(n_max, 1, q)
        survival = np.concatenate([[1.0], np.cumprod([q(k) for k in range(1, n_max + 2)])])
        g = _renewal_msd(n_max, survival)
        for n in range(1, n_max + 1):
            exact = sum(p * pos[0] ** 2 for pos, p in laws[n].items())
            assert g[n] == pytest.approx(exact, rel=1e-12)


# ----------------------------------------------------------------------------- exact_msd


@pytest.mark.parametrize(
    ("d", "model", "delta", "law"),
    [
        (1, "none", 0.0, None),
        (1, "II", 0.3, XiLaw.pareto(0.7)),
        (2, "none", 0.0, None),
        (2, "I", 0.15, None),
        (3, "III", 0.1, XiLaw.exponential(growth=1)),
    ],
)
def test_exact_msd_matches_the_dynamic_program(
    d: int, model: str, delta: float, law: XiLaw | None
) -> None:
    n_max = 12 if d < 3 else 7
    laws = _exact_laws(n_max, d, _q_function(model, d, delta, law))
    g = exact_msd(n_max, d=d, model=model, delta=delta, xi=law)  # type: ignore[arg-type]
    for n in range(1, n_max + 1):
        expected = sum(p * sum(c * c for c in pos) for pos, p in laws[n].items())
        assert g[n] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("model", "delta"), [("none", 0.0), ("I", 0.02)])
def test_exact_msd_matches_the_direct_recursion(model: str, delta: float) -> None:
    """The FFT power-series solution against the O(n^2) recursion, to rounding."""
    n_max = 1500
    direct = _renewal_msd(n_max, bout_survival(n_max + 1, model=model, delta=delta))
    fast = exact_msd(n_max, model=model, delta=delta)  # type: ignore[arg-type]
    assert np.allclose(fast[1:], direct[1:], rtol=1e-10)


@pytest.mark.parametrize("d", [2, 3])
def test_exact_msd_grows_like_the_diffusion_constant(d: int) -> None:
    """Two derivations agree: the renewal equation's E|S_n|^2 increments and
    v = d p / ((d - p) E[T]) of the correlated walk at bout ends."""
    g = exact_msd(20_000, d=d)
    slope = (g[20_000] - g[10_000]) / 10_000
    assert slope == pytest.approx(diffusion_constant("none", 0.0, d=d), rel=1e-6)
    g1 = exact_msd(4000, d=d, model="I", delta=0.1)
    assert (g1[4000] - g1[2000]) / 2000 == pytest.approx(
        diffusion_constant("I", 0.1, d=d), rel=1e-8
    )


def test_exact_msd_one_dimension_tends_to_0794() -> None:
    """Prop. 2.2.1 on the exact values: E S_n^2 ln n / n decreases towards 0.794, and the
    a + b / ln n fit over [10^3, 10^6] lands within 0.005 of it (the fitted form's bias)."""
    g = exact_msd(10**6)
    times = np.unique(np.geomspace(1000, 10**6, 30).astype(np.int64))
    scaled = g[times] * np.log(times) / times
    assert np.all(np.diff(scaled) < 0) and np.all(scaled > SERW_1D_LIMIT)
    design = np.stack([np.ones(times.size), 1 / np.log(times)], axis=1)
    a, _ = np.linalg.lstsq(design, scaled, rcond=None)[0]
    assert a == pytest.approx(SERW_1D_LIMIT, abs=0.005)


# ----------------------------------------------------------------------------- xi laws


@pytest.mark.parametrize(
    "law",
    [
        XiLaw.exponential(1.5),
        XiLaw.pareto(0.5, 2.0),
        XiLaw.pareto(1.0),
        XiLaw.pareto(2.5, 0.5),
        XiLaw.log_pareto(0.7),
        XiLaw.exponential(1.0, growth=1.5),
    ],
)
def test_truncated_mean_matches_quadrature_and_samples(law: XiLaw) -> None:
    f = _density(law)
    s = law.scale
    if law.family == "exponential":
        cdf = lambda t: -np.expm1(-t / s)  # noqa: E731
    elif law.family == "pareto":
        cdf = lambda t: 1 - (1 + t / s) ** -law.shape  # noqa: E731
    else:
        cdf = lambda t: 1 - 1 / (1 + np.log1p(t / s))  # noqa: E731
    for count in (1, 3):
        k = count**law.growth  # xi_count = k xi: E[min(k xi, c)] = E[k xi; xi <= c/k] + c P(...)
        for c in (0.05, 1.0, 30.0, 1e4):
            below, _ = integrate.quad(lambda x: x * f(x), 0, c / k, limit=400)
            value = k * below + c * (1 - cdf(c / k))
            got = float(law.truncated_mean(np.array([c]), count=count)[0])
            assert got == pytest.approx(value, rel=1e-7)
    # the sampler draws that law: Kolmogorov-Smirnov against the distribution function
    x = law.sample(np.random.default_rng(1), 20_000)
    assert stats.kstest(x, cdf).pvalue > 1e-4
    x3 = law.sample(np.random.default_rng(2), 20_000, count=3)
    assert stats.kstest(x3 / 3**law.growth, cdf).pvalue > 1e-4


def test_xi_law_parse_and_mean() -> None:
    assert XiLaw.parse("exponential:mean=2") == XiLaw.exponential(2.0)
    assert XiLaw.parse("pareto:shape=0.5,scale=3,growth=1") == XiLaw.pareto(0.5, 3.0, growth=1)
    assert XiLaw.parse("log_pareto") == XiLaw.log_pareto()
    assert XiLaw.pareto(0.9).mean == math.inf and XiLaw.pareto(3.0).mean == 0.5
    for bad, word in [
        ("gauss", "family"),
        ("pareto", "shape"),
        ("pareto:shape=x", "shape"),
        ("exponential:shape=1", "shape"),
        ("exponential:mean=-1", "mean"),
        ("pareto:shape=1,growth=-1", "growth"),
    ]:
        with pytest.raises(UsageError, match=word):
            XiLaw.parse(bad)


# ----------------------------------------------------------------------------- P(T > m)


def test_bout_survival_closed_forms() -> None:
    m = np.arange(0, 200)
    assert np.allclose(bout_survival(199), 2.0 / (m + 2), rtol=1e-12)
    for d in (2, 3):  # (2d)! (m + 1)! / (m + 2d)!
        exact = [
            float(mpmath.factorial(2 * d) * mpmath.factorial(k + 1) / mpmath.factorial(k + 2 * d))
            for k in m
        ]
        assert np.allclose(bout_survival(199, d=d), exact, rtol=1e-11)
    for d, delta in [(1, 0.05), (2, 0.1)]:  # (1 - delta)^m (1 + a)_m / (2d + 1)_m
        a = (1 - 2 * d * delta) / (1 - delta)
        exact = [float((1 - delta) ** k * mpmath.rf(1 + a, k) / mpmath.rf(2 * d + 1, k)) for k in m]
        assert np.allclose(bout_survival(199, model="I", delta=delta, d=d), exact, rtol=1e-11)
    # model I with q(1) <= 0: the walker always leaves after one traversal
    assert bout_survival(3, model="I", delta=0.7).tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("model", "law"),
    [("II", XiLaw.exponential()), ("II", XiLaw.pareto(0.5)), ("III", XiLaw.pareto(2.0, growth=1))],
)
def test_bout_survival_models_ii_iii_match_quadrature(model: str, law: XiLaw) -> None:
    q = _q_function(model, 1, 0.2, law)
    exact = np.cumprod([1.0] + [q(k) for k in range(1, 41)])
    assert np.allclose(bout_survival(40, model=model, delta=0.2, xi=law), exact, rtol=1e-8)


@pytest.mark.parametrize(
    ("model", "delta", "law"),
    [("I", 0.1, None), ("II", 0.3, XiLaw.pareto(0.5)), ("III", 0.2, XiLaw.exponential(growth=1))],
)
def test_literal_walk_has_the_bout_law_and_the_msd(model: str, delta: float, law: XiLaw) -> None:
    """Drawing xi afresh at every step (the definition) gives the bouts P(T > m) of the
    averaged re-traversal probability, and the same E S_n^2 as the bout simulator."""
    n, walkers = 60, 20_000
    pos, first = _literal_walk(n, walkers, model, delta, law, seed=3)
    survival = bout_survival(n, model=model, delta=delta, xi=law)
    # first bouts observed to end before step n: P(T > m) for m < n - 1 needs no censoring
    for m in (1, 2, 3, 5, 8, 13, 20, 40):
        frac = np.mean((first == 0) | (first > m))
        p = survival[m]
        assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / walkers) + 1e-9, (m, frac, p)
    sim = simulate_serw(n, walkers, model=model, delta=delta, xi=law, times=[n], seed=4)
    literal_msd = np.mean(pos.astype(float) ** 2)
    err = math.hypot(np.std(pos.astype(float) ** 2) / math.sqrt(walkers), sim.msd_stderr[0])
    assert abs(sim.msd[0] - literal_msd) <= 4 * err


# ----------------------------------------------------------------------------- the simulator


@pytest.mark.parametrize(
    ("d", "model", "delta", "law", "times"),
    [
        (1, "none", 0.0, None, [1, 2, 3, 4, 7, 10, 16]),
        (1, "I", 0.2, None, [1, 2, 5, 9, 14]),
        (1, "II", 0.3, XiLaw.pareto(0.7), [2, 5, 11]),
        (1, "III", 0.1, XiLaw.exponential(growth=2), [3, 8, 12]),
        (2, "none", 0.0, None, [1, 2, 3, 6, 9]),
        (2, "I", 0.15, None, [2, 5, 8]),
        (3, "none", 0.0, None, [1, 4, 7]),
    ],
)
def test_positions_have_the_exact_law(
    d: int, model: str, delta: float, law: XiLaw | None, times: list[int]
) -> None:
    laws = _exact_laws(max(times), d, _q_function(model, d, delta, law))
    result = simulate_serw(
        max(times),
        20_000,
        d=d,
        model=model,
        delta=delta,
        xi=law,
        times=times,
        seed=11,
        progress=False,
    )
    _law_matches(result, laws)


@pytest.mark.parametrize(
    ("n_max", "d", "model", "delta"),
    [(100_000, 1, "none", 0.0), (3000, 1, "I", 0.02), (1000, 2, "none", 0.0), (600, 3, "I", 0.1)],
)
def test_msd_matches_the_exact_values(n_max: int, d: int, model: str, delta: float) -> None:
    exact = exact_msd(n_max, d=d, model=model, delta=delta)  # type: ignore[arg-type]
    times = np.unique(np.geomspace(3, n_max, 8).astype(np.int64))
    result = simulate_serw(n_max, 8000, d=d, model=model, delta=delta, times=times, seed=5)
    z = (result.msd - exact[times]) / result.msd_stderr
    assert np.all(np.abs(z) <= 5), z  # 8 correlated checks: 5 standard errors


def test_bouts_follow_the_theory_survival() -> None:
    for model, delta in [("none", 0.0), ("I", 0.05)]:
        r = simulate_serw(
            500, 10_000, model=model, delta=delta, n_bouts=8, seed=2, times=[500], progress=False
        )
        t = r.bouts.ravel()
        survival = bout_survival(500, model=model, delta=delta)
        for m in (1, 2, 3, 6, 10, 30, 100, 499):
            frac = np.mean(t > m)
            p = survival[m]
            assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / t.size), (model, m, frac, p)
        assert t.min() >= 1 and t.max() <= 501


def test_seed_reproduces_and_times_are_honoured() -> None:
    kwargs = dict(d=2, model="I", delta=0.1, times=[0, 3, 50, 200])
    a = simulate_serw(200, 300, seed=9, **kwargs)  # type: ignore[arg-type]
    b = simulate_serw(200, 300, seed=9, **kwargs)  # type: ignore[arg-type]
    c = simulate_serw(200, 300, seed=10, **kwargs)  # type: ignore[arg-type]
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.bouts, b.bouts)
    assert not np.array_equal(a.positions, c.positions)
    assert a.positions.shape == (300, 4, 2) and a.times.tolist() == [0, 3, 50, 200]
    assert np.all(a.positions[:, 0] == 0)
    # a nearest-neighbour walk: |S_n|_1 <= n and of the parity of n
    l1 = np.abs(a.positions).sum(axis=2)
    assert np.all(l1 <= a.times) and np.all((l1 - a.times) % 2 == 0)
    assert np.allclose(a.msd, (a.positions.astype(float) ** 2).sum(axis=2).mean(axis=0))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(n_steps=0), "n_steps"),
        (dict(n_steps=10.5), "n_steps"),
        (dict(n_walkers=0), "n_walkers"),
        (dict(d=0), "d"),
        (dict(model="IV"), "model"),
        (dict(model="I", delta=-0.1), "delta"),
        (dict(model="I", delta=float("nan")), "delta"),
        (dict(model="none", delta=0.1), "delta"),
        (dict(model="I", delta=0.1, xi=XiLaw.exponential()), "xi"),
        (dict(model="II", delta=0.1, xi="exponential"), "xi"),
        (dict(model="II", delta=0.1, xi=XiLaw.exponential(growth=1)), "growth"),
        (dict(model="III", delta=0.1, xi=XiLaw.exponential()), "growth"),
        (dict(seed=1.5), "seed"),
        (dict(times=[5, 3]), "times"),
        (dict(times=[0, 101]), "times"),
        (dict(times=[1.5]), "times"),
        (dict(n_bouts=-1), "n_bouts"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict, word: str) -> None:
    args = {"n_steps": 100, "n_walkers": 10, **kwargs}
    with pytest.raises(UsageError, match=word):
        simulate_serw(**args)


def test_bad_input_of_the_theory() -> None:
    with pytest.raises(UsageError, match="model"):
        diffusion_constant("V", 0.1)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="max_terms"):
        diffusion_constant("I", 1e-9)
    with pytest.raises(UsageError, match="m_max"):
        bout_survival(-1)
    with pytest.raises(UsageError, match="end"):
        simulate_serw(100, 10, times=[50, 100]).msd_slope(end=70)


# ----------------------------------------------------------------------------- the theory


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("delta", [0.25, 0.1, 1e-2, 1e-4])
def test_diffusion_constant_model_i_closed_form(d: int, delta: float) -> None:
    if (2 * d + 1) * delta >= 2:  # q(1) <= 0: T = 1, p = 1, v = d / (d - 1)
        assert diffusion_constant("I", delta, d=d) == pytest.approx(d / (d - 1.0))
        return
    assert diffusion_constant("I", delta, d=d) == pytest.approx(
        _closed_model_i(delta, d)[2], rel=1e-9
    )


@pytest.mark.parametrize("d", [2, 3, 4])
def test_diffusion_constant_unperturbed_closed_form(d: int) -> None:
    p = float(mpmath.hyp2f1(1, 2, 2 * d + 1, -1))  # E[T] = d / (d - 1)
    assert diffusion_constant("none", 0.0, d=d) == pytest.approx(
        d * p / ((d - p) * d / (d - 1)), rel=1e-9
    )
    assert diffusion_constant("none", 0.0) == 0.0  # 1-D: E[T] infinite, sub-diffusive


@pytest.mark.parametrize(
    ("model", "law"), [("II", XiLaw.exponential(2.0)), ("III", XiLaw.pareto(1.5, growth=1))]
)
def test_diffusion_constant_models_ii_iii_by_quadrature(model: str, law: XiLaw) -> None:
    q = _q_function(model, 1, 0.4, law)
    survival = np.cumprod([1.0] + [q(k) for k in range(1, 120)])
    assert survival[-1] < 1e-14
    p = float(np.sum(survival[0::2]) - np.sum(survival[1::2]))
    expected = p / ((1 - p) * survival.sum())
    assert diffusion_constant(model, 0.4, xi=law) == pytest.approx(expected, rel=1e-9)


def test_theorem_2_3_v_decays_like_one_over_log_delta() -> None:
    """v |ln delta| is bounded and tends to 0.794 (E[T] ~ 2 ln(1/delta), P(T odd) ->
    2 (1 - ln 2): the constant of Prop. 2.2.1, as delta ~ 1/n suggests)."""
    deltas = np.geomspace(0.1, 1e-5, 5)
    scaled = np.array([diffusion_constant("I", x) * abs(math.log(x)) for x in deltas])
    assert np.all(np.diff(scaled) < 0) and np.all((scaled > 0.794) & (scaled < 1.5))
    assert scaled[-1] == pytest.approx(SERW_1D_LIMIT, rel=0.1)
    # v itself goes to 0 (no residual diffusivity)
    assert diffusion_constant("I", 1e-5) < diffusion_constant("I", 1e-3) / 1.7


def test_theorem_2_4_infinite_mean_xi_decays_more_slowly() -> None:
    """Pareto xi with shape alpha < 1: the same 1/|ln delta| rate (source 002 §2.4.4 case 2),
    v |ln delta| falling towards 0.794 / alpha (escape ~ delta^alpha, so E[T] ~
    2 alpha ln(1/delta)). Log-Pareto xi (density ~ 1/(x ln^2 x)): v ln|ln delta| stays
    bounded while v |ln delta| grows without bound (Theorem 2.4 (ii))."""
    alpha = 0.5
    pareto = XiLaw.pareto(alpha)
    deltas = [1e-4, 1e-8, 1e-12]
    scaled = np.array([diffusion_constant("II", x, xi=pareto) * abs(math.log(x)) for x in deltas])
    limit = SERW_1D_LIMIT / alpha
    assert np.all(np.diff(scaled) < 0) and np.all(scaled > limit) and scaled[-1] < 1.2 * limit
    heavy = XiLaw.log_pareto()
    deltas = [1e-2, 1e-10, 1e-50, 1e-250]
    v_heavy = np.array([diffusion_constant("II", x, xi=heavy) for x in deltas])
    loglog = v_heavy * np.log(np.abs(np.log(deltas)))
    assert np.all((loglog > 0.3) & (loglog < 1.5)), loglog
    assert v_heavy[-1] * abs(math.log(deltas[-1])) > 20 * v_heavy[0] * abs(math.log(deltas[0]))
    # slower decay than model I and than finite-mean xi, more so as delta shrinks
    ratios = [
        diffusion_constant("II", x, xi=heavy) / diffusion_constant("I", x)
        for x in (1e-2, 1e-3, 1e-4)
    ]
    assert ratios[0] > 1 and np.all(np.diff(ratios) > 0)


@pytest.mark.parametrize("d", [2, 3])
def test_theorem_2_6_linear_enhancement_in_higher_dimensions(d: int) -> None:
    v0 = diffusion_constant("none", 0.0, d=d)
    slopes = [(diffusion_constant("I", x, d=d) - v0) / x for x in (1e-2, 1e-3, 1e-4)]
    assert slopes[0] > 0 and slopes[-1] > 0
    assert slopes[-1] == pytest.approx(slopes[-2], rel=0.05)  # a finite slope: v0 + O(delta)
    assert diffusion_constant("I", 1e-6, d=d) == pytest.approx(v0, rel=1e-4)


# ----------------------------------------------------------------------------- simulation vs theory


@pytest.mark.parametrize("delta", [0.3, 0.1, 0.03])
def test_model_i_simulated_v_matches_theory(delta: float) -> None:
    r = simulate_serw(4000, 10_000, model="I", delta=delta, times=[2000, 4000], seed=21)
    v, err = r.msd_slope()
    assert err < 0.05 * v
    assert abs(v - diffusion_constant("I", delta)) <= 4 * err


@pytest.mark.parametrize(
    ("model", "law"),
    [("II", XiLaw.exponential()), ("II", XiLaw.pareto(0.5)), ("III", XiLaw.exponential(growth=1))],
)
def test_models_ii_iii_simulated_v_matches_theory(model: str, law: XiLaw) -> None:
    r = simulate_serw(4000, 10_000, model=model, delta=0.1, xi=law, times=[2000, 4000], seed=22)
    v, err = r.msd_slope()
    assert abs(v - diffusion_constant(model, 0.1, xi=law)) <= 4 * err


@pytest.mark.parametrize("d", [2, 3])
def test_higher_dimensions_diffusive_and_model_i_enhances(d: int) -> None:
    times = [1000, 2000]
    plain = simulate_serw(2000, 6000, d=d, times=times, seed=23).msd_slope()
    pushed = simulate_serw(2000, 6000, d=d, model="I", delta=0.2, times=times, seed=24)
    v_pushed = pushed.msd_slope()
    v0, v1 = diffusion_constant("none", 0.0, d=d), diffusion_constant("I", 0.2, d=d)
    assert abs(plain[0] - v0) <= 4 * plain[1]
    assert abs(v_pushed[0] - v1) <= 4 * v_pushed[1]
    assert v_pushed[0] - plain[0] > 4 * math.hypot(plain[1], v_pushed[1])


def test_one_dimension_extrapolates_to_0794() -> None:
    """E S_n^2 ln n / n = a + b / ln n fitted over n in [10^3, 10^5]: a within 4 standard
    errors of (1 - ln 2)/(2 ln 2 - 1) (the standard error is small enough to mean it)."""
    times = np.unique(np.geomspace(1000, 100_000, 12).astype(np.int64))
    r = simulate_serw(100_000, 8000, times=times, seed=31, progress=False)
    fit = r.inverse_log_fit(t_min=1000)
    assert fit.a_stderr < 0.07
    assert abs(fit.a - SERW_1D_LIMIT) <= 4 * fit.a_stderr
    # and the sub-diffusion itself: E S_n^2 / n falls like 1 / ln n
    assert r.msd[-1] / r.times[-1] < 0.8 * r.msd[0] / r.times[0]


@pytest.mark.slow
def test_one_dimension_extrapolates_to_0794_thorough() -> None:
    times = np.unique(np.geomspace(1000, 10**6, 16).astype(np.int64))
    r = simulate_serw(10**6, 40_000, times=times, seed=32, progress=False)
    fit = r.inverse_log_fit(t_min=1000)
    assert fit.a_stderr < 0.02
    assert abs(fit.a - SERW_1D_LIMIT) <= 4 * fit.a_stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("d", "model", "delta"), [(1, "I", 0.01), (2, "none", 0.0), (3, "none", 0.0), (2, "I", 0.05)]
)
def test_simulated_v_matches_theory_thorough(d: int, model: str, delta: float) -> None:
    r = simulate_serw(
        20_000, 40_000, d=d, model=model, delta=delta, times=[10_000, 20_000], seed=33
    )
    v, err = r.msd_slope()
    assert err < 0.015 * v
    assert abs(v - diffusion_constant(model, delta, d=d)) <= 4 * err


# ----------------------------------------------------------------------------- experiments


def test_serw_experiment_small() -> None:
    r = serw_experiment(
        n_steps=20_000,
        n_walkers=2000,
        t_min=200,
        perturbed_walkers=1000,
        delta=0.05,
        progress=False,
        seed=3,
    )
    assert r.name == "serw"
    assert {
        "n",
        "msd",
        "msd_stderr",
        "scaled",
        "fit_scaled",
        "perturbed_msd",
        "perturbed_theory",
    } <= set(r.table.columns)
    assert abs(r.summary["z"]) <= 4 and "agrees" in str(r.summary["verdict"])
    assert abs(r.summary["v_z"]) <= 4
    assert r.summary["theory_a"] == pytest.approx(0.7943497, abs=1e-6)
    assert r.summary["max_abs_z_exact"] <= 5  # about 40 correlated times
    assert r.summary["a_exact"] == pytest.approx(SERW_1D_LIMIT, abs=0.03)
    assert len(r.figure().axes) == 2
    again = serw_experiment(
        n_steps=20_000,
        n_walkers=2000,
        t_min=200,
        perturbed_walkers=1000,
        delta=0.05,
        progress=False,
        seed=3,
    )
    assert again.summary == r.summary
    plain = serw_experiment(
        n_steps=2000, n_walkers=200, t_min=100, perturbed_model="none", progress=False
    )
    assert "perturbed_msd" not in plain.table.columns and "v_sim" not in plain.summary
    with pytest.raises(UsageError, match="perturbed_model"):
        serw_experiment(perturbed_model="IV", progress=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("d", [1, 2])
def test_serw_diffusion_experiment_small(d: int) -> None:
    r = serw_diffusion_experiment(
        d=d, deltas=(0.3, 0.1), n_steps=1000, n_walkers=2000, theory_min_delta=1e-3, progress=False
    )
    assert list(r.table.columns) == ["model", "delta", "v_sim", "v_sim_stderr", "v_theory", "z"]
    assert len(r.table) == 6 + (d >= 2)
    assert r.summary["max_abs_z"] <= 5  # several points: 5 standard errors
    key = "v_log_delta_II_log_pareto" if d == 1 else "enhancement_slope_I"
    assert r.summary[key] > 0
    assert len(r.figure().axes) == 2
    with pytest.raises(UsageError, match="deltas"):
        serw_diffusion_experiment(deltas=(0.0,), progress=False)
    with pytest.raises(UsageError, match="models"):
        serw_diffusion_experiment(models=("IV",), progress=False)  # type: ignore[arg-type]
