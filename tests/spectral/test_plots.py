"""Tests of the ESD and alpha figures (tailwise.spectral.plots)."""

from __future__ import annotations

import base64
import io
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, StepPatch
from numpy.typing import NDArray

from tailwise.spectral.mp import marchenko_pastur_edges, marchenko_pastur_pdf
from tailwise.spectral.plots import figure_to_data_uri, plot_alpha, plot_esd_loglog, plot_esd_mp


def heavy_tailed_evals(n: int = 300, m: int = 150, seed: int = 0) -> NDArray[np.float64]:
    """Eigenvalues (ascending) of W^T W for a Student-t(3) matrix W of shape n x m."""
    w = np.random.default_rng(seed).standard_t(3, size=(n, m))
    return np.linalg.eigvalsh(w.T @ w)


def hill_fit(evals: NDArray[np.float64]) -> tuple[float, float]:
    """(alpha, xmin) by the Hill / median estimator (REFERENCES §1)."""
    values = np.sort(evals)
    i = values.size // 2
    k = values.size - i
    alpha = 1 + k / (np.log(values[i:]).sum() - k * np.log(values[i]))
    return float(alpha), float(values[i])


def lines_by_gid(fig: Figure, gid: str) -> list[Line2D]:
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]


def patches_by_gid(fig: Figure, gid: str) -> list[Patch]:
    return [patch for ax in fig.axes for patch in ax.patches if patch.get_gid() == gid]


# --- plot_esd_loglog ------------------------------------------------------------------------


def test_loglog_draws_histogram_fit_line_and_xmin_marker() -> None:
    evals = heavy_tailed_evals()
    alpha, xmin = hill_fit(evals)
    fig = plot_esd_loglog(evals, alpha=alpha, xmin=xmin, title="layer")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert patches_by_gid(fig, "esd-histogram")

    (fit,) = lines_by_gid(fig, "power-law-fit")
    x, y = (np.asarray(v, dtype=float) for v in fit.get_data())
    assert x[0] == pytest.approx(xmin) and x[-1] == pytest.approx(evals.max())
    # Slope -alpha on log-log axes.
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert slope == pytest.approx(-alpha, rel=1e-9)
    # The line carries the tail's share of the density over [xmin, max].
    share = np.mean(evals >= xmin)
    assert np.trapezoid(y, x) == pytest.approx(share, rel=1e-3)

    (marker,) = lines_by_gid(fig, "xmin")
    assert np.allclose(np.asarray(marker.get_xdata(), dtype=float), xmin)
    assert "layer" in ax.get_title()


def test_loglog_fit_line_stops_at_xmax() -> None:
    evals = heavy_tailed_evals()
    alpha, xmin = hill_fit(evals)
    xmax = float(np.quantile(evals, 0.95))
    fig = plot_esd_loglog(evals, alpha=alpha, xmin=xmin, xmax=xmax)
    (fit,) = lines_by_gid(fig, "power-law-fit")
    assert np.asarray(fit.get_xdata(), dtype=float)[-1] == pytest.approx(xmax)


def test_loglog_nan_alpha_draws_no_line_and_says_so() -> None:
    evals = heavy_tailed_evals()
    _, xmin = hill_fit(evals)
    fig = plot_esd_loglog(evals, alpha=math.nan, xmin=xmin, title="dense")
    assert lines_by_gid(fig, "power-law-fit") == []
    assert len(lines_by_gid(fig, "xmin")) == 1
    title = fig.axes[0].get_title()
    assert "dense" in title and "no power-law fit" in title


def test_loglog_nan_xmin_has_no_marker() -> None:
    fig = plot_esd_loglog(heavy_tailed_evals(), alpha=3.0, xmin=math.nan)
    assert lines_by_gid(fig, "xmin") == [] and lines_by_gid(fig, "power-law-fit") == []
    assert "no xmin" in fig.axes[0].get_title()


