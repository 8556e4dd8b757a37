"""The results store: one folder, one Parquet file per finished trial.

Layout of a store (default ``./tailwise-experiments``, or ``$TAILWISE_EXPERIMENTS``; every
function takes ``store=``)::

    <store>/<experiment>/records/<trial_id>.parquet   one row: the trial's record
    <store>/<experiment>/artifacts/<trial_id>/         files the trial wrote
    <store>/<experiment>/logs/<trial_id>.log           what it printed, its traceback
    <store>/<experiment>/verdict-<scale>.json          the last analysis's verdict

A record (:data:`RECORD_COLUMNS`, then the metrics as columns): ``trial_id``, ``experiment``,
``scale``, ``config`` (canonical JSON text), ``seed``, ``status`` (``"ok"`` or
``"failed"``), ``error`` (the exception's first line, empty when ok), ``seconds``, ``host``,
``pid``, ``started`` / ``finished`` (UTC, ISO 8601) and the versions of tailwise, torch,
numpy and Python. A failed trial's record is replaced by its retry's.

Why one Parquet file per trial. A record is written to a temporary name in its folder and
renamed onto ``<trial_id>.parquet`` (``os.replace``): atomic on POSIX file systems and on
the shared file systems that implement rename atomically (NFS, Lustre, CephFS, GPFS), so a
reader never sees half a record, and writers on many machines need no lock, since no two
trials share a file. SQLite was the other candidate; its own documentation warns that its
file locking is unreliable on network file systems, which is where a cluster's workers
write. A single Parquet (or DuckDB) file would need a rewrite and a lock for every append.
:func:`load` reads the folder as one pyarrow dataset (schemas unified: trials may return
different metrics, failed ones none).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from tailwise._errors import UsageError
from tailwise._io import atomic_open, atomic_path
from tailwise.experiments.model import RECORD_COLUMNS

__all__ = [
    "DEFAULT_STORE",
    "ENV_VAR",
    "RECORD_COLUMNS",
    "artifact_dir",
    "load",
    "log_path",
    "read_statuses",
    "read_verdict",
    "record_path",
    "records_dir",
    "store_path",
    "utc_now",
    "versions",
    "write_record",
    "write_verdict",
]

#: The environment variable that names the default store.
ENV_VAR = "TAILWISE_EXPERIMENTS"
#: The default store, relative to the working directory.
DEFAULT_STORE = "tailwise-experiments"
STATUSES = ("ok", "failed")
_RECORD_SUFFIX = ".parquet"


def store_path(store: str | os.PathLike[str] | None = None) -> Path:
    """The store folder: ``store``, else ``$TAILWISE_EXPERIMENTS``, else
    ``./tailwise-experiments`` (it need not exist yet).

    >>> store_path("results").name
    'results'
    """
    if store is not None:
        return Path(store)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_STORE)


def _experiment_dir(store: Path, experiment: str) -> Path:
    if not experiment or "/" in experiment or experiment.startswith("."):
        raise UsageError(f"store: not an experiment name: {experiment!r}")
    return store / experiment


def records_dir(store: Path, experiment: str) -> Path:
    """``<store>/<experiment>/records``."""
    return _experiment_dir(store, experiment) / "records"


def record_path(store: Path, experiment: str, trial: str) -> Path:
    """``<store>/<experiment>/records/<trial>.parquet``."""
    return records_dir(store, experiment) / f"{trial}{_RECORD_SUFFIX}"


def artifact_dir(store: Path, experiment: str, trial: str) -> Path:
    """``<store>/<experiment>/artifacts/<trial>`` (not created here)."""
    return _experiment_dir(store, experiment) / "artifacts" / trial


def log_path(store: Path, experiment: str, trial: str) -> Path:
    """``<store>/<experiment>/logs/<trial>.log`` (not created here)."""
    return _experiment_dir(store, experiment) / "logs" / f"{trial}.log"


def utc_now() -> str:
    """The time now in UTC, ISO 8601 with microseconds (``2025-01-31T12:00:00.000000Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def versions() -> dict[str, str]:
    """The versions a record keeps: tailwise, torch, numpy and Python.

    >>> sorted(versions())
    ['numpy_version', 'python_version', 'tailwise_version', 'torch_version']
    """
    import numpy
    import torch

    import tailwise

    return {
        "tailwise_version": tailwise.__version__,
        "torch_version": str(torch.__version__),
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
    }


def host_and_pid() -> dict[str, Any]:
    """``{"host": the machine's name, "pid": this process's id}``."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _check_record(record: Mapping[str, Any]) -> None:
    missing = [column for column in RECORD_COLUMNS if column not in record]
    if missing:
        raise UsageError(f"write_record: the record lacks {missing}")
    if record["status"] not in STATUSES:
        raise UsageError(f"write_record: status must be one of {STATUSES}, got {record['status']}")


def write_record(store: Path, record: Mapping[str, Any]) -> Path:
    """Write one trial's record atomically to its ``<trial_id>.parquet`` (replacing a
    previous one, e.g. a failed attempt's). ``record`` has every column of
    :data:`RECORD_COLUMNS` and then metrics (numbers, booleans as ints, short strings).
    Returns the record's path.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_record(record)
    row = {key: [_cell(value)] for key, value in record.items()}
    table = pa.table(row)
    target = record_path(store, str(record["experiment"]), str(record["trial_id"]))
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
    return target


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def _record_files(store: Path, experiment: str) -> list[Path]:
    folder = records_dir(store, experiment)
    if not folder.is_dir():
        return []
    # Temporary files (".<id>.parquet.<pid>.<random>.tmp") do not end in .parquet.
    return sorted(p for p in folder.iterdir() if p.name.endswith(_RECORD_SUFFIX))


def read_statuses(store: Path, experiment: str) -> dict[str, str]:
    """``{trial_id: status}`` of every record of ``experiment`` (only the status column of
    each file is read)."""
    import pyarrow.parquet as pq

    found: dict[str, str] = {}
    for path in _record_files(store, experiment):
        with contextlib.suppress(FileNotFoundError):  # replaced between listing and reading
            status = pq.read_table(path, columns=["status"]).column("status")[0].as_py()
            found[path.name[: -len(_RECORD_SUFFIX)]] = str(status)
    return found


def _read_frame(files: list[Path]) -> pd.DataFrame:
    """The records of ``files`` as one DataFrame with unified columns."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(path) for path in files]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        dataset = ds.dataset([str(p) for p in files], schema=schema, format="parquet")
        return dataset.to_table().to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # A metric that is a number in one trial and text in another: read them one by one
        # and let pandas hold the column as objects.
        frames = [pq.read_table(path).to_pandas().astype(object) for path in files]
        return pd.concat(frames, ignore_index=True).infer_objects()


def load(name: str, store: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every record of experiment ``name`` in ``store`` as a DataFrame, one row per trial.

    Columns: :data:`RECORD_COLUMNS` (``started`` / ``finished`` as UTC timestamps), then the
    config's keys (``config`` keeps the JSON text), then the metrics. Rows are sorted by
    ``scale``, the ``config`` text and ``seed``. An experiment without records gives an empty frame
    with the record columns.

    >>> load("nothing-here", store="/nonexistent").columns[:3].tolist()
    ['trial_id', 'experiment', 'scale']
    """
    root = store_path(store)
    files = _record_files(root, name)
    if not files:
        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    frame = _read_frame(files)
    configs = [json.loads(text) for text in frame["config"]]
    keys: list[str] = []
    for config in configs:
        keys.extend(key for key in config if key not in keys)
    clash = [key for key in keys if key in frame.columns]
    if clash:
        raise UsageError(f"load {name}: config keys {clash} clash with record or metric columns")
    expanded = pd.DataFrame(
        {key: [config.get(key) for config in configs] for key in keys}, index=frame.index
    )
    metrics = [c for c in frame.columns if c not in RECORD_COLUMNS]
    frame = pd.concat([frame[list(RECORD_COLUMNS)], expanded, frame[metrics]], axis=1)
    for column in ("started", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame = frame.sort_values(["scale", "config", "seed"], kind="stable")
    return frame.reset_index(drop=True)


def _verdict_path(store: Path, experiment: str, scale: str) -> Path:
    return _experiment_dir(store, experiment) / f"verdict-{scale}.json"


def write_verdict(store: Path, experiment: str, scale: str, entry: Mapping[str, Any]) -> None:
    """Keep the last analysis of ``experiment`` at ``scale`` (verdict, statement, trials)."""
    with atomic_open(_verdict_path(store, experiment, scale), "w") as handle:
        json.dump(dict(entry), handle, indent=1, sort_keys=True)


def read_verdict(store: Path, experiment: str, scale: str) -> dict[str, Any] | None:
    """The entry :func:`write_verdict` kept, or None."""
    path = _verdict_path(store, experiment, scale)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
