"""``analyze``: one row of HT-SR diagnostics per weight matrix, as a pandas DataFrame.

Data flow (DESIGN.md): ``iter_layers(source)`` -> ``esd.eigenvalues(layer)`` ->
``powerlaw.fit_power_law(evals)`` + ``metrics.*(evals)`` -> one row per matrix. A layer that
cannot be analysed becomes a row with ``status="failed"`` and a reason; the rest go on.
Rows are keyed by ``name`` (the parameter) and ``layer`` (the module that owns it).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from tailwise._errors import UsageError, first_line
from tailwise._progress import progress_bar
from tailwise._seeds import derive_seed
from tailwise._threads import blas_work, single_threaded
from tailwise.spectral.esd import (
    ESD,
    ConvMode,
    EigenMethod,
    Normalization,
    Precision,
    eigenvalues,
    eigenvalues_batch,
)
from tailwise.spectral.metrics import (
    fit_marchenko_pastur,
    matrix_entropy,
    norm_metrics,
    spectral_distance,
)
from tailwise.spectral.powerlaw import FixFingers, PowerLawFit, XminMethod, fit_power_law
from tailwise.spectral.precision import error_bound, histogram_is_certain, uncertain_column
from tailwise.weights import LayerWeights, WeightSource, describe_source, iter_layers

__all__ = [
    "COLUMNS",
    "MIN_EVALS",
    "MIN_PL_SPIKES",
    "MIN_SLICE_M",
    "TEXT_COLUMNS",
    "AnalyzeOptions",
    "analyze",
    "analyze_layer",
    "summary",
]

T = TypeVar("T")

UNDER_TRAINED_ALPHA = 6.0  # source 000: well-trained layers have alpha in [2, 6]
OVER_TRAINED_ALPHA = 2.0
#: Fewest eigenvalues an ESD needs for a power-law fit. Below it the row keeps everything the
#: eigenvalues say by themselves (norms, stable rank, entropy, rank, MP fit) with
#: ``status="ok"``, but alpha and the columns derived from it are NaN and no warning label is
#: given: a 2-output head has 2 eigenvalues, and "alpha 1.15, over-trained" from them is
#: noise. (WeightWatcher skips layers below its ``min_evals`` of 8 altogether.)
MIN_EVALS = 10
#: Fewest tail eigenvalues (``num_pl_spikes``) for a warning label: a fit on fewer is reported
#: (alpha and the rest are filled) but not labelled, and :func:`summary` leaves it out of the
#: alpha means. The MLE's standard error is (alpha - 1) / sqrt(num_pl_spikes): from 2 tail
#: values an alpha of 19.5 is within a standard error of anything.
MIN_PL_SPIKES = 5
#: Convolution slices with fewer than this many columns (min(out, in) per slice) are
#: degenerate: a slice of shape (out, 1) has one eigenvalue, its squared norm, so the pooled
#: "ESD" is a histogram of column norms, not a spectrum. Such kernels are analysed flattened
#: to (out, in * prod(kernel)), with a note in ``reason``.
MIN_SLICE_M = 3

#: Columns of the table, in order. Meanings: README "The analysis table".
COLUMNS: tuple[str, ...] = (
    "name",
    "layer",
    "kind",
    "N",
    "M",
    "rf",
    "Q",
    "num_evals",
    "alpha",
    "xmin",
    "xmax",
    "D",
    "sigma",
    "num_pl_spikes",
    "num_fingers",
    "alpha_weighted",
    "log_alpha_norm",
    "norm",
    "log_norm",
    "spectral_norm",
    "log_spectral_norm",
    "stable_rank",
    "entropy",
    "matrix_rank",
    "rank_loss",
    "log_frobenius_norm",
    "mp_sigma",
    "num_spikes",
    "mp_softrank",
    "rand_distance",
    "warning",
    "status",
    "reason",
    "precision",
)
_INT_COLUMNS = ("N", "M", "rf", "num_evals", "num_pl_spikes", "num_fingers", "matrix_rank",
                "rank_loss", "num_spikes")  # fmt: skip
#: The columns that hold text; every other column is a number.
TEXT_COLUMNS: tuple[str, ...] = (
    "name",
    "layer",
    "kind",
    "warning",
    "status",
    "reason",
    "precision",
)


@dataclass(frozen=True)
class AnalyzeOptions:
    """Options of :func:`analyze`, parsed and validated once at the public boundary."""

    fit: XminMethod | float = XminMethod.KS
    xmax: float | None = None
    fix_fingers: FixFingers | None = None
    conv: ConvMode = ConvMode.POOLED
    normalize: Normalization = Normalization.NONE
    method: EigenMethod = EigenMethod.GRAM
    rand_distance: bool = False
    device: torch.device | None = None
    seed: int = 0
    precision: Precision = Precision.FLOAT64

    @property
    def spectrum_precision(self) -> Precision:
        """The precision the spectra are computed in: ``"auto"`` only where every column it
        could change is checked (:mod:`tailwise.spectral.precision`); options it does not
        check (``xmax``, ``fix_fingers``, ``method="svd"``) take float64.
        """
        if self.precision is not Precision.AUTO:
            return self.precision
        unchecked = (
            self.xmax is not None or self.fix_fingers is not None or self.method is EigenMethod.SVD
        )
        return Precision.FLOAT64 if unchecked else Precision.AUTO

    @classmethod
    def parse(
        cls,
        *,
        fit: str | float = "ks",
        xmax: float | None = None,
        fix_fingers: str | None = None,
        conv: str = "pooled",
        normalize: str | None = None,
        method: str = "gram",
        rand_distance: bool = False,
        device: str | torch.device | None = None,
        seed: int = 0,
        precision: str = "float64",
    ) -> AnalyzeOptions:
        def choice(enum_type: Any, value: Any, what: str) -> Any:
            try:
                return enum_type(value)
            except ValueError:
                allowed = ", ".join(repr(e.value) for e in enum_type)
                raise UsageError(
                    f"analyze: {what} must be one of {allowed}; got {value!r}"
                ) from None

        if isinstance(fit, str):
            fit_choice: XminMethod | float = choice(XminMethod, fit, "fit")
        elif isinstance(fit, (int, float)) and math.isfinite(fit) and fit > 0:
            fit_choice = float(fit)
        else:
            raise UsageError(f"analyze: fit must be 'ks', 'median' or a positive xmin; got {fit!r}")
        if xmax is not None and not (
            isinstance(xmax, (int, float))
            and not isinstance(xmax, bool)
            and math.isfinite(xmax)
            and xmax > 0
        ):
            raise UsageError(
                f"analyze: xmax must be a finite positive number or None; got {xmax!r}"
            )
        how = choice(EigenMethod, method, "method")
        arithmetic = choice(Precision, precision, "precision")
        if how is EigenMethod.SVD and arithmetic is Precision.FLOAT32:
            raise UsageError(
                "analyze: precision='float32' is the Gram matrix's arithmetic; "
                "method='svd' is float64 only (use precision='float64' or 'auto')"
            )
        return cls(
            fit=fit_choice,
            xmax=None if xmax is None else float(xmax),
            fix_fingers=None
            if fix_fingers is None
            else choice(FixFingers, fix_fingers, "fix_fingers"),
            conv=choice(ConvMode, conv, "conv"),
            normalize=choice(
                Normalization, "none" if normalize is None else normalize, "normalize"
            ),
            method=how,
            rand_distance=bool(rand_distance),
            device=_device(device),
            seed=int(seed),
            precision=arithmetic,
        )


def _device(device: str | torch.device | None) -> torch.device | None:
    """``device`` parsed, and checked usable here: a small tensor is made on it and read back.

    Without this, ``device="cuda"`` on a machine (or torch build) without CUDA, or
    ``"meta"``, would give a table in which every layer failed.
    """
    if device is None:
        return None
    try:
        parsed = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UsageError(f"analyze: device {device!r} is not a torch device ({exc})") from None
    try:
        probe = torch.ones(2, dtype=torch.float64, device=parsed)
        float((probe @ probe).cpu())
    except Exception as exc:  # AssertionError (no CUDA build), RuntimeError, NotImplementedError
        detail = first_line(exc) or type(exc).__name__
        raise UsageError(f"analyze: device {str(parsed)!r} is not usable here ({detail})") from None
    return parsed


def _empty_row(layer: LayerWeights) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    row.update(
        name=layer.name,
        layer=layer.layer,
        kind=layer.kind.value,
        warning="",
        status="skipped",
        reason="",
        precision="",
    )
    if len(layer.shape) >= 2:
        n, m = layer.shape[0], layer.shape[1]
        row.update(N=max(n, m), M=min(n, m), rf=math.prod(layer.shape[2:]))
    return row


def _fit(evals: NDArray[np.float64], options: AnalyzeOptions) -> PowerLawFit:
    return fit_power_law(
        evals, xmin=options.fit, xmax=options.xmax, fix_fingers=options.fix_fingers
    )


def _esd_row(
    base: dict[str, Any], esd: ESD, options: AnalyzeOptions, log_frobenius: float
) -> tuple[dict[str, Any], PowerLawFit | None]:
    """The row of one ESD and its power-law fit (None when there is none)."""
    row = dict(base)
    evals = esd.evals
    row.update(
        N=esd.N,
        M=esd.M,
        rf=esd.rf,
        Q=esd.Q,
        num_evals=int(evals.size),
        matrix_rank=esd.matrix_rank,
        rank_loss=esd.rank_loss,
        log_frobenius_norm=log_frobenius,
        status="ok",
        precision=esd.precision,
    )
    if evals.size == 0 or float(evals[-1]) <= 0.0:
        row.update(status="failed", reason="all eigenvalues are zero", warning="empty")
        return row, None
    mp = fit_marchenko_pastur(evals, esd.Q, esd.M)
    row.update(
        entropy=matrix_entropy(evals, esd.matrix_rank),
        mp_sigma=mp.sigma,
        num_spikes=mp.num_spikes,
        mp_softrank=mp.softrank,
    )
    if evals.size < MIN_EVALS:
        norms = norm_metrics(evals)  # alpha NaN: alpha_weighted, log_alpha_norm NaN too
        row.update(_norm_columns(norms), num_pl_spikes=math.nan, num_fingers=math.nan)
        row["reason"] = (
            f"too few eigenvalues ({evals.size} < {MIN_EVALS}) for a power-law fit; no alpha"
        )
        return row, None
    fit = _fit(evals, options)
    norms = norm_metrics(evals, fit.alpha)
    row.update(
        _norm_columns(norms),
        alpha=fit.alpha,
        xmin=fit.xmin,
        xmax=fit.xmax,
        D=fit.D,
        sigma=fit.sigma,
        num_pl_spikes=fit.n_tail,
        num_fingers=fit.num_fingers,
    )
    if not fit.ok:
        # A failed fit is reported as such, never as over-trained (WeightWatcher's alpha=-1).
        row.update(status="failed", reason=f"power-law fit: {fit.reason}")
    elif fit.n_tail < MIN_PL_SPIKES:
        row["reason"] = (
            f"alpha from {fit.n_tail} tail eigenvalues (< {MIN_PL_SPIKES}): too few to label"
        )
    elif fit.alpha < OVER_TRAINED_ALPHA:
        row["warning"] = "over-trained"
    elif fit.alpha > UNDER_TRAINED_ALPHA:
        row["warning"] = "under-trained"
    return row, fit


def _norm_columns(norms: Any) -> dict[str, float]:
    return {
        "alpha_weighted": norms.alpha_weighted,
        "log_alpha_norm": norms.log_alpha_norm,
        "norm": norms.norm,
        "log_norm": norms.log_norm,
        "spectral_norm": norms.spectral_norm,
        "log_spectral_norm": norms.log_spectral_norm,
        "stable_rank": norms.stable_rank,
    }


def _degenerate_slices(layer: LayerWeights, conv: ConvMode) -> str:
    """The note for a conv whose slices are too thin to have a spectrum ("" if not one)."""
    shape = layer.shape
    if conv is ConvMode.FLATTEN or not layer.kind.is_conv or len(shape) < 3:
        return ""
    rf = math.prod(shape[2:])
    if rf <= 1 or min(shape[0], shape[1]) >= MIN_SLICE_M:
        return ""
    return (
        f"conv slices of {shape[0]}x{shape[1]} have < {MIN_SLICE_M} eigenvalues each: "
        f"analysed flattened to {shape[0]}x{shape[1] * rf} instead of conv={conv.value!r}"
    )


def _log_frobenius(esds: list[tuple[str, ESD]], options: AnalyzeOptions) -> float:
    """log10 ||W||_F of the stored weights (no conv scaling), from the spectra.

    sum lambda = scale^2 ||W||_F^2 (/ N with normalize="N") summed over all of the layer's
    ESDs, so no further pass over the weights is needed.
    """
    total = 0.0
    for _, esd in esds:
        per_n = esd.N if options.normalize is Normalization.N else 1.0
        total += float(esd.evals.sum()) * per_n / esd.scale**2
    return 0.5 * math.log10(total) if total > 0 else -math.inf


def _permuted(tensor: torch.Tensor, seed: int, name: str) -> torch.Tensor:
    """The entries of ``tensor`` randomly permuted; reproducible per (seed, layer name)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, name))
    flat = tensor.reshape(-1)
    perm = torch.randperm(flat.numel(), generator=gen).to(flat.device)
    return flat[perm].reshape(tensor.shape)