@pytest.mark.parametrize(
    "evals",
    [[], [2.5], [2.0, 2.0, 2.0], [0.0, 0.0], [-1e-14, 0.0, 1e-3, 4.0], [np.nan, np.inf, 1.0]],
    ids=["empty", "one", "equal", "zeros", "rounding", "non-finite"],
)
def test_loglog_tiny_or_degenerate_esd(evals: list[float]) -> None:
    fig = plot_esd_loglog(evals, alpha=2.5, xmin=1.0, title="tiny")
    assert figure_to_data_uri(fig).startswith("data:image/png;base64,")


def test_dollar_in_title_is_literal() -> None:
    # A '$' must not switch Matplotlib to mathtext (an unbalanced one would fail to render).
    fig = plot_esd_loglog(heavy_tailed_evals(), alpha=3.0, xmin=50.0, title="blocks.$0$.w$")
    assert figure_to_data_uri(fig).startswith("data:image/png;base64,")


def test_draws_into_given_axes() -> None:
    fig = Figure()
    left, right = fig.subplots(1, 2)
    evals = heavy_tailed_evals()
    assert plot_esd_loglog(evals, alpha=3.0, xmin=float(np.median(evals)), ax=left) is fig
    assert plot_esd_mp(evals, q=2.0, mp_sigma=1.0, ax=right) is fig
    assert len(fig.axes) == 2
    assert lines_by_gid(fig, "power-law-fit") and lines_by_gid(fig, "mp-density")


def test_draws_into_subfigure_axes() -> None:
    fig = Figure()
    sub = fig.add_subfigure(fig.add_gridspec(1, 2)[0])
    ax = sub.add_subplot()
    assert plot_esd_mp(heavy_tailed_evals(), q=2.0, mp_sigma=1.0, ax=ax) is fig


# --- plot_esd_mp ----------------------------------------------------------------------------


def test_mp_draws_density_and_bulk_edge() -> None:
    evals = heavy_tailed_evals(300, 150)
    fig = plot_esd_mp(evals, q=2.0, mp_sigma=0.9, title="mp")
    (curve,) = lines_by_gid(fig, "mp-density")
    x, y = (np.asarray(v, dtype=float) for v in curve.get_data())
    np.testing.assert_allclose(y, marchenko_pastur_pdf(x, 2.0, 0.9))
    (edge,) = lines_by_gid(fig, "mp-lambda-plus")
    lam_plus = marchenko_pastur_edges(2.0, 0.9)[1]
    assert np.allclose(np.asarray(edge.get_xdata(), dtype=float), lam_plus)

    # The histogram is a density of the ESD scaled to mean 1.
    (histogram,) = patches_by_gid(fig, "esd-histogram")
    assert isinstance(histogram, StepPatch)
    heights, edges = (np.asarray(v, dtype=float) for v in histogram.get_data()[:2])
    widths, centres = np.diff(edges), (edges[:-1] + edges[1:]) / 2
    assert np.sum(widths * heights) == pytest.approx(1.0)
    assert np.sum(centres * widths * heights) == pytest.approx(1.0, rel=0.05)
    # Heavy-tailed: eigenvalues beyond the bulk edge are marked.
    (spikes,) = lines_by_gid(fig, "mp-spikes")
    assert np.asarray(spikes.get_xdata()).size == int(np.sum(evals / evals.mean() > lam_plus))


def test_mp_nan_sigma_means_one_and_small_q_is_inverted() -> None:
    evals = heavy_tailed_evals()
    fig = plot_esd_mp(evals, q=0.5, mp_sigma=math.nan)
    (curve,) = lines_by_gid(fig, "mp-density")
    x, y = (np.asarray(v, dtype=float) for v in curve.get_data())
    np.testing.assert_allclose(y, marchenko_pastur_pdf(x, 2.0, 1.0))


def test_mp_square_matrix_keeps_the_bulk_visible() -> None:
    # Q = 1: the MP density diverges at 0; the y axis must still show the bulk.
    w = np.random.default_rng(1).standard_normal((200, 200))
    fig = plot_esd_mp(np.linalg.eigvalsh(w.T @ w), q=1.0, mp_sigma=1.0)
    assert fig.axes[0].get_ylim()[1] < 20


