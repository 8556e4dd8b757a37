"""Figures of empirical spectral densities (ESDs) and of alpha per layer.

Every function draws with Matplotlib's object-oriented API on the Agg canvas (never
``pyplot.show``), draws into ``ax`` when one is given (otherwise into a new figure) and
returns the :class:`matplotlib.figure.Figure` it drew on. Artists that tests and callers may
want to find carry a ``gid``:

- ``"esd-histogram"`` (a filled ``StepPatch``), ``"power-law-fit"`` (line), ``"xmin"``
  (vertical line) in :func:`plot_esd_loglog`;
- ``"esd-histogram"``, ``"mp-density"`` (line), ``"mp-lambda-plus"`` (vertical line),
  ``"mp-spikes"`` (rug of eigenvalues above lambda_+) in :func:`plot_esd_mp`;
- ``"alpha-band"`` (the shaded [2, 6] band) and ``"alpha-<warning>"`` scatter collections
  (``"alpha-ok"``, ``"alpha-under-trained"``, ``"alpha-over-trained"``) in :func:`plot_alpha`.

Example::

    >>> import numpy as np
    >>> from tailwise.spectral.plots import plot_esd_loglog, figure_to_data_uri
    >>> w = np.random.default_rng(0).standard_normal((200, 100))
    >>> evals = np.linalg.eigvalsh(w.T @ w)
    >>> fig = plot_esd_loglog(evals, alpha=4.0, xmin=float(np.quantile(evals, 0.8)))
    >>> figure_to_data_uri(fig).startswith("data:image/png;base64,")
    True
"""

from __future__ import annotations

import base64
import io
import math
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from tailwise._plotting import new_axes, plain_text
from tailwise.spectral.mp import marchenko_pastur_edges, marchenko_pastur_pdf

__all__ = ["figure_to_data_uri", "plot_alpha", "plot_esd_loglog", "plot_esd_mp"]

# Source 000: alpha in [2, 6] is the well-trained range; outside it the layer gets a warning.
ALPHA_BAND = (2.0, 6.0)

_WARNING_COLOURS = {
    "": ("tab:blue", "ok"),
    "under-trained": ("tab:orange", "under-trained (α > 6)"),
    "over-trained": ("tab:red", "over-trained (α < 2)"),
}
_MAX_TICK_LABELS = 40


def _short(name: str, limit: int = 24) -> str:
    """A layer name cut to its last ``limit`` characters (the informative end), for ticks."""
    if len(name) > limit:
        name = "…" + name[-(limit - 1) :]
    return name.replace("$", r"\$")


