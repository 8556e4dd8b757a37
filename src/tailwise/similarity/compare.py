"""``compare``: two weight sources of one architecture, layer by layer, as a DataFrame.

For every weight tensor the two sources share by name (the ``name`` of
:func:`tailwise.analyze`): how far the weights moved (``delta_W``, ``rel_frobenius``), how far
their spectra moved (``sv_distance``, ``esd_distance``), the HT-SR metrics of both and their
differences, and, given data and two ``nn.Module``s, the CKA between the outputs of the
layers (:func:`tailwise.similarity.layer_cka`, corresponding layers only).

Anchor: WeightWatcher's ``distances(model_1, model_2, method="raw")`` reports ``delta_W`` =
||W_1 - W_2||_F per layer (same name, same meaning here). It pairs layers by position and
raises ("Sorry, problem comparing models") on the first layer it cannot compare; here layers
are paired by name and a layer that cannot be compared (missing on one side, shapes that
differ, an unreadable tensor) becomes a row with ``status="failed"`` and a reason.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from tailwise._errors import UsageError, first_line
from tailwise._progress import progress_bar
from tailwise._threads import blas_work, torch_work
from tailwise.similarity._hsic import parse_kernel
from tailwise.similarity.layers import Data, _Options, layer_hsics
from tailwise.spectral.analyze import AnalyzeOptions, analyze_layer
from tailwise.spectral.metrics import spectral_distance
from tailwise.weights import LayerWeights, WeightSource, describe_source, iter_layers

__all__ = ["COMPARE_COLUMNS", "COMPARE_METRICS", "compare"]

#: The :func:`tailwise.analyze` columns compared: each gives ``<metric>_a``, ``<metric>_b``
#: and ``delta_<metric>`` = ``<metric>_b - <metric>_a``.
COMPARE_METRICS: tuple[str, ...] = (
    "alpha",
    "alpha_weighted",
    "log_alpha_norm",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "entropy",
    "mp_softrank",
)

#: Columns of :func:`compare`'s table, in order (meanings: :func:`compare`).
COMPARE_COLUMNS: tuple[str, ...] = (
    "name",
    "layer",
    "kind",
    "N",
    "M",
    "delta_W",
    "rel_frobenius",
    "sv_distance",
    "esd_distance",
    "cka",
    *(column for m in COMPARE_METRICS for column in (f"{m}_a", f"{m}_b", f"delta_{m}")),
    "status",
    "reason",
)
_TEXT = ("name", "layer", "kind", "status", "reason")
_INT = ("N", "M")
# Elements of both tensors converted to float64 at a time for the Frobenius norms.
_CHUNK = 2**20


def _row(record: LayerWeights) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COMPARE_COLUMNS, math.nan)
    row.update(name=record.name, layer=record.layer, kind=record.kind.value, status="ok")
    row["reason"] = ""
    return row


def _failed(row: dict[str, Any], reason: str) -> list[dict[str, Any]]:
    row.update(status="failed", reason=reason)
    return [row]


def _analysed(record: LayerWeights) -> bool:
    return record.status == "ok" and record.kind.analysed


def _one_side(row: dict[str, Any], reason: str, analysed: bool) -> list[dict[str, Any]]:
    """A tensor only one source has: failed for a weight matrix; skipped for the rest
    (a module lists no buffers, its state dict does: running means are not failures)."""
    if analysed:
        return _failed(row, reason)
    row.update(status="skipped", reason=reason)
    return [row]


def _frobenius(a: Tensor, b: Tensor, device: torch.device | None) -> tuple[float, float]:
    """(||a - b||_F, ||a||_F) in float64, over chunks (no float64 copy of a whole tensor)."""
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    target = device if device is not None else a.device
    diff = norm = 0.0
    for start in range(0, flat_a.numel(), _CHUNK):
        part_a = flat_a[start : start + _CHUNK].to(device=target, dtype=torch.float64)
        part_b = flat_b[start : start + _CHUNK].to(device=target, dtype=torch.float64)
        diff += float(torch.sum((part_a - part_b) ** 2))
        norm += float(torch.sum(part_a**2))
    return math.sqrt(diff), math.sqrt(norm)


def _sv_distance(evals_a: NDArray[np.float64], evals_b: NDArray[np.float64]) -> float:
    """||s_a - s_b||_2 / ||s_a||_2 of the sorted singular values s = sqrt(eigenvalues).

    Mirsky's inequality (1960): for matrices of one shape, sum_i (s_i(A) - s_i(B))^2 <=
    ||A - B||_F^2, and pooling conv slices only lowers the left side (sorted pairing is the
    closest), so sv_distance <= rel_frobenius whatever the conv mode or normalization.
    """
    if evals_a.size != evals_b.size or evals_a.size == 0:
        return math.nan
    sv_a = np.sqrt(np.sort(np.clip(evals_a, 0.0, None)))
    sv_b = np.sqrt(np.sort(np.clip(evals_b, 0.0, None)))
    scale = float(np.linalg.norm(sv_a))
    return float(np.linalg.norm(sv_a - sv_b)) / scale if scale > 0 else math.nan


def _loaded(record: LayerWeights) -> LayerWeights:
    """``record`` with its tensor read once: analysis and norms share one read of a file."""
    stored = record.loader()
    return replace(record, loader=lambda: stored)


def _compare_layer(
    rec_a: LayerWeights, rec_b: LayerWeights | None, options: AnalyzeOptions
) -> list[dict[str, Any]]:
    """Rows (one per ESD, as :func:`tailwise.analyze`) comparing one tensor of a and b."""
    row = _row(rec_a)
    if len(rec_a.shape) >= 2:
        row.update(N=max(rec_a.shape[:2]), M=min(rec_a.shape[:2]))
    analysed = _analysed(rec_a)
    if rec_b is None:
        return _one_side(row, "not in b", analysed)
    if rec_a.shape != rec_b.shape:
        return _failed(row, f"shapes differ: a {rec_a.shape} vs b {rec_b.shape}")
    try:
        rec_a, rec_b = _loaded(rec_a), _loaded(rec_b)
        delta, norm = _frobenius(rec_a.tensor(), rec_b.tensor(), options.device)
        row.update(delta_W=delta, rel_frobenius=delta / norm if norm > 0 else math.nan)
    except Exception as exc:  # one bad layer never sinks the comparison
        if not analysed:
            row.update(status="skipped", reason=rec_a.reason or f"{rec_a.kind.value} not compared")
            return [row]
        return _failed(row, f"{type(exc).__name__}: {first_line(exc)}")
    if not analysed:
        row.update(status="skipped", reason=rec_a.reason or f"{rec_a.kind.value} not analysed")
        return [row]
    rows_a, spectra_a = analyze_layer(rec_a, options)
    rows_b, spectra_b = analyze_layer(rec_b, options)
    by_name_b = {r["name"]: r for r in rows_b}
    out = []
    for row_a in rows_a:
        out_row = dict(row)
        row_b = by_name_b.get(row_a["name"])
        out_row.update(name=row_a["name"], N=row_a["N"], M=row_a["M"])
        if row_b is None:  # analysis of b failed as a whole (one row named after the tensor)
            row_b = rows_b[0]
        for metric in COMPARE_METRICS:
            value_a, value_b = float(row_a[metric]), float(row_b[metric])
            out_row.update(
                {
                    f"{metric}_a": value_a,
                    f"{metric}_b": value_b,
                    f"delta_{metric}": value_b - value_a,
                }
            )
        evals_a, evals_b = spectra_a.get(row_a["name"]), spectra_b.get(row_a["name"])
        if evals_a is not None and evals_b is not None:
            out_row["sv_distance"] = _sv_distance(evals_a, evals_b)
            out_row["esd_distance"] = spectral_distance(evals_a, evals_b)
        notes = [
            f"{side}: {r['reason']}" for side, r in (("a", row_a), ("b", row_b)) if r["reason"]
        ]
        if "failed" in (row_a["status"], row_b["status"]):
            out_row["status"] = "failed"
        out_row["reason"] = "; ".join(notes)
        out.append(out_row)
    return out


def _cka_by_layer(
    a: nn.Module,
    b: nn.Module,
    rows: list[dict[str, Any]],
    data: Data,
    kernel: str,
    unbiased: bool,
    progress: bool,
) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """CKA between module ``layer`` of a and of b for the layers of the ok rows."""
    modules_a, modules_b = dict(a.named_modules()), dict(b.named_modules())
    wanted = list(dict.fromkeys(r["layer"] for r in rows if r["status"] == "ok"))
    reasons = {
        layer: f"cka: no module {layer!r} in {'a' if layer not in modules_a else 'b'}"
        for layer in wanted
        if layer not in modules_a or layer not in modules_b
    }
    names = [layer for layer in wanted if layer not in reasons]
    if not names:
        return {}, reasons, {}
    options = _Options(
        kernel=parse_kernel(kernel, "compare"),
        unbiased=bool(unbiased),
        sigma=None,
        median_fraction=1.0,
        where="compare",
        strict=False,
    )
    with torch_work():
        sums = layer_hsics(a, b, names, names, data, options, paired=True, progress=progress)
        values = sums.cka(paired=True).cpu().tolist()
    found = dict(zip(names, values, strict=True))
    for side, failed in (("a", sums.failed_a), ("b", sums.failed_b)):
        for layer, reason in failed.items():
            reasons.setdefault(layer, f"cka ({side}): {reason}")
            found[layer] = math.nan
    stats = {"examples": sums.examples, "batches": sums.batches}
    return found, reasons, stats


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    for col in _INT:
        df[col] = pd.array([None if pd.isna(v) else int(v) for v in df[col]], dtype="Int64")
    for col in COMPARE_COLUMNS:
        if col not in _INT and col not in _TEXT:
            df[col] = df[col].astype("float64")
    return df


def compare(
    a: WeightSource,
    b: WeightSource,
    *,
    data: Data | None = None,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    fit: str | float = "ks",
    conv: str = "pooled",
    normalize: str | None = None,
    method: str = "gram",
    device: str | torch.device | None = None,
    kernel: str = "linear",
    unbiased: bool = True,
    trust_pickle: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Compare two weight sources of the same architecture, one row per weight matrix.

    Args:
        a, b: weight sources as :func:`tailwise.iter_layers` reads them: ``nn.Module``, state
            dict, ``.safetensors`` file, torch checkpoint, Hugging Face folder. Files are read
            one tensor at a time (one tensor of each side in memory at once). Tensors are
            paired by parameter name.
        data: batches (as :func:`tailwise.similarity.layer_cka` takes them) to fill the
            ``cka`` column; needs two ``nn.Module``s (a :class:`tailwise.UsageError`
            otherwise). Without it, ``cka`` is NaN.
        include, exclude: regular expressions searched in parameter names, both sources.
        fit, conv, normalize, method, device: the spectral options of
            :func:`tailwise.analyze` (the ``*_a``/``*_b`` columns equal its columns).
        kernel, unbiased: of the CKA (as in :func:`~tailwise.similarity.layer_cka`).
        trust_pickle: allow unpickling objects from torch checkpoints (trusted files only).
        progress: progress bars on a terminal.

    Returns:
        A DataFrame with the columns :data:`COMPARE_COLUMNS`, rows in the order of ``a``, then
        the tensors only ``b`` has:

        - ``name``, ``layer``, ``kind``, ``N``, ``M``: as in :func:`tailwise.analyze` (of a).
        - ``delta_W`` = ||W_b - W_a||_F of the stored tensors (WeightWatcher's ``delta_W``
          of ``distances(method="raw")``), ``rel_frobenius`` = ||W_b - W_a||_F / ||W_a||_F
          (NaN if W_a = 0). Filled for biases and norms too (rows ``status="skipped"``).
        - ``sv_distance`` = ||s_b - s_a||_2 / ||s_a||_2 with s the sorted singular values of
          the analysed matrix (square roots of the ESD): the relative l2 distance between
          the spectra; 0 iff the spectra are equal, invariant to orthogonal transforms of
          either matrix, and <= ``rel_frobenius`` (Mirsky 1960).
        - ``esd_distance``: Jensen-Shannon distance (base 2, in [0, 1]) between the two ESD
          histograms (:func:`tailwise.spectral.metrics.spectral_distance`, the measure of
          ``rand_distance``): how the shape of the spectrum changed, scale included.
        - ``cka``: linear (by default) minibatch CKA between the outputs of module ``layer``
          in a and in b over ``data`` (NaN without data).
        - ``<metric>_a``, ``<metric>_b``, ``delta_<metric>`` (= b - a) for each metric of
          :data:`COMPARE_METRICS` (columns of :func:`tailwise.analyze`).
        - ``status``: ``"ok"``; ``"failed"`` when a weight matrix is missing on one side, the
          shapes differ, a tensor cannot be read, or an analysis failed (its numbers are
          kept); ``"skipped"`` for tensors that are not analysed (biases, norms, buffers),
          also when only one side has them (a module lists no buffers, a file does).
          ``reason`` says why, and carries the notes of each side's analysis (``"a: ..."``,
          ``"b: ..."``) and of the CKA (``"cka: ..."``, e.g. a module that ran twice).

        ``df.attrs`` holds ``source_a``, ``source_b``, ``options`` and, with data,
        ``examples`` and ``batches``.

    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    >>> df = compare(model, model.state_dict(), progress=False)
    >>> df[["name", "status"]].values.tolist()
    [['0.weight', 'ok'], ['0.bias', 'skipped'], ['2.weight', 'ok'], ['2.bias', 'skipped']]
    >>> float(df["rel_frobenius"].max()), float(df["sv_distance"].max())
    (0.0, 0.0)
    """
    options = AnalyzeOptions.parse(
        fit=fit, conv=conv, normalize=normalize, method=method, device=device
    )
    parse_kernel(kernel, "compare")
    if data is not None and not (isinstance(a, nn.Module) and isinstance(b, nn.Module)):
        raise UsageError(
            "compare: data gives the cka column, which needs two nn.Modules to run; got "
            f"{type(a).__name__} and {type(b).__name__}"
        )
    records_b = {
        r.name: r
        for r in iter_layers(b, include=include, exclude=exclude, trust_pickle=trust_pickle)
    }
    records_a = list(iter_layers(a, include=include, exclude=exclude, trust_pickle=trust_pickle))
    rows: list[dict[str, Any]] = []
    on_cpu = options.device is None or options.device.type == "cpu"
    with blas_work() if on_cpu else contextlib.nullcontext():
        for rec_a in progress_bar(records_a, len(records_a), progress, "compare", lambda r: r.name):
            rows.extend(_compare_layer(rec_a, records_b.pop(rec_a.name, None), options))
    for rec_b in records_b.values():
        row = _row(rec_b)
        if len(rec_b.shape) >= 2:
            row.update(N=max(rec_b.shape[:2]), M=min(rec_b.shape[:2]))
        rows.extend(_one_side(row, "not in a", _analysed(rec_b)))
    stats: dict[str, Any] = {}
    if data is not None:
        assert isinstance(a, nn.Module) and isinstance(b, nn.Module)
        values, reasons, stats = _cka_by_layer(a, b, rows, data, kernel, unbiased, progress)
        for row in rows:
            if row["status"] != "ok":
                continue
            row["cka"] = values.get(row["layer"], math.nan)
            if row["layer"] in reasons:
                row["reason"] = "; ".join(filter(None, (row["reason"], reasons[row["layer"]])))
    df = _frame(rows)
    df.attrs.update(
        source_a=describe_source(a),
        source_b=describe_source(b),
        options={
            "fit": fit,
            "conv": options.conv.value,
            "normalize": options.normalize.value,
            "method": options.method.value,
            "kernel": kernel,
            "unbiased": bool(unbiased),
        },
        **stats,
    )
    return df