class Spectra(dict[str, NDArray[np.float64]]):
    """``{name: eigenvalues}`` kept in ``df.attrs["esd"]``.

    Compares by value with ``numpy.array_equal`` so that pandas operations that compare
    ``attrs`` (``pd.concat``) work instead of failing on ambiguous array truth values.
    """

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict) or self.keys() != other.keys():
            return False
        return all(np.array_equal(self[k], other[k]) for k in self)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # mutable mapping: unhashable, like dict


def analyze_layer(
    layer: LayerWeights,
    options: AnalyzeOptions | None = None,
    *,
    esds: list[tuple[str, ESD]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, NDArray[np.float64]]]:
    """Rows (one per ESD: more than one only with ``conv="slices"``) and their eigenvalues.

    ``esds``: spectra already computed (by a batch over equal layers); computed here if None.
    With ``precision="auto"`` a layer whose float32 rows are not all certain to match float64
    within 1e-4 (:func:`~tailwise.spectral.precision.uncertain_column`) is redone in float64.
    Never raises for bad weights: a layer that cannot be analysed gives one failed row.
    """
    opts = options or AnalyzeOptions()
    base = _empty_row(layer)
    if layer.status != "ok" or not layer.kind.analysed:
        base.update(status="skipped", reason=layer.reason or f"{layer.kind.value} not analysed")
        return [base], {}
    note = _degenerate_slices(layer, opts.conv)
    if note:
        opts = replace(opts, conv=ConvMode.FLATTEN)
        esds = None
    try:
        tensor = layer.tensor()
        precision = opts.spectrum_precision
        esds = esds or _layer_spectra(tensor, layer, opts, precision)
        rows, fits = _layer_rows(layer, base, esds, opts, note)
        if precision is Precision.AUTO and any(
            esd.precision == Precision.FLOAT32.value and uncertain_column(esd, fit, opts.fit) != ""
            for (_, esd), fit in zip(esds, fits, strict=True)
        ):
            esds = _layer_spectra(tensor, layer, opts, Precision.FLOAT64)
            rows, _ = _layer_rows(layer, base, esds, opts, note)
        if opts.rand_distance:
            _add_rand_distance(rows, esds, tensor, layer, opts, precision)
        return rows, {row["name"]: esd.evals for row, (_, esd) in zip(rows, esds, strict=True)}
    except Exception as exc:  # one bad layer never sinks the analysis
        base.update(status="failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0])
        return [base], {}


def _add_rand_distance(
    rows: list[dict[str, Any]],
    esds: list[tuple[str, ESD]],
    tensor: torch.Tensor,
    layer: LayerWeights,
    opts: AnalyzeOptions,
    precision: Precision,
) -> None:
    """Fill ``rand_distance``: the distance between each ESD and the permuted weights' ESD.

    Float32 spectra are used only where no eigenvalue can cross a histogram bin edge
    (:func:`~tailwise.spectral.precision.histogram_is_certain`); elsewhere the distance is
    that of the float64 spectra, so the column never depends on the precision.
    """
    permuted = _permuted(tensor, opts.seed, layer.name)
    randoms = _layer_spectra(permuted, layer, opts, precision)
    exact: tuple[list[tuple[str, ESD]], list[tuple[str, ESD]]] | None = None
    for j, (row, (_, esd)) in enumerate(zip(rows, esds, strict=True)):
        random_esd = randoms[j][1]
        if not histogram_is_certain(
            esd.evals, random_esd.evals, error_bound(esd), error_bound(random_esd)
        ):
            if exact is None:
                exact = (
                    _layer_spectra(tensor, layer, opts, Precision.FLOAT64),
                    _layer_spectra(permuted, layer, opts, Precision.FLOAT64),
                )
            esd, random_esd = exact[0][j][1], exact[1][j][1]
        row["rand_distance"] = spectral_distance(esd.evals, random_esd.evals)


def _layer_spectra(
    tensor: torch.Tensor, layer: LayerWeights, opts: AnalyzeOptions, precision: Precision
) -> list[tuple[str, ESD]]:
    return eigenvalues(
        tensor,
        kind=layer.kind,
        conv=opts.conv,
        normalize=opts.normalize,
        method=opts.method,
        device=opts.device,
        precision=precision,
    )


def _layer_rows(
    layer: LayerWeights,
    base: dict[str, Any],
    esds: list[tuple[str, ESD]],
    opts: AnalyzeOptions,
    note: str,
) -> tuple[list[dict[str, Any]], list[PowerLawFit | None]]:
    """One row per ESD of the layer, and the power-law fit behind each row."""
    log_frob = _log_frobenius(esds, opts)
    rows, fits = [], []
    for suffix, esd in esds:
        row, fit = _esd_row({**base, "name": layer.name + suffix}, esd, opts, log_frob)
        if note:
            row["reason"] = "; ".join(filter(None, (note, row["reason"])))
        rows.append(row)
        fits.append(fit)
    return rows, fits


def _to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in _INT_COLUMNS:
        df[col] = pd.array([None if pd.isna(v) else int(v) for v in df[col]], dtype="Int64")
    for col in COLUMNS:
        if col not in _INT_COLUMNS and col not in TEXT_COLUMNS:
            df[col] = df[col].astype("float64")
    return df


def _analyze_all(
    layers: list[LayerWeights],
    options: AnalyzeOptions,
    batches: dict[int, list[tuple[str, ESD]]],
    *,
    workers: int,
    streamed: bool,
    progress: bool,
) -> list[tuple[list[dict[str, Any]], dict[str, NDArray[np.float64]]]]:
    """Per-layer results in layer order, serially or on ``workers`` threads."""
    if workers <= 1:
        results = []
        for index, layer in progress_bar(
            enumerate(layers), len(layers), progress, "analyze", lambda item: item[1].name
        ):
            results.append(analyze_layer(layer, options, esds=batches.pop(index, None)))
            if streamed:
                _release_freed_memory()
        return results
    # Two layers on two single-threaded cores beat one layer on two BLAS threads: LAPACK's
    # eigenvalue reduction is dominated by small BLAS-2 calls that do not scale (measured:
    # ResNet18 stack 1.44 s -> 0.61 s, BERT stack 5.4 s -> 3.6 s on 2 cores).
    with single_threaded(blas=True), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(analyze_layer, layer, options, esds=batches.pop(index, None))
            for index, layer in enumerate(layers)
        ]
        for _ in progress_bar(as_completed(futures), len(futures), progress, "analyze"):
            pass
        return [future.result() for future in futures]


