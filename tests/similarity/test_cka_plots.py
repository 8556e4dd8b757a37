"""plot_cka: the heatmap of source 000 fig. 2.2 on the Agg canvas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from tailwise import UsageError
from tailwise._plotting import new_axes
from tailwise.similarity import cka_matrix, layer_cka, plot_cka


def _values(image: Any) -> np.ndarray:
    """The image's data, masked cells as NaN."""
    return np.ma.filled(np.ma.asarray(image.get_array(), dtype=np.float64), np.nan)


def _table() -> pd.DataFrame:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    return layer_cka(model, torch.randn(32, 6), layers=["0", "1", "2", "4"], progress=False)


def test_heatmap_of_a_layer_cka_table(tmp_path: Path) -> None:
    df = _table()
    fig = plot_cka(df, title="cost $5")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    [image] = ax.get_images()
    assert image.get_gid() == "cka"
    np.testing.assert_allclose(_values(image), cka_matrix(df).to_numpy())
    assert image.origin == "lower"  # layer 0 at the bottom left, as in the source
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "4"]
    assert ax.get_xlabel() == "layer_b" and ax.get_ylabel() == "layer_a"
    assert ax.get_title() == r"cost \$5"
    assert len(fig.axes) == 2  # the colour bar
    fig.savefig(tmp_path / "cka.png")
    assert (tmp_path / "cka.png").stat().st_size > 0


def test_matrix_and_array_inputs_and_nan_cells() -> None:
    matrix = cka_matrix(_table())
    np.testing.assert_allclose(_values(plot_cka(matrix).axes[0].get_images()[0]), matrix.to_numpy())
    values = np.array([[1.0, np.nan], [0.3, 1.0]])
    image = plot_cka(values).axes[0].get_images()[0]
    assert np.isnan(_values(image)).tolist() == [[False, True], [False, False]]
    assert plot_cka(values).axes[0].get_xlabel() == "layer"


def test_many_layers_label_every_kth_and_draw_into_given_axes() -> None:
    fig, ax = new_axes(None, (5.0, 5.0))
    out = plot_cka(np.eye(109), ax=ax)  # ResNet34's 109 modules (000 fig. 2.2)
    assert out is fig
    labels = ax.get_yticklabels()
    assert 10 <= len(labels) <= 30
    assert labels[1].get_text() == "4"


def test_bad_input() -> None:
    with pytest.raises(UsageError, match="expected a 2-D matrix"):
        plot_cka(np.zeros((2, 2, 2)))
    with pytest.raises(UsageError, match="empty"):
        plot_cka(np.zeros((0, 0)))
    with pytest.raises(UsageError, match="not a layer_cka table"):
        cka_matrix(pd.DataFrame({"layer_a": ["x"], "cka": [1.0]}))
