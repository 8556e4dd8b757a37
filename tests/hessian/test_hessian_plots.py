"""Tests of the Hessian spectrum figures (tailwise.hessian.plots)."""

from __future__ import annotations

import doctest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import NDArray
from torch import Tensor

from tailwise.hessian import plots as plots_module
from tailwise.hessian.plots import plot_density, plot_eigenvalues
from tailwise.hessian.trace import SpectralDensity, spectral_density

#: The ``dense_operator`` fixture of conftest.py: ``dense_operator(matrix)`` -> operator.
DenseFactory = Callable[[Tensor], Any]


def two_cluster_density(
    dense_operator: DenseFactory, num_iters: int = 12, num_runs: int = 3
) -> SpectralDensity:
    diagonal = np.concatenate([np.linspace(-0.1, 0.1, 80), np.linspace(20.0, 21.0, 4)])
    op = dense_operator(torch.diag(torch.from_numpy(diagonal)))
    return spectral_density(op, num_iters=num_iters, num_runs=num_runs)


def lines_by_gid(fig: Figure, gid: str) -> list[Line2D]:
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]


def xdata(line: Line2D) -> NDArray[np.float64]:
    return np.asarray(line.get_xdata(), dtype=np.float64)


def ydata(line: Line2D) -> NDArray[np.float64]:
    return np.asarray(line.get_ydata(), dtype=np.float64)


@pytest.mark.parametrize(("log", "scale"), [(True, "log"), (False, "linear")])
def test_plot_density_draws_the_density_and_marks_every_node(
    log: bool, scale: str, dense_operator: DenseFactory
) -> None:
    density = two_cluster_density(dense_operator)
    fig = plot_density(density, log=log, title="MLP $1")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_yscale() == scale
    assert ax.get_xlabel() == "eigenvalue λ" and ax.get_ylabel() == "density"
    assert ax.get_title() == r"MLP \$1"
    (curve,) = lines_by_gid(fig, "density")
    grid, values = density.on_grid()
    np.testing.assert_allclose(xdata(curve), grid)
    if log:  # clipped at 1e-8 of the peak, so the log axis stays readable
        np.testing.assert_allclose(ydata(curve), np.maximum(values, values.max() * 1e-8))
        assert ax.get_ylim()[0] == pytest.approx(values.max() * 1e-8)
    else:
        np.testing.assert_allclose(ydata(curve), values)
    (rug,) = lines_by_gid(fig, "nodes")
    finite = density.nodes[np.isfinite(density.nodes)]
    np.testing.assert_allclose(np.sort(xdata(rug)), np.sort(finite))
    assert ax.get_xlim()[0] <= finite.min() and ax.get_xlim()[1] >= finite.max()


def test_plot_density_sigma_and_eigenvalue_marks_and_given_axes(
    dense_operator: DenseFactory,
) -> None:
    density = two_cluster_density(dense_operator)
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    returned = plot_density(density, ax=ax, sigma=0.5, num_points=300, eigenvalues=[20.0, 21.0])
    assert returned is fig
    (curve,) = lines_by_gid(fig, "density")
    assert len(xdata(curve)) == 300
    assert xdata(curve)[0] == pytest.approx(np.nanmin(density.nodes) - 2.5)
    marks = lines_by_gid(fig, "eigenvalues")
    assert sorted(xdata(line)[0] for line in marks) == [20.0, 21.0]


def test_plot_density_saves_to_png(tmp_path: Path, dense_operator: DenseFactory) -> None:
    path = tmp_path / "density.png"
    plot_density(two_cluster_density(dense_operator)).savefig(path, dpi=50)
    image = matplotlib.image.imread(path)
    assert image.shape[0] == 200 and image.shape[1] == 300  # 6 x 4 inches at 50 dpi
    assert image[..., :3].std() > 0  # not blank


def test_plot_density_of_a_broken_down_run(dense_operator: DenseFactory) -> None:
    op = dense_operator(2.0 * torch.eye(10, dtype=torch.float64))
    fig = plot_density(spectral_density(op, num_iters=5, num_runs=2))
    (rug,) = lines_by_gid(fig, "nodes")
    np.testing.assert_allclose(xdata(rug), [2.0, 2.0])  # NaN padding is not drawn


def test_plot_eigenvalues_by_rank_with_zero_line(tmp_path: Path) -> None:
    fig = plot_eigenvalues(np.array([0.5, -1.0, 3.0, np.nan, 2.0]), title="top")
    ax = fig.axes[0]
    (points,) = lines_by_gid(fig, "eigenvalues")
    np.testing.assert_allclose(xdata(points), [1, 2, 3, 4])
    np.testing.assert_allclose(ydata(points), [3.0, 2.0, 0.5, -1.0])
    assert len(lines_by_gid(fig, "zero")) == 1
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("rank", "eigenvalue λ", "top")
    fig.savefig(tmp_path / "eigenvalues.png")
    assert (tmp_path / "eigenvalues.png").stat().st_size > 0


def test_plot_eigenvalues_of_nothing_says_so() -> None:
    fig = plot_eigenvalues([])
    assert not lines_by_gid(fig, "eigenvalues")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no eigenvalues"]


def test_docstring_examples_run() -> None:
    failures, tried = doctest.testmod(plots_module, raise_on_error=False)
    assert tried > 0 and failures == 0


def test_shares_the_plot_helpers_without_private_imports() -> None:
    import inspect
    import re

    from tailwise import _plotting

    source = inspect.getsource(plots_module)
    assert not re.search(r"from tailwise\.\w+(\.\w+)* import _", source)
    fig, ax = _plotting.new_axes(None, (3.0, 2.0))
    assert plot_eigenvalues([3.0, 1.0], ax=ax, title="a $b") is fig
    assert ax.get_title() == r"a \$b"