def _finite(evals: ArrayLike) -> NDArray[np.float64]:
    """Finite entries of ``evals`` as a flat float64 array."""
    values = np.asarray(evals, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _is_number(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _join_title(title: str | None, note: str | None) -> str:
    parts = [plain_text(title)] if title else []
    if note:
        parts.append(f"({note})")
    return " ".join(parts)


def _log_bins(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Log-spaced bin edges covering ``values`` (all > 0); widened when they are all equal."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo * (1 + 1e-9):
        lo, hi = lo / 2, hi * 2
    count = int(np.clip(2 * np.sqrt(values.size), 5, 100))
    return np.logspace(np.log10(lo), np.log10(hi), count + 1)


def _power_law_scale(alpha: float, lower: float, upper: float, share: float) -> float:
    """C such that C x^-alpha integrates to ``share`` over [lower, upper].

    The histogram is a density over all eigenvalues, and the tail holds ``share`` of them, so
    the line carries the tail's share of the mass over the range it is drawn on.
    """
    if upper <= lower:
        # A one-point tail: match the density of its own log bin instead.
        return share * lower ** (alpha - 1)
    if abs(alpha - 1.0) < 1e-12:
        integral = math.log(upper / lower)
    else:
        integral = (upper ** (1 - alpha) - lower ** (1 - alpha)) / (1 - alpha)
    return share / integral


def plot_esd_loglog(
    evals: ArrayLike,
    *,
    alpha: float,
    xmin: float,
    xmax: float | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Log-log empirical spectral density with the fitted power-law tail.

    Args:
        evals: eigenvalues of W^T W, any shape (flattened); non-finite and non-positive
            values are left out (they have no logarithm).
        alpha: fitted power-law exponent, p(x) ∝ x^-alpha for x >= xmin; NaN when no fit
            (then no line is drawn and the title says so).
        xmin: lower end of the power-law tail (same units as ``evals``); NaN for none.
        xmax: upper end of the fit, or None for the largest eigenvalue.
        title: axes title (a layer name, say); ``$`` is shown literally.
        ax: axes to draw into; a new 6 x 4 inch figure when None.

    Returns:
        The figure drawn on. The histogram is a density over log-spaced bins; the line runs
        from ``xmin`` to ``xmax`` (or the largest eigenvalue) and integrates over that range
        to the share of eigenvalues that lie in it, so it sits on the histogram's tail.
    """
    fig, ax = new_axes(ax, (6.0, 4.0))
    values = _finite(evals)
    values = values[values > 0]
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    if values.size == 0:
        ax.text(
            0.5, 0.5, "no positive eigenvalues", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_title(_join_title(title, "empty ESD"))
        return fig

    edges = _log_bins(values)
    density, _ = np.histogram(values, bins=edges, density=True)
    nonzero = density > 0
    ax.set_xscale("log")
    ax.set_yscale("log")
    ymin, ymax = float(density[nonzero].min()), float(density[nonzero].max())
    floor = ymin / 5  # empty bins sit on the bottom of the log axis (log 0 does not exist)
    ax.stairs(
        np.where(nonzero, density, floor),
        edges,
        baseline=floor,
        fill=True,
        color="tab:blue",
        alpha=0.55,
        label=f"ESD ({values.size} λ)",
        gid="esd-histogram",
    )
    ax.set_ylim(floor, ymax * 5)

    note: str | None = None
    if _is_number(xmin) and xmin > 0:
        ax.axvline(
            xmin,
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label=f"xmin = {xmin:.3g}",
            gid="xmin",
        )
    else:
        note = "no xmin"

    if not _is_number(alpha):
        note = "no power-law fit"
    elif note is None:
        upper = float(xmax) if xmax is not None and _is_number(xmax) else float(values.max())
        in_tail = (values >= xmin) & (values <= upper)
        if not in_tail.any():
            note = "empty tail"
        else:
            share = float(in_tail.mean())
            scale = _power_law_scale(alpha, xmin, upper, share)
            x = np.logspace(np.log10(xmin), np.log10(max(upper, xmin)), 100)
            ax.plot(
                x,
                scale * x ** (-alpha),
                color="tab:red",
                linewidth=2,
                label=f"power law α = {alpha:.3g}",
                gid="power-law-fit",
            )
    ax.set_title(_join_title(title, note))
    ax.legend(loc="lower left", fontsize="small")
    return fig


def plot_esd_mp(
    evals: ArrayLike,
    *,
    q: float,
    mp_sigma: float,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Linear histogram of the ESD scaled to mean 1 with the fitted Marchenko-Pastur density.

    Args:
        evals: eigenvalues of W^T W, any shape; non-finite values are left out and tiny
            negative ones (rounding of a positive semi-definite spectrum) are clipped to 0.
        q: aspect ratio Q = N / M; a value below 1 is read as M / N. NaN: no MP curve.
        mp_sigma: fitted MP scale sigma on the mean-1 scale (source 000 eq. 1.6); NaN or
            non-positive means 1.0 (the scale of a pure MP bulk with mean 1).
        title: axes title; ``$`` is shown literally.
        ax: axes to draw into; a new 6 x 4 inch figure when None.

    Returns:
        The figure drawn on, with the density ``marchenko_pastur_pdf(x, q, sigma)``, the bulk
        edge lambda_+ as a vertical line and the eigenvalues above it as a rug.
    """
    fig, ax = new_axes(ax, (6.0, 4.0))
    values = np.clip(_finite(evals), 0.0, None)
    ax.set_xlabel("λ / mean(λ)")
    ax.set_ylabel("density")
    mean = float(values.mean()) if values.size else 0.0
    if mean <= 0:
        ax.text(
            0.5, 0.5, "no positive eigenvalues", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_title(_join_title(title, "empty ESD"))
        return fig
    scaled = values / mean
    top = float(scaled.max())

    has_mp = _is_number(q) and q > 0
    sigma = float(mp_sigma) if _is_number(mp_sigma) and mp_sigma > 0 else 1.0
    q_eff = max(q, 1.0 / q) if has_mp else math.nan
    lam_minus, lam_plus = marchenko_pastur_edges(q_eff, sigma) if has_mp else (0.0, top)

    # Bins sized to resolve the bulk (about 2 sqrt(n) of them across it, at most 100), even
    # when a few spikes stretch the range far to the right.
    bulk_bins = float(np.clip(2 * np.sqrt(scaled.size), 10, 100))
    bulk_top = min(top, lam_plus) if has_mp else top
    width = max(bulk_top / bulk_bins, top / 1000, 1e-12)
    count = int(np.clip(math.ceil(max(top, lam_plus) / width), 5, 1000))
    density, edges = np.histogram(scaled, bins=count, range=(0.0, max(top, 1e-12)), density=True)
    ax.stairs(
        density,
        edges,
        fill=True,
        color="tab:blue",
        alpha=0.55,
        label=f"ESD ({values.size} λ)",
        gid="esd-histogram",
    )
    ytop = float(density.max()) if density.size else 1.0

    note: str | None = None
    if has_mp:
        x = np.linspace(0.0, max(top, lam_plus) * 1.02, 2000)[1:]
        pdf = marchenko_pastur_pdf(x, q_eff, sigma)
        ax.plot(
            x,
            pdf,
            color="tab:green",
            linewidth=2,
            label=f"MP Q = {q_eff:.3g}, σ = {sigma:.3g}",
            gid="mp-density",
        )
        ax.axvline(
            lam_plus,
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label=f"λ+ = {lam_plus:.3g}",
            gid="mp-lambda-plus",
        )
        # The MP density diverges at 0 when Q = 1: scale the y axis to the bulk's interior.
        interior = x >= lam_minus + 0.05 * (lam_plus - lam_minus)
        if interior.any():
            ytop = max(ytop, float(pdf[interior].max()))
        spikes = scaled[scaled > lam_plus]
        if spikes.size:
            ax.plot(
                spikes,
                np.zeros_like(spikes),
                linestyle="none",
                marker="|",
                markersize=14,
                color="tab:red",
                label=f"above λ+: {spikes.size}",
                gid="mp-spikes",
                clip_on=False,
            )
    else:
        note = "no MP fit: Q unknown"
    ax.set_xlim(0.0, max(top, lam_plus) * 1.05)
    ax.set_ylim(0.0, ytop * 1.15)
    ax.set_title(_join_title(title, note))
    ax.legend(loc="upper right", fontsize="small")
    return fig


def plot_alpha(df: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Alpha per layer in layer (row) order, the [2, 6] band shaded, points coloured by warning.

    Args:
        df: analysis table (``tailwise.spectral.analyze.analyze``); uses the columns
            ``alpha``, and when present ``name``, ``status`` (only ``"ok"`` rows are drawn) and
            ``warning``. The x position of a layer is its row position in ``df``, the same
            number as the "#" column of the HTML report.
        ax: axes to draw into; a new 10 x 3.6 inch figure when None.

    Returns:
        The figure drawn on.
    """
    if "alpha" not in df.columns:
        raise ValueError("plot_alpha: the table has no 'alpha' column")
    fig, ax = new_axes(ax, (10.0, 3.6))
    positions = np.arange(len(df))
    alpha = pd.to_numeric(df["alpha"], errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(alpha)
    if "status" in df.columns:
        keep &= (df["status"] == "ok").to_numpy()
    warnings = (
        df["warning"].fillna("").astype(str).to_numpy()
        if "warning" in df.columns
        else np.full(len(df), "", dtype=object)
    )

    ax.axhspan(*ALPHA_BAND, color="tab:green", alpha=0.12, label="2 ≤ α ≤ 6", gid="alpha-band")
    ax.set_xlabel("layer (row #)")
    ax.set_ylabel("α")
    if not keep.any():
        ax.text(
            0.5, 0.5, "no layer with a fitted α", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_title("α per layer")
        return fig

    ax.plot(positions[keep], alpha[keep], color="0.6", linewidth=0.8, zorder=1)
    known = set(_WARNING_COLOURS)
    for warning, (colour, label) in _WARNING_COLOURS.items():
        chosen = keep & (warnings == warning)
        if chosen.any():
            ax.scatter(
                positions[chosen],
                alpha[chosen],
                color=colour,
                label=label,
                zorder=2,
                gid=f"alpha-{warning or 'ok'}",
            )
    other = keep & ~np.isin(warnings, list(known))
    if other.any():
        ax.scatter(
            positions[other],
            alpha[other],
            color="tab:purple",
            label="other warning",
            zorder=2,
            gid="alpha-other",
        )

    if keep.sum() <= _MAX_TICK_LABELS and "name" in df.columns:
        names = df["name"].astype(str).to_numpy()
        ax.set_xticks(positions[keep])
        ax.set_xticklabels(
            [_short(str(n)) for n in names[keep]], rotation=40, ha="right", fontsize="x-small"
        )
    ax.set_title(f"α per layer ({int(keep.sum())} fitted of {len(df)})")
    fitted = alpha[keep]
    ax.set_ylim(
        min(ALPHA_BAND[0], float(fitted.min())) - 0.5, max(ALPHA_BAND[1], float(fitted.max())) + 0.5
    )
    # Outside the axes: inside it would hide points at the top of the range.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig


def figure_to_data_uri(fig: Figure, fmt: Literal["png", "svg"] = "png", *, dpi: int = 100) -> str:
    """Encode ``fig`` as a base64 ``data:`` URI (PNG or SVG) and close it.

    Args:
        fig: figure to encode; closed afterwards (released from pyplot if it was opened
            there, and cleared), also when encoding fails.
        fmt: ``"png"`` or ``"svg"``.
        dpi: resolution of a PNG, dots per inch.

    Returns:
        ``"data:image/png;base64,..."`` or ``"data:image/svg+xml;base64,..."``.
    """
    mime = {"png": "image/png", "svg": "image/svg+xml"}.get(fmt)
    if mime is None:
        raise ValueError(f"figure_to_data_uri: fmt must be 'png' or 'svg', got {fmt!r}")
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=_no_metadata(fmt))
    finally:
        _close(fig)
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _no_metadata(fmt: str) -> dict[str, str | None]:
    """Metadata that keeps the output reproducible (no software version or date)."""
    if fmt == "svg":
        return {"Date": None, "Creator": None}
    return {"Software": None}


def _close(fig: Figure) -> None:
    """Release ``fig``: from pyplot's registry if it is managed there, then its artists."""
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt  # only for figures pyplot made; keeps import light

        plt.close(fig)
    fig.clear()
