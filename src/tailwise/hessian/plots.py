"""Figures of Hessian spectra: the SLQ spectral density and a list of eigenvalues.

Like :mod:`tailwise.spectral.plots`, every function draws with Matplotlib's object-oriented
API on the Agg canvas (no pyplot state), into ``ax`` when one is given (otherwise into a new
figure), and returns the :class:`matplotlib.figure.Figure` it drew on. Artists carry a
``gid`` for tests and callers:

- ``"density"`` (the smoothed density, a line), ``"nodes"`` (rug of the quadrature nodes at
  the bottom of the axes) and ``"eigenvalues"`` (vertical lines at given eigenvalues) in
  :func:`plot_density`;
- ``"eigenvalues"`` (points, by rank) and ``"zero"`` (the line λ = 0) in
  :func:`plot_eigenvalues`.

Example::

    >>> import numpy as np, torch
    >>> from tailwise.hessian.trace import spectral_density
    >>> class Dense:
    ...     def __init__(self, a):
    ...         self.a, self.num_params, self.dtype, self.device = a, len(a), a.dtype, a.device
    ...     def matmat(self, v):
    ...         return self.a @ v
    >>> a = torch.diag(torch.linspace(-1.0, 10.0, 100, dtype=torch.float64))
    >>> fig = plot_density(spectral_density(Dense(a), num_iters=20, num_runs=2))
    >>> fig.axes[0].get_yscale()
    'log'
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from tailwise._plotting import new_axes, plain_text
from tailwise.hessian.trace import SpectralDensity

__all__ = ["plot_density", "plot_eigenvalues"]

# On a log axis, the density is drawn down to this fraction of its peak (PyHessian's figure
# shows about eight decades); the Gaussian tails below it would only stretch the axis.
_LOG_FLOOR = 1e-8


def plot_density(
    density: SpectralDensity,
    *,
    ax: Axes | None = None,
    log: bool = True,
    title: str | None = None,
    sigma: float | None = None,
    num_points: int = 1000,
    eigenvalues: ArrayLike | None = None,
) -> Figure:
    """The smoothed SLQ spectral density, with its quadrature nodes as a rug.

    Args:
        density: from :func:`tailwise.hessian.trace.spectral_density`.
        ax: axes to draw into; a new 6 x 4 inch figure when None.
        log: log-scale y axis (as in PyHessian's figure, where the outliers' mass is orders
            of magnitude below the bulk's); values under 1e-8 of the peak sit on the bottom.
        title: axes title; ``$`` is shown literally.
        sigma, num_points: passed to :meth:`SpectralDensity.on_grid` (Gaussian width in
            eigenvalue units, default 1 % of the spectral range; grid size).
        eigenvalues: optional exact eigenvalues (e.g. the top ones from power iteration) drawn
            as dashed vertical lines, to compare with the density's outliers.

    Returns:
        The figure drawn on.
    """
    fig, ax = new_axes(ax, (6.0, 4.0))
    grid, values = density.on_grid(sigma=sigma, num_points=num_points)
    peak = float(values.max())
    if log:
        floor = peak * _LOG_FLOOR
        ax.set_yscale("log")
        ax.set_ylim(floor, peak * 3)
        values = np.maximum(values, floor)
    else:
        ax.set_ylim(0.0, peak * 1.1)
    ax.plot(grid, values, color="tab:blue", linewidth=1.5, label="SLQ density", gid="density")

    nodes = density.nodes[np.isfinite(density.nodes)]
    ax.plot(
        nodes,
        np.zeros_like(nodes),
        linestyle="none",
        marker="|",
        markersize=10,
        color="tab:orange",
        alpha=0.6,
        transform=ax.get_xaxis_transform(),  # x in data, y in axes units: the bottom edge
        label=f"nodes ({density.num_runs} runs x {density.nodes.shape[1]} steps)",
        gid="nodes",
        clip_on=False,
    )
    if eigenvalues is not None:
        marks = np.asarray(eigenvalues, dtype=np.float64).ravel()
        marks = marks[np.isfinite(marks)]
        for index, value in enumerate(marks):
            ax.axvline(
                float(value),
                color="tab:red",
                linestyle="--",
                linewidth=1.0,
                label=f"eigenvalues ({marks.size})" if index == 0 else None,
                gid="eigenvalues",
            )
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.set_xlim(float(grid[0]), float(grid[-1]))
    ax.set_title(
        plain_text(title) if title else f"Hessian spectral density (n = {density.num_params})"
    )
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_eigenvalues(
    eigenvalues: ArrayLike,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Eigenvalues sorted from largest to smallest against their rank (1 = largest).

    Args:
        eigenvalues: any shape (flattened); non-finite values are left out.
        ax: axes to draw into; a new 6 x 4 inch figure when None.
        title: axes title; ``$`` is shown literally.

    Returns:
        The figure drawn on; the points carry gid ``"eigenvalues"`` and the line λ = 0 gid
        ``"zero"`` (negative eigenvalues of a Hessian mark directions of negative curvature).
    """
    fig, ax = new_axes(ax, (6.0, 4.0))
    values = np.asarray(eigenvalues, dtype=np.float64).ravel()
    values = np.sort(values[np.isfinite(values)])[::-1]
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue λ")
    ax.set_title(plain_text(title) if title else f"{values.size} eigenvalues")
    if values.size == 0:
        ax.text(0.5, 0.5, "no eigenvalues", ha="center", va="center", transform=ax.transAxes)
        return fig
    ax.axhline(0.0, color="0.6", linewidth=0.8, gid="zero")
    ax.plot(
        np.arange(1, values.size + 1),
        values,
        marker="o",
        markersize=4,
        linewidth=1.0,
        color="tab:blue",
        gid="eigenvalues",
    )
    return fig