def analyze(
    source: WeightSource,
    *,
    include: str | re.Pattern[str] | None = None,
    exclude: str | re.Pattern[str] | None = None,
    fit: str | float = "ks",
    xmax: float | None = None,
    fix_fingers: str | None = None,
    conv: str = "pooled",
    normalize: str | None = None,
    method: str = "gram",
    rand_distance: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    keep_evals: bool = False,
    trust_pickle: bool = False,
    workers: int | None = None,
    progress: bool = True,
    precision: str = "float64",
) -> pd.DataFrame:
    """HT-SR diagnostics of every weight matrix of ``source``: one row per matrix.

    ``source``: an ``nn.Module``, a state dict, a ``.safetensors`` file, a Hugging Face folder
    or a torch checkpoint (see :func:`tailwise.weights.iter_layers`; files are read one
    tensor at a time). ``fit``: ``"ks"`` (KS-optimal xmin), ``"median"`` (Hill) or a fixed
    xmin; ``xmax`` / ``fix_fingers``: see :func:`~tailwise.spectral.powerlaw.fit_power_law`;
    ``conv``: ``"pooled"`` | ``"slices"`` | ``"flatten"``; ``normalize``: None (W^T W) or
    ``"N"`` (W^T W / N); ``method``: ``"gram"`` | ``"svd"``; ``rand_distance``: also compute
    the JS distance to the ESD of the randomly permuted weights (a second decomposition);
    ``keep_evals``: store ``{name: eigenvalues}`` in ``df.attrs["esd"]`` (for plots);
    ``workers``: layers analysed in parallel threads (default: one per CPU core for an
    in-memory model on the CPU; 1 for files, so that one tensor at a time is in memory).
    ``precision``: arithmetic of the Gram matrices (:mod:`tailwise.spectral.esd`):
    ``"float64"`` (default); ``"float32"`` (faster: 1.2-1.4x on transformer-shaped layers;
    eigenvalues at or below 16 eps32 lambda_max are not data: set to 0, never counted in the
    rank or entropy); ``"auto"``: float32 for a layer with N >= 2 M when every column of its
    rows stays within 1e-4 of float64's under the measured float32 error (first-order bounds,
    :mod:`tailwise.spectral.precision`), float64 otherwise. The ``precision`` column says
    which each row used.

    Columns: :data:`COLUMNS` (documented in the README): ``name`` is the parameter name
    (with a ``[i,j]`` suffix for conv slices), ``layer`` the module that owns it (``""`` for a
    top-level parameter), the key every table of the package joins on. ``df.attrs`` also
    holds ``"source"`` and ``"options"``. Invalid options raise :class:`tailwise.UsageError`.

    >>> import torch
    >>> df = analyze(torch.nn.Linear(100, 50), progress=False)
    >>> row = df.iloc[0]
    >>> row["name"], row["layer"], int(row["N"]), int(row["M"]), row["status"]
    ('weight', '', 100, 50, 'ok')
    """
    options = AnalyzeOptions.parse(
        fit=fit,
        xmax=xmax,
        fix_fingers=fix_fingers,
        conv=conv,
        normalize=normalize,
        method=method,
        rand_distance=rand_distance,
        device=device,
        seed=seed,
        precision=precision,
    )
    layers = list(iter_layers(source, include=include, exclude=exclude, trust_pickle=trust_pickle))
    in_memory = isinstance(source, (torch.nn.Module, Mapping))
    on_cpu = options.device is None or options.device.type == "cpu"
    if workers is None:
        workers = (os.cpu_count() or 1) if in_memory and on_cpu else 1
    if not isinstance(workers, int) or workers < 1:
        raise UsageError(f"analyze: workers must be a positive integer or None; got {workers!r}")
    rows: list[dict[str, Any]] = []
    spectra: dict[str, NDArray[np.float64]] = {}
    # On the CPU the spectra are SciPy's (dsyrk + eigh): BLAS keeps its threads, torch gets
    # one, so that the two pools never spin against each other (tailwise._threads).
    with blas_work() if on_cpu else contextlib.nullcontext():
        batches = _equal_layer_batches(layers, options) if in_memory else {}
        results = _analyze_all(
            layers, options, batches, workers=workers, streamed=not in_memory, progress=progress
        )
    for layer_rows, layer_spectra in results:
        rows.extend(layer_rows)
        spectra.update(layer_spectra)
    df = _to_frame(rows)
    df.attrs["source"] = describe_source(source)
    df.attrs["options"] = {
        "fit": options.fit.value if isinstance(options.fit, XminMethod) else options.fit,
        "xmax": options.xmax,
        "fix_fingers": None if options.fix_fingers is None else options.fix_fingers.value,
        "conv": options.conv.value,
        "normalize": options.normalize.value,
        "method": options.method.value,
        "precision": options.precision.value,
    }
    if keep_evals:
        df.attrs["esd"] = Spectra(spectra)
    return df