def test_mp_unknown_q_draws_histogram_only() -> None:
    fig = plot_esd_mp(heavy_tailed_evals(), q=math.nan, mp_sigma=1.0, title="t")
    assert lines_by_gid(fig, "mp-density") == [] and lines_by_gid(fig, "mp-lambda-plus") == []
    assert patches_by_gid(fig, "esd-histogram")
    assert "no MP fit" in fig.axes[0].get_title()


@pytest.mark.parametrize("evals", [[], [3.0], [0.0, 0.0], [1.0, 1.0, 1.0]])
def test_mp_tiny_or_degenerate_esd(evals: list[float]) -> None:
    fig = plot_esd_mp(evals, q=1.5, mp_sigma=1.0)
    assert figure_to_data_uri(fig).startswith("data:image/png;base64,")


# --- plot_alpha -----------------------------------------------------------------------------


def alpha_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e"],
            "alpha": [3.0, 7.5, np.nan, 1.5, 4.0],
            "warning": ["", "under-trained", "", "over-trained", ""],
            "status": ["ok", "ok", "skipped", "ok", "failed"],
        }
    )


def test_alpha_plot_band_points_and_colours() -> None:
    fig = plot_alpha(alpha_frame())
    (ax,) = fig.axes
    band = [p for p in ax.patches if p.get_gid() == "alpha-band"]
    assert len(band) == 1
    y0, y1 = band[0].get_extents().transformed(ax.transData.inverted()).intervaly
    assert (y0, y1) == pytest.approx((2.0, 6.0))

    points = {c.get_gid(): c for c in ax.collections if isinstance(c, PathCollection)}
    assert set(points) == {"alpha-ok", "alpha-under-trained", "alpha-over-trained"}
    # x = row position; the failed row 'e' (alpha 4.0) and skipped row 'c' are not drawn.
    np.testing.assert_allclose(
        np.asarray(points["alpha-ok"].get_offsets(), dtype=float), [[0, 3.0]]
    )
    np.testing.assert_allclose(
        np.asarray(points["alpha-under-trained"].get_offsets(), dtype=float), [[1, 7.5]]
    )
    np.testing.assert_allclose(
        np.asarray(points["alpha-over-trained"].get_offsets(), dtype=float), [[3, 1.5]]
    )
    colours = {
        gid: tuple(np.asarray(c.get_facecolor(), dtype=float)[0]) for gid, c in points.items()
    }
    assert len(set(colours.values())) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "d"]


def test_alpha_plot_without_fitted_layers() -> None:
    df = pd.DataFrame({"name": ["x"], "alpha": [np.nan], "status": ["failed"], "warning": [""]})
    fig = plot_alpha(df)
    assert not [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert figure_to_data_uri(fig).startswith("data:image/png;base64,")


def test_alpha_plot_needs_alpha_column() -> None:
    with pytest.raises(ValueError, match="alpha"):
        plot_alpha(pd.DataFrame({"name": ["x"]}))


# --- figure_to_data_uri ---------------------------------------------------------------------


def test_png_data_uri_decodes() -> None:
    fig = plot_esd_loglog(heavy_tailed_evals(), alpha=3.0, xmin=50.0)
    uri = figure_to_data_uri(fig)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    image = matplotlib.image.imread(io.BytesIO(base64.b64decode(uri[len(prefix) :])), format="png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert fig.axes == []  # closed: cleared


def test_svg_data_uri_decodes() -> None:
    uri = figure_to_data_uri(plot_esd_mp(heavy_tailed_evals(), q=2.0, mp_sigma=1.0), "svg")
    prefix = "data:image/svg+xml;base64,"
    assert uri.startswith(prefix)
    assert b"<svg" in base64.b64decode(uri[len(prefix) :])


def test_data_uri_closes_pyplot_figures() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_esd_mp(heavy_tailed_evals(), q=2.0, mp_sigma=1.0, ax=ax)
    figure_to_data_uri(fig)
    assert not plt.fignum_exists(fig.number)


def test_data_uri_rejects_unknown_format() -> None:
    fig = Figure()
    with pytest.raises(ValueError, match="fmt"):
        figure_to_data_uri(fig, "jpeg")  # type: ignore[arg-type]
