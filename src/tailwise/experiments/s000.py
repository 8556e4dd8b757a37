"""Source 000's claims: the ESD of a weight matrix is Marchenko-Pastur at initialization and
grows a heavy (power-law) tail in training (ch. 1, §1.2-1.3).

Experiments (:data:`EXPERIMENTS`):

- ``000-esd-mp-to-heavy-tail``: an MLP on digits, its hidden layers' ESDs at initialization
  (KS distance to the Marchenko-Pastur law, spikes past the bulk edge) and after training
  (the power-law alpha of :func:`tailwise.analyze`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tailwise.experiments.model import Analysis, Config, Experiment, Metrics
from tailwise.experiments.verdicts import combine, mean_interval, verdict_below

__all__ = ["EXPERIMENTS", "analyze_esd", "esd_trial", "mp_ks_distance"]

#: The largest KS distance to the MP law that still counts as "follows MP".
KS_BOUND = 0.1
#: Layers with fewer eigenvalues than this are left out (their alpha is not a tail fit).
MIN_EIGENVALUES = 50


def mp_ks_distance(evals: np.ndarray, q: float) -> float:
    """Kolmogorov-Smirnov distance between the eigenvalues (scaled to mean 1) and the
    Marchenko-Pastur law of ratio ``q = N / M >= 1`` and variance 1 (source 000 eq. 1.6),
    whose CDF is integrated numerically on a fine grid of its support.

    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((800, 200))
    >>> bool(mp_ks_distance(np.linalg.eigvalsh(w.T @ w), 4.0) < 0.05)
    True
    """
    from tailwise.spectral.mp import marchenko_pastur_edges, marchenko_pastur_pdf

    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x * (x.size / x.sum())
    lo, hi = marchenko_pastur_edges(q, 1.0)
    grid = np.linspace(lo, hi, 20_001)
    density = marchenko_pastur_pdf(grid, q, 1.0)
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    model = np.interp(x, grid, cdf, left=0.0, right=1.0)
    n = x.size
    upper = np.arange(1, n + 1) / n - model
    lower = model - np.arange(n) / n
    return float(max(upper.max(), lower.max()))


def _hidden_rows(table: pd.DataFrame) -> pd.DataFrame:
    fitted = table[(table["status"] == "ok") & table["alpha"].notna()]
    return fitted[fitted["M"] >= MIN_EIGENVALUES]


def esd_trial(config: Config, seed: int, artifacts: Path) -> Metrics:
    """An MLP on digits: ESD diagnostics of its layers with at least
    :data:`MIN_EIGENVALUES` eigenvalues before and after ``epochs`` of SGD."""
    import torch

    from tailwise.data import digits_loaders
    from tailwise.models import MLP
    from tailwise.spectral.analyze import analyze
    from tailwise.spectral.esd import eigenvalues
    from tailwise.train import evaluate, fit

    torch.manual_seed(seed)
    hidden = [int(w) for w in config["hidden"]]
    model = MLP(64, hidden, 10)
    before = _hidden_rows(analyze(model, progress=False))
    distances = []
    for name in before["name"]:
        weight = dict(model.named_parameters())[name].detach()
        [(_, esd)] = eigenvalues(weight)
        distances.append(mp_ks_distance(esd.evals, esd.N / esd.M))
    train, test = digits_loaders(batch_size=int(config["batch_size"]), seed=seed, flatten=True)
    fit(model, train, epochs=int(config["epochs"]), lr=float(config["lr"]), momentum=0.9,
        progress=False, seed=seed)  # fmt: skip
    after = _hidden_rows(analyze(model, progress=False))
    _, accuracy = evaluate(model, test)
    pd.concat([before.assign(when="init"), after.assign(when="trained")]).to_csv(
        artifacts / "layers.csv", index=False
    )
    return {
        "alpha_init": float(before["alpha"].mean()),
        "alpha_trained": float(after["alpha"].mean()),
        "ks_init_max": float(max(distances)),
        "spikes_init": int(before["num_spikes"].sum()),
        "spikes_trained": int(after["num_spikes"].sum()),
        "layers": len(before),
        "test_accuracy": float(accuracy),
    }


def analyze_esd(trials: pd.DataFrame) -> Analysis:
    """Two predicates over seeds: the largest KS distance to MP at initialization is below
    :data:`KS_BOUND`; the mean layer alpha falls in training (paired by seed)."""
    ks = mean_interval(trials["ks_init_max"])
    trials = trials.assign(alpha_change=trials["alpha_trained"] - trials["alpha_init"])
    change = mean_interval(trials["alpha_change"])
    verdicts = [verdict_below(ks, KS_BOUND), verdict_below(change, 0.0)]
    table = pd.DataFrame(
        [
            {"quantity": name, "mean": i.estimate, "low": i.low, "high": i.high, "seeds": i.n}
            for name, i in (
                ("max KS distance to MP, init", ks),
                ("mean alpha, init", mean_interval(trials["alpha_init"])),
                ("mean alpha, trained", mean_interval(trials["alpha_trained"])),
                ("alpha change", change),
                ("spikes past the MP edge, init", mean_interval(trials["spikes_init"])),
                ("spikes past the MP edge, trained", mean_interval(trials["spikes_trained"])),
                ("test accuracy", mean_interval(trials["test_accuracy"])),
            )
        ]
    )
    statement = (
        f"max KS distance of the initial ESDs to MP = {ks.text(3)} (claim < {KS_BOUND:g}): "
        f"{verdicts[0]}; mean alpha change in training = {change.text(3)} (claim < 0): "
        f"{verdicts[1]}"
    )

    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        for _, row in trials.iterrows():
            left.plot([0, 1], [row["alpha_init"], row["alpha_trained"]], "o-", color="C0",
                      alpha=0.6)  # fmt: skip
        left.axhspan(2, 6, color="0.92", label="HT-SR range [2, 6]")
        left.set_xticks([0, 1], ["init", "trained"])
        left.set(ylabel="mean layer alpha", title="power-law alpha per seed")
        left.legend(fontsize="small")
        x = np.arange(len(trials))
        right.bar(x, trials["ks_init_max"], color="C1")
        right.axhline(KS_BOUND, color="k", ls="--", label=f"bound {KS_BOUND:g}")
        right.set_xticks(x, [f"seed {s}" for s in trials["seed"]])
        right.set(ylabel="max KS distance to MP", title="initial ESD vs Marchenko-Pastur")
        right.legend(fontsize="small")

    return Analysis(
        table,
        combine(verdicts),
        statement,
        draw,
        "000 §1.2-1.3 (after Martin & Mahoney): the ESD of a randomly initialized layer "
        "follows the Marchenko-Pastur law (eq. 1.6, bulk edge (1 + 1/sqrt(Q))^2 sigma^2); "
        "training moves mass into a power-law tail, alpha typically in [2, 6] for "
        "well-trained layers and below 2 for over-trained ones. No table of numbers.",
    )


ESD_MP = Experiment(
    name="000-esd-mp-to-heavy-tail",
    source="000",
    claim=(
        "A layer's ESD follows the Marchenko-Pastur law at initialization and develops a "
        "heavy power-law tail (smaller alpha) in training"
    ),
    location="§1.2-1.3, eq. 1.6",
    grids={
        "quick": [{"hidden": [512, 256], "epochs": 20, "batch_size": 16, "lr": 0.1}],
    },
    trial=esd_trial,
    analyze=analyze_esd,
    seeds=3,
    quick_minutes=0.5,
    substitution="MLP 64-512-256-10 on digits, 20 epochs",
)

EXPERIMENTS: tuple[Experiment, ...] = (ESD_MP,)