def _release_freed_memory() -> None:
    """Return freed heap memory to the OS after a streamed layer (glibc only; else no-op).

    glibc raises its mmap threshold after large frees, so later 8-16 MiB buffers come from
    the heap and stay resident after they are freed: without this, the resident set of a
    streamed analysis grows with the number of layers instead of staying near one layer's
    working set (benchmarks/streaming_memory.py).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _find_malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()

# Equal in-memory layers are decomposed together, up to this many float64 bytes per batch.
_BATCH_BYTES = 256 * 2**20


def _equal_layer_batches(
    layers: list[LayerWeights], options: AnalyzeOptions
) -> dict[int, list[tuple[str, ESD]]]:
    """Spectra of runs of consecutive equal-shape 2-D layers, computed as batches.

    Only for in-memory sources (the tensors are already resident, so stacking a run costs no
    extra reads) on a non-CPU device, where one batched call replaces many small launches. A
    run that fails validation is left to the per-layer path, which reports the bad layer
    alone.
    """
    out: dict[int, list[tuple[str, ESD]]] = {}
    run: list[int] = []

    def key(layer: LayerWeights) -> tuple[Any, ...] | None:
        if layer.status != "ok" or not layer.kind.analysed or len(layer.shape) != 2:
            return None
        return (layer.shape, layer.dtype)

    def flush() -> None:
        if len(run) >= 2:
            try:
                esds = eigenvalues_batch(
                    [layers[i].tensor() for i in run],
                    normalize=options.normalize,
                    method=options.method,
                    device=options.device,
                    precision=options.spectrum_precision,
                )
            except (ValueError, RuntimeError):
                esds = []
            for i, esd in zip(run, esds, strict=False):  # esds is empty on failure
                out[i] = [("", esd)]
        run.clear()

    analysable = [i for i, layer in enumerate(layers) if key(layer) is not None]
    if not analysable:
        return out
    device = options.device or layers[analysable[0]].tensor().device
    if device.type == "cpu":
        # The CPU eigensolver loops over matrices anyway; a batch would only cost memory.
        return out
    for i in analysable:  # biases and norms between equal weights do not break a run
        layer = layers[i]
        if run and (
            key(layer) != key(layers[run[0]]) or (len(run) + 1) * _bytes(layer) > _BATCH_BYTES
        ):
            flush()
        run.append(i)
    flush()
    return out


def _bytes(layer: LayerWeights) -> int:
    return 8 * math.prod(layer.shape)


_SUMMARY_MEANS = (
    "alpha",
    "alpha_weighted",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "log_alpha_norm",
    "mp_softrank",
)


_ALPHA_MEANS = ("alpha", "alpha_weighted", "log_alpha_norm")


def summary(df: pd.DataFrame) -> dict[str, float | int]:
    """Model-level summary of an :func:`analyze` table.

    Means over rows with ``status == "ok"`` of alpha, alpha_weighted, log_norm,
    log_spectral_norm, stable_rank, log_alpha_norm and mp_softrank (NaN values left out; the
    means of alpha, alpha_weighted and log_alpha_norm also leave out fits on fewer than
    :data:`MIN_PL_SPIKES` tail eigenvalues, which carry no label); counts of layers by status
    (``num_ok``, ``num_failed``, ``num_skipped``) and by warning (``num_under_trained``,
    ``num_over_trained``, ``num_empty``).
    """
    missing = [c for c in ("status", "warning", *_SUMMARY_MEANS) if c not in df.columns]
    if missing:
        raise ValueError(f"summary: not an analyze() table, missing columns {missing}")
    ok = df[df["status"] == "ok"]
    # A fit on fewer than MIN_PL_SPIKES tail eigenvalues is shown, not averaged.
    spikes = ok["num_pl_spikes"] if "num_pl_spikes" in ok.columns else None
    labelled = ok if spikes is None else ok[~(spikes.astype("float64") < MIN_PL_SPIKES)]
    out: dict[str, float | int] = {}
    for col in _SUMMARY_MEANS:
        rows = labelled if col in _ALPHA_MEANS else ok
        values = rows[col].astype("float64")
        values = values[np.isfinite(values)]
        out[col] = float(values.mean()) if len(values) else math.nan
    out["num_layers"] = len(df)
    for status in ("ok", "failed", "skipped"):
        out[f"num_{status}"] = int((df["status"] == status).sum())
    for warning in ("under-trained", "over-trained", "empty"):
        out[f"num_{warning.replace('-', '_')}"] = int((df["warning"] == warning).sum())
    return out
