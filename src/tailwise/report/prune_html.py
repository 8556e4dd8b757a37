"""One self-contained HTML page for a pruning result: what was removed and what it cost.

Same page rules as :func:`tailwise.report.write_html` (inline CSS, figures as ``data:`` URIs,
no JavaScript, a Content-Security-Policy, every string escaped): a summary (parameters and
FLOPs before/after, optional accuracy before/after), a figure of parameters kept per layer
beside the relative weight error, and the per-layer table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tailwise._io import atomic_open
from tailwise.prune.files import FilePruneResult
from tailwise.prune.report import PruneResult
from tailwise.report._page import PAGE_END, escape, page_start, summary_block, table_block
from tailwise.spectral.plots import figure_to_data_uri

__all__ = ["write_prune_html"]

_NOTE = (
    "ratio: requested fraction removed; achieved: fraction of the layer's weights removed "
    "(channel pruning also removes input channels). FLOPs = 2 x MACs of the Linear/Conv "
    "layers for one pass over the example input; masked layers count the MACs of kept "
    "weights (a sparse kernel's work)."
)


def _layers_figure(result: PruneResult | FilePruneResult) -> str:
    df = result.report
    names = [str(name) for name in df["layer"]]
    positions = np.arange(len(names))
    height = max(2.6, 0.28 * len(names) + 1.2)
    fig = Figure(figsize=(10, height))
    kept_axes, error_axes = fig.subplots(1, 2, sharey=True)
    before = df["params_before"].to_numpy(dtype=float)
    after = df["params_after"].to_numpy(dtype=float)
    kept_axes.barh(positions, before, color="#c9d3e0", label="before")
    kept_axes.barh(positions, after, color="#1f5fa8", label="after")
    kept_axes.set_xscale("log")
    kept_axes.set_xlabel("parameters (log scale)")
    kept_axes.set_yticks(positions, names, fontsize=7)
    kept_axes.invert_yaxis()
    kept_axes.legend(loc="lower right", fontsize=8)
    error_axes.barh(positions, df["rel_error"].to_numpy(dtype=float), color="#b3261e")
    error_axes.set_xlabel("relative weight error ||W - W'||_F / ||W||_F")
    error_axes.set_xlim(0, 1)
    fig.suptitle(f"{result.method} pruning, per layer", fontsize=11)
    fig.tight_layout()
    uri = figure_to_data_uri(fig, dpi=90)
    return (
        '<section id="figure" class="figure-wide">\n<h2>Per layer</h2>\n'
        f'<img alt="parameters kept and relative error per layer" src="{uri}">\n</section>\n'
    )


#: Methods whose result is a physically smaller model (fewer parameters stored and computed).
PHYSICAL_METHODS = frozenset({"lowrank", "channel"})

# table_block's note is written for analysis tables (eigenvalues of W^T W): not for this one.
_ANALYSIS_NOTE = "Eigenvalues are those of W<sup>T</sup>W; log is log<sub>10</sub>."


def _prune_table(table: Any) -> str:
    block = table_block(table, set())
    return block.replace(" " + _ANALYSIS_NOTE, "").replace(_ANALYSIS_NOTE, "")


def write_prune_html(
    result: PruneResult | FilePruneResult,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    source: str = "",
    accuracy: tuple[float, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a :class:`~tailwise.prune.PruneResult` (or the
    :class:`~tailwise.prune.FilePruneResult` of a pruned file) as one self-contained HTML file.

    ``accuracy``: (before, after) of some evaluation, shown in the summary whenever given;
    ``extra``: more summary entries. The FLOPs speed-up limit is shown only for methods that
    make the model physically smaller (:data:`PHYSICAL_METHODS`); a masked model (magnitude,
    node) runs at full cost in dense PyTorch, and its FLOPs kept count a sparse kernel's
    work. Written atomically.

    >>> from tailwise.models import MLP
    >>> from tailwise.prune import prune_magnitude
    >>> import pathlib, tempfile
    >>> result = prune_magnitude(MLP(8, [16], 4), 0.5)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_prune_html(result, pathlib.Path(folder) / "prune.html").name
    'prune.html'
    """
    if not isinstance(result, PruneResult | FilePruneResult):
        raise TypeError(f"write_prune_html: expected a PruneResult, got {type(result).__name__}")
    totals = result.totals()
    summary: dict[str, Any] = {
        "method": result.method,
        "params before": int(totals["params_before"]),
        "params after": int(totals["params_after"]),
        "params kept": f"{totals['params_ratio']:.1%}",
    }
    smaller = result.method in PHYSICAL_METHODS
    if not np.isnan(totals["flops_ratio"]):
        if smaller:
            summary["FLOPs kept"] = f"{totals['flops_ratio']:.1%}"
            summary["FLOPs limit speed-up"] = f"{1 / totals['flops_ratio']:.2f}x"
        else:
            summary["FLOPs kept (sparse kernel)"] = f"{totals['flops_ratio']:.1%}"
    if not smaller:
        summary["dense speed-up"] = "none: pruned weights are zeros in full-size layers"
    if accuracy is not None:
        summary["accuracy before"] = f"{accuracy[0]:.2%}"
        summary["accuracy after"] = f"{accuracy[1]:.2%}"
    summary.update(extra or {})
    table = result.report.rename(columns={"layer": "name"})
    table.attrs["source"] = source
    heading = title or f"tailwise prune ({result.method})"
    target = Path(path)
    with atomic_open(target, "w") as handle:
        handle.write(page_start(heading, table))
        handle.write(summary_block(summary))
        if len(table):
            handle.write(_layers_figure(result))
        handle.write(_prune_table(table))
        handle.write(f'<p class="note">{escape(_NOTE)}</p>\n')
        handle.write(PAGE_END)
    return target
