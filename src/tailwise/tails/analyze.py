"""``analyze_tails``: one row of entry-wise tail indices per weight tensor (source 003).

Data flow: ``iter_layers(source)`` -> ``record.tensor()`` (one layer in memory at a time;
safetensors files are streamed) -> the estimators of :mod:`tailwise.tails.estimators`, which
read the tensor as stored (float32 / float64; other dtypes converted once) a chunk of float64
values at a time -> one row per record. A layer whose estimate fails becomes a row with
``status="failed"`` and a reason; the rest go on. Memory: the tensor, plus about one copy of
it at a time (a median's partitioned copy, a float32 buffer, or an int32 permutation).

Columns (:data:`TAILS_COLUMNS`, in order; stable names):

``name``
    Parameter / tensor name, as :func:`~tailwise.weights.iter_layers` gives it.
``layer``
    The module that owns the tensor (``name`` minus its last component; ``""`` for a
    top-level parameter): the key every table of the package joins on.
``kind``
    :class:`~tailwise.weights.LayerKind` value (``"linear"``, ``"conv2d"``, ``"bias"``, ...).
``shape``
    Canonical shape ``(out, in, *kernel)`` as a tuple of ints.
``num_params``
    Number of entries.
``alpha_mmo``
    Univariate MMO tail index of all entries, median-centred (REFERENCES §4; the median over
    ``permutations`` random orders of the entries, as 003 does).
``alpha_mmo_rows``
    Multivariate MMO tail index of the rows (003 eq. A.1), each coordinate median-centred. Rows:
    the ``out`` rows of a matrix (``Linear`` weights are ``(out, in)``: one row per output
    unit; embeddings: one row per token); a convolution ``(out, in, *kernel)`` is reshaped to
    ``(out * in, prod(kernel))`` as 003 does, so a row is one kernel.
``alpha_rownorm``
    Hill tail index (:func:`~tailwise.tails.estimators.hill_tail_index`, k = ceil(sqrt(rows)), no
    further centring) of the Euclidean norms of the same centred rows. If the rows are
    alpha-stable (iid or elliptic), their norms have tail index alpha. Source 003's code
    applies univariate MMO to the median-centred norms instead; the norms have a positive
    mean, so their block sums drift like m rather than m^(1/alpha), and that estimate was
    measured at 0.84 / 0.90 / 0.94 on 2048 x 256 iid SaS layers with alpha 1.2 / 1.5 / 1.8
    (Hill: 1.23 / 1.71 / 2.13, median of 6 seeds); hence Hill here.
``alpha_hill``
    Hill tail index of all entries' |w - median(w)|, k = ceil(sqrt(num_params)).
``status``
    ``"ok"``, ``"skipped"`` (biases, norms, vectors, unsupported dtypes: never analysed) or
    ``"failed"`` (``alpha_mmo`` could not be estimated: non-finite or constant weights, ...).
``reason``
    Why a layer was skipped or failed; on an ``"ok"`` row, which secondary estimates
    (``alpha_mmo_rows``, ``alpha_rownorm``, ``alpha_hill``) could not be computed -- their
    columns are NaN (e.g. a 2 x 8 matrix has too few rows for the row estimates).

Estimates are not capped unless ``cap`` is given (003 caps at 2.0): values above 2 mean tails
lighter than any stable law (Gaussian-like data give about 2 by MMO and large Hill values).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from tailwise._errors import UsageError
from tailwise._progress import progress_bar
from tailwise._seeds import derive_seed
from tailwise._threads import blas_work
from tailwise.tails.estimators import (
    MMOForm,
    RealArray,
    _converted,
    _count_nonfinite,
    _hill,
    _mmo,
    _row_norms,
    _samples,
    default_hill_k,
    hill_tail_index,
    mmo_alpha,
    mmo_block_sizes,
)
from tailwise.weights import LayerWeights, WeightSource, describe_source, iter_layers

__all__ = ["TAILS_COLUMNS", "analyze_tails", "layer_rows"]

T = TypeVar("T")

#: Columns of the :func:`analyze_tails` table, in order (meanings: module docstring).
TAILS_COLUMNS: tuple[str, ...] = (
    "name",
    "layer",
    "kind",
    "shape",
    "num_params",
    "alpha_mmo",
    "alpha_mmo_rows",
    "alpha_rownorm",
    "alpha_hill",
    "status",
    "reason",
)
_ESTIMATE_COLUMNS = ("alpha_mmo", "alpha_mmo_rows", "alpha_rownorm", "alpha_hill")
# Fewest rows for the row estimates (the MMO minimum; with fewer, median-centred rows have
# nearly equal norms and Hill has no tail to look at).
_MIN_ROWS = 4
_ESTIMATOR_PREFIX = re.compile(r"^(?:mmo_alpha|hill_tail_index): ")


def layer_rows(weights: torch.Tensor | NDArray[np.float64]) -> NDArray[np.float64]:
    """The rows whose tails ``alpha_mmo_rows`` / ``alpha_rownorm`` measure: (rows, d) float64.

    A 2-D ``(out, in)`` tensor as is; ``(out, in, *kernel)`` reshaped to
    ``(out * in, prod(kernel))`` (source 003, App. A.4 code); 1-D as one column.

    >>> layer_rows(torch.zeros(8, 4, 3, 3)).shape
    (32, 9)
    """
    array = (
        weights.detach().to(device="cpu", dtype=torch.float64).numpy()
        if isinstance(weights, torch.Tensor)
        else np.asarray(weights, dtype=np.float64)
    )
    if array.ndim <= 1:
        return array.reshape(-1, 1)
    if array.ndim == 2:
        return array
    return array.reshape(array.shape[0] * array.shape[1], -1)


def _rows_of(values: RealArray) -> RealArray:
    """The rows of :func:`layer_rows`, without its float64 conversion (a view of ``values``)."""
    if values.ndim <= 1:
        return values.reshape(-1, 1)
    if values.ndim == 2:
        return values
    return values.reshape(values.shape[0] * values.shape[1], -1)


def _estimates(
    values: RealArray,
    name: str,
    *,
    center: bool,
    cap: float | None,
    permutations: int,
    seed: int,
) -> tuple[dict[str, float], dict[str, str]]:
    """Each estimate of the row, or the reason it failed. ``values``: the layer's finite
    entries, float32 or float64, C-contiguous; only read."""
    layer_seed = derive_seed(seed, name)  # reproducible, independent of the layer's position
    rows = _rows_of(values)
    entries = values.reshape(-1)
    results: dict[str, float] = {}
    errors: dict[str, str] = {}

    def attempt(column: str, compute: Callable[[], float]) -> None:
        try:
            results[column] = compute()
        except (ValueError, ArithmeticError) as exc:
            errors[column] = _ESTIMATOR_PREFIX.sub("", str(exc).splitlines()[0])

    # Both row estimates use one coordinate-wise centring, both estimates on all entries one
    # centring by the median (each computed once; one of the two held at a time).
    if rows.shape[0] >= _MIN_ROWS:
        by_row = _samples(rows, center)
        sizes = mmo_block_sizes(rows.shape[0])
        attempt(
            "alpha_mmo_rows",
            lambda: _mmo(by_row, sizes, MMOForm.MEAN, cap, permutations, layer_seed + 1),
        )
        attempt("alpha_rownorm", lambda: hill_tail_index(_row_norms(by_row), center=False))
        del by_row
    else:
        too_few = f"need at least {_MIN_ROWS} rows, got {rows.shape[0]}"
        errors.update(alpha_mmo_rows=too_few, alpha_rownorm=too_few)
    if entries.size >= 4:  # MMO's minimum
        by_entry = _samples(entries, center)
        sizes = mmo_block_sizes(entries.size)
        attempt(
            "alpha_mmo",
            lambda: _mmo(by_entry, sizes, MMOForm.MEAN, cap, permutations, layer_seed),
        )
        attempt("alpha_hill", lambda: _hill(by_entry, default_hill_k(entries.size)))
    else:  # the estimators' own errors say why
        attempt("alpha_mmo", lambda: mmo_alpha(entries, center=center))
        attempt("alpha_hill", lambda: hill_tail_index(entries, center=center))
    return results, {column: errors[column] for column in _ESTIMATE_COLUMNS if column in errors}


def _row(layer: LayerWeights, options: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(TAILS_COLUMNS, math.nan)
    row.update(
        name=layer.name,
        layer=layer.layer,
        kind=layer.kind.value,
        shape=tuple(layer.shape),
        num_params=math.prod(layer.shape),
        status="skipped",
        reason="",
    )
    if layer.status != "ok" or not layer.kind.analysed:
        row["reason"] = layer.reason or f"{layer.kind.value} not analysed"
        return row
    try:
        # The tensor as read, as float32 / float64 (a view, unless another dtype is converted).
        weights = _converted(layer.tensor(), layer.name)
        bad = _count_nonfinite(weights)
        if bad:
            row.update(status="failed", reason=f"{bad} of {weights.size} weights are NaN or inf")
            return row
        values, errors = _estimates(weights, layer.name, **options)
    except Exception as exc:  # one bad layer (unreadable, ...) never sinks the analysis
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0])
        return row
    row.update(values)
    if "alpha_mmo" in errors:
        # The other estimates fail for the same reason (constant weights, too few entries).
        row.update(status="failed", reason=f"alpha_mmo: {errors['alpha_mmo']}")
    else:
        row.update(
            status="ok",
            reason="; ".join(f"{column}: {message}" for column, message in errors.items()),
        )
    return row


def analyze_tails(
    source: WeightSource,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    trust_pickle: bool = False,
    progress: bool = True,
    center: bool = True,
    cap: float | None = None,
    permutations: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Entry-wise tail indices of every weight tensor of ``source``: one row per tensor.

    ``source``: an ``nn.Module``, a state dict, a ``.safetensors`` file, a Hugging Face folder
    or a torch checkpoint (:func:`tailwise.weights.iter_layers`; files are read one tensor at
    a time; the estimators read it as stored, a chunk at a time in float64, so a layer holds
    about twice its float32 tensor at the peak). ``include`` / ``exclude``:
    regular expressions searched in parameter names (an invalid one raises
    :class:`tailwise.UsageError`, as do invalid ``cap``, ``permutations`` and ``seed``);
    ``trust_pickle``: allow unpickling torch checkpoints you trust. ``center``: median
    centring before every estimate (003); ``cap``: cap the MMO estimates (003 uses 2.0);
    ``permutations``: MMO estimates are the median over this many random orders of the
    entries / rows (003: 5; 0 keeps the stored order), seeded per layer from ``seed`` and the
    layer name; ``progress``: a progress bar on stderr, drawn only when it is a terminal.

    Columns: :data:`TAILS_COLUMNS` (see the module docstring). Skipped records (biases,
    norms) stay as ``status="skipped"`` rows. Cost is linear in the entries, dominated by the
    random permutations (NumPy's shuffle, whose draws fix the results): a 4096 x 4096 layer
    took 8.4 s (1.6 s with ``permutations=0``) on a loaded 2-core CPU. ``df.attrs`` holds
    ``"source"`` and ``"options"``.

    >>> df = analyze_tails(torch.nn.Linear(64, 32))
    >>> df[["name", "layer", "num_params", "status"]].values.tolist()
    [['weight', '', 2048, 'ok'], ['bias', '', 32, 'skipped']]
    """
    if cap is not None and not (isinstance(cap, (int, float)) and cap > 0):
        raise UsageError(f"analyze_tails: cap must be a positive number or None, got {cap!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 0:
        raise UsageError(
            f"analyze_tails: permutations must be an integer >= 0, got {permutations!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"analyze_tails: seed must be an integer, got {seed!r}")
    options: dict[str, Any] = {
        "center": bool(center),
        "cap": None if cap is None else float(cap),
        "permutations": permutations,
        "seed": seed,
    }
    layers = list(iter_layers(source, include=include, exclude=exclude, trust_pickle=trust_pickle))
    # The estimators are NumPy work: BLAS keeps its threads, torch gets one (tailwise._threads).
    with blas_work():
        rows = [
            _row(layer, options)
            for layer in progress_bar(
                layers, len(layers), progress, "tails", lambda layer: layer.name
            )
        ]
    df = pd.DataFrame(rows, columns=list(TAILS_COLUMNS))
    df["num_params"] = df["num_params"].astype("int64")
    for column in _ESTIMATE_COLUMNS:
        df[column] = df[column].astype("float64")
    df.attrs["source"] = describe_source(source)
    df.attrs["options"] = dict(options)
    return df
