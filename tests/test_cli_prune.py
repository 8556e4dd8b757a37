"""End-to-end tests of ``tailwise prune``, run as real subprocesses.

Every subprocess pays about 3 s of imports, so the ``jobs`` fixture starts all the commands
of this module at once (a few at a time, in the background) and each test waits for the ones
it looks at. One cache directory (the reference MLP, trained once) serves the whole module.
Option checks done before any work run in-process instead (typer's ``CliRunner``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from _cli import run_cli
from tailwise.cli import app
from tailwise.data.digits import digits_loaders
from tailwise.prune import PruneResult, load_pruned, prune
from tailwise.prune.rebuild import ARCHITECTURE_KEY, EDITS_KEY, read_metadata
from tailwise.prune.report import REPORT_COLUMNS
from tailwise.reference import reference_checkpoint, reference_model
from tailwise.train.loop import evaluate

Run = subprocess.CompletedProcess[str]
WORKERS = 2
# One intra-op / BLAS thread, here (fixture below) and in the subprocesses: results computed
# in both compare bit for bit, and on a busy 2-core machine two threads per process spin-wait
# (a low-rank factorization of the reference MLP took 4 s instead of 0.03 s).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def invoke(args: Sequence[str]) -> Run:
    """``tailwise ARGS`` in this process, as a CompletedProcess (stdout and stderr apart)."""
    done = CliRunner().invoke(app, list(args))
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception  # what a user would see as a traceback
    return subprocess.CompletedProcess(list(args), done.exit_code, done.stdout, done.stderr)


class Jobs:
    """``tailwise`` commands running in the background; ``jobs[name]`` waits for one."""

    def __init__(self, cache: Path, root: Path) -> None:
        self.cache = cache
        self.reference_dir = root / "reference"
        self.error_dir = root / "errors"
        for folder in (self.reference_dir, self.error_dir):
            folder.mkdir()
        self.pool = ThreadPoolExecutor(WORKERS)
        self.futures: dict[str, Future[Run]] = {}

    def start(self, name: str, args: Sequence[str], after: str = "", **kwargs: Any) -> None:
        """Run ``tailwise ARGS``; with ``after``, once job ``after`` has finished."""
        assert name not in self.futures, name
        first = self.futures.get(after)

        def job() -> Run:
            if first is not None:
                first.result()
            return run_cli(*args, cache=self.cache, env=ONE_THREAD, **kwargs)

        self.futures[name] = self.pool.submit(job)

    def __getitem__(self, name: str) -> Run:
        return self.futures[name].result()


def uses_reference(args: Sequence[str]) -> bool:
    """Whether a command has no SOURCE (it needs the trained reference network)."""
    return len(args) < 2 or args[1].startswith("-")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def jobs(
    cache: Path, nets: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Jobs]:
    """Every subprocess of this module, started at once (commands: next to their tests)."""
    jobs = Jobs(cache, tmp_path_factory.mktemp("runs"))
    commands = {
        **reference_commands(jobs.reference_dir),
        **error_commands(jobs.error_dir),
    }
    try:
        # Commands with a SOURCE first, while the reference network trains here.
        for name, args in arch_commands(nets[0]).items():
            jobs.start(name, args, pythonpath=nets[0])
        for name, args in commands.items():
            if not uses_reference(args):
                jobs.start(name, args)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TAILWISE_CACHE_DIR", str(cache))
            reference_checkpoint(progress=False)
        for name, args in commands.items():
            if uses_reference(args):
                jobs.start(name, args)
        for name, (after, args) in reprune_commands(jobs.reference_dir).items():
            jobs.start(name, args, after=after)
        yield jobs
    finally:
        jobs.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def reference(jobs: Jobs) -> nn.Module:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAILWISE_CACHE_DIR", str(jobs.cache))
        return reference_model(progress=False)


@pytest.fixture(scope="module")
def digits_test_loader() -> Any:
    """The digits test split, as ``tailwise prune`` measures accuracy on it."""
    return digits_loaders(64, seed=0, flatten=True)[1]


@pytest.fixture(scope="module")
def digits(digits_test_loader: Any) -> torch.Tensor:
    return torch.cat([batch[0] for batch in digits_test_loader])


def assert_ok(result: Run) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def assert_one_line_error(result: Run, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    # the notice naming the reference network's cache file may come first
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("No SOURCE given:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- the reference network, every method --------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: str
    ratio: float
    allocation: str = "uniform"
    report: str | None = None  # suffix of --report


CASES = {
    "magnitude": Case("magnitude", 0.5, report=".html"),
    "global-magnitude": Case("global-magnitude", 0.7, report=".csv"),
    "lowrank": Case("lowrank", 0.5, "alpha:inverse", report=".json"),
    "node": Case("node", 0.3, "erk"),
    "channel-alpha": Case("channel", 0.3, "alpha", report=".html"),
    "magnitude-lamp": Case("magnitude", 0.8, "lamp"),
}
MASKED = {"magnitude", "global-magnitude", "node"}
TOTALS = re.compile(
    r"^params ([\d,]+) -> ([\d,]+) \(([\d.]+)% kept\); FLOPs ([\d.]+)% kept; "
    r"digits test accuracy ([\d.]+)% -> ([\d.]+)%$",
    re.MULTILINE,
)


def reference_commands(folder: Path) -> dict[str, list[str]]:
    commands = {}
    for name, case in CASES.items():
        args = ["prune", "--method", case.method, "--ratio", str(case.ratio)]
        args += ["--allocate", case.allocation, "--out", str(folder / f"{name}.safetensors")]
        if case.report:
            args += ["--report", str(folder / f"{name}{case.report}")]
        commands[name] = args
    return commands


def prune_in_process(model: nn.Module, case: Case) -> PruneResult:
    """What ``tailwise prune --method M --ratio R --allocate A`` does to the reference MLP:
    exactly :func:`tailwise.prune.prune` with the MLP's example input."""
    return prune(
        model,
        case.ratio,
        method=case.method,
        allocation=case.allocation,
        example_inputs=torch.zeros(1, 64),
        progress=False,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_prune_reference_network(
    name: str, jobs: Jobs, reference: nn.Module, digits: torch.Tensor, digits_test_loader: Any
) -> None:
    folder, case, run = jobs.reference_dir, CASES[name], jobs[name]
    assert_ok(run)
    expected = prune_in_process(reference, case)
    totals = expected.totals()
    assert f"tailwise prune ({case.method}): reference MLP (digits)" in run.stdout
    for layer in expected.report["layer"]:
        assert re.search(rf"^│ {re.escape(layer)} ", run.stdout, re.MULTILINE), layer
    found = TOTALS.search(run.stdout)
    assert found, run.stdout
    before, after = (int(found.group(i).replace(",", "")) for i in (1, 2))
    assert before == totals["params_before"] == sum(p.numel() for p in reference.parameters())
    assert after == totals["params_after"] < before
    assert float(found.group(4)) == pytest.approx(100 * totals["flops_ratio"], abs=0.051)
    accuracy = [evaluate(model, digits_test_loader)[1] for model in (reference, expected.model)]
    assert float(found.group(5)) == pytest.approx(100 * accuracy[0], abs=0.006)
    assert float(found.group(6)) == pytest.approx(100 * accuracy[1], abs=0.006)
    assert f"wrote {folder / name}.safetensors" in run.stdout

    loaded = load_pruned(folder / f"{name}.safetensors")
    assert torch.equal(loaded(digits), expected.model.eval()(digits))
    params = list(loaded.parameters())
    if case.method in MASKED:  # masks are baked in: kept weights are the nonzero ones
        assert sum(int(torch.count_nonzero(p)) for p in params) == after
    else:  # physically smaller
        assert sum(p.numel() for p in params) == after
    meta = read_metadata(folder / f"{name}.safetensors")
    assert json.loads(meta[ARCHITECTURE_KEY])["class"] == "MLP"
    assert json.loads(meta[EDITS_KEY]) == expected.edits


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case.report])
def test_prune_report_files(name: str, jobs: Jobs) -> None:
    suffix = CASES[name].report
    path = jobs.reference_dir / f"{name}{suffix}"
    assert_ok(jobs[name])
    assert f"wrote {path}" in jobs[name].stdout
    layers = [f"layers.{i}" for i in range(4)]
    if suffix == ".html":
        text = path.read_text(encoding="utf-8")
        assert "reference MLP (digits)" in text and "<dt>accuracy after</dt>" in text
        assert len(re.findall(r'<tr id="layer-\d+"', text)) == 4
        assert all(f">{layer}<" in text for layer in layers)
        assert "data:image/png;base64," in text and "<script" not in text
        return
    table = pd.read_csv(path) if suffix == ".csv" else pd.DataFrame(json.loads(path.read_text()))
    assert list(table.columns) == list(REPORT_COLUMNS)
    assert list(table["layer"]) == layers
    assert (table["method"] == CASES[name].method).all()


def printed_ratios(stdout: str) -> dict[str, float]:
    """layer -> requested ratio, read from the printed table."""
    found = re.findall(r"^│ (layers\.\d) +│ \w+ +│ +([\d.]+) ", stdout, re.MULTILINE)
    return {layer: float(ratio) for layer, ratio in found}


def test_channel_with_alpha_allocation_keeps_the_classes(jobs: Jobs, digits: torch.Tensor) -> None:
    run = jobs["channel-alpha"]
    assert_ok(run)
    model = load_pruned(jobs.reference_dir / "channel-alpha.safetensors")
    assert model.layers[3].out_features == 10
    assert model(digits).shape == (len(digits), 10)
    ratios = printed_ratios(run.stdout)
    assert sorted(ratios) == [f"layers.{i}" for i in range(4)]
    assert ratios["layers.3"] == 0.0
    assert len({ratios[f"layers.{i}"] for i in range(3)}) > 1  # alpha: unequal ratios


# --- re-pruning a file written by `tailwise prune --out` ---------------------------------


def reprune_commands(folder: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (the job writing its SOURCE, command)."""
    return {
        "channel-then-lowrank": ("channel-alpha", [
            "prune", str(folder / "channel-alpha.safetensors"), "--method", "lowrank",
            "--ratio", "0.4", "--out", str(folder / "channel-lowrank.safetensors"),
        ]),
        "lowrank-then-magnitude": ("lowrank", [
            "prune", str(folder / "lowrank.safetensors"), "--method", "magnitude",
            "--ratio", "0.5", "--out", str(folder / "lowrank-magnitude.safetensors"),
        ]),
    }  # fmt: skip


def test_reprune_channel_then_lowrank(jobs: Jobs, digits: torch.Tensor) -> None:
    folder, run = jobs.reference_dir, jobs["channel-then-lowrank"]
    assert_ok(run)
    assert "digits test accuracy" not in run.stdout  # a file, not the reference network
    first = load_pruned(folder / "channel-alpha.safetensors")
    expected = prune(first, 0.4, method="lowrank", example_inputs=torch.zeros(1, 64))
    final = load_pruned(folder / "channel-lowrank.safetensors")
    assert torch.equal(final(digits), expected.model.eval()(digits))
    meta = read_metadata(folder / "channel-lowrank.safetensors")
    # the original architecture, and the edits of both runs merged
    assert json.loads(meta[ARCHITECTURE_KEY])["hidden"] == [512, 256, 128]
    edits = json.loads(meta[EDITS_KEY])
    assert sorted(edits) == [f"layers.{i}" for i in range(4)]
    assert edits["layers.0"]["type"] == "Sequential"  # low-rank factors of a channel-pruned layer
    factors = edits["layers.0"]["children"]
    assert factors[1][1]["out_features"] == first.layers[0].out_features < 512
    assert isinstance(final.layers[3], nn.Linear)  # the output layer is protected
    assert final.layers[3].out_features == 10


def test_reprune_lowrank_file(jobs: Jobs) -> None:
    """Library bug: any method on a low-rank-pruned MLP crashes in MLP.architecture()."""
    assert_ok(jobs["lowrank-then-magnitude"])
    model = load_pruned(jobs.reference_dir / "lowrank-magnitude.safetensors")
    assert model(torch.zeros(2, 64)).shape == (2, 10)


# --- any architecture: --model and --input-shape ----------------------------------------

NETS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class TinyConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.conv2(x))
            return self.fc(self.pool(x).flatten(1))


    def make_tiny():
        return TinyConv()


    class Reshaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 16, 10)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.fc(x.reshape(x.shape[0], 8 * 16))
    """
)
MODULE = "tailwise_cli_prune_nets"


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """(folder holding the module and its weights, the imported module)."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / f"{MODULE}.py").write_text(NETS)
    (folder / "failed").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        module = __import__(MODULE)
        torch.manual_seed(0)
        tiny = module.TinyConv()
        with torch.no_grad():  # non-trivial BatchNorm statistics
            tiny.bn1.running_mean.uniform_(-0.5, 0.5)
            tiny.bn1.running_var.uniform_(0.5, 2.0)
        save_file(tiny.state_dict(), str(folder / "tiny.safetensors"))  # no metadata
        torch.save(tiny.state_dict(), folder / "tiny.pt")
        save_file(module.Reshaped().state_dict(), str(folder / "reshaped.safetensors"))
        yield folder, module
    sys.modules.pop(MODULE, None)


def arch_commands(folder: Path) -> dict[str, list[str]]:
    return {
        "safetensors": [
            "prune", str(folder / "tiny.safetensors"), "--model", f"{MODULE}:make_tiny",
            "--input-shape", "1,3,8,8", "--method", "channel",
            "--out", str(folder / "a.safetensors"), "--report", str(folder / "a.csv"),
        ],
        "pt": [
            "prune", str(folder / "tiny.pt"), "--model", f"{MODULE}:TinyConv",
            "--input-shape", "1x3x8x8", "--method", "channel", "--ratio", "0.25",
            "--out", str(folder / "b.safetensors"),
        ],
        "reshape": [
            "prune", str(folder / "reshaped.safetensors"), "--model", f"{MODULE}:Reshaped",
            "--input-shape", "1,3,4,4", "--method", "channel",
            "--out", str(folder / "failed" / "r.safetensors"),
            "--report", str(folder / "failed" / "r.html"),
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "weights", "ratio"), [("safetensors", "a", 0.5), ("pt", "b", 0.25)]
)
def test_any_architecture_with_model_and_input_shape(
    name: str, weights: str, ratio: float, jobs: Jobs, nets: tuple[Path, Any]
) -> None:
    folder, module = nets
    run = jobs[name]
    assert_ok(run)
    assert re.search(r"^│ conv1 ", run.stdout, re.MULTILINE), run.stdout
    assert "digits test accuracy" not in run.stdout
    original = module.make_tiny()
    original.load_state_dict(torch.load(folder / "tiny.pt", weights_only=True))
    expected = prune(original, ratio, method="channel", example_inputs=torch.zeros(1, 3, 8, 8))
    assert expected.edits  # shapes changed
    # the file records the edits but no tailwise architecture: rebuilt from the factory
    assert ARCHITECTURE_KEY not in read_metadata(folder / f"{weights}.safetensors")
    loaded = load_pruned(folder / f"{weights}.safetensors", module.make_tiny)
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(images), expected.model.eval()(images))
    assert loaded.conv1.out_channels < 16 and loaded.fc.out_features == 10
    found = re.search(r"^params ([\d,]+) -> ([\d,]+)", run.stdout, re.MULTILINE)
    assert found, run.stdout
    assert int(found.group(2).replace(",", "")) == expected.totals()["params_after"]
    if name == "safetensors":
        table = pd.read_csv(folder / "a.csv")
        assert list(table.columns) == list(REPORT_COLUMNS)
        assert list(table["layer"]) == ["conv1", "conv2", "fc"]


def test_any_architecture_errors(nets: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = nets
    monkeypatch.syspath_prepend(str(folder))
    tiny, pt = str(folder / "tiny.safetensors"), str(folder / "tiny.pt")
    out = ["--out", str(folder / "never.safetensors")]
    found = invoke(["prune", tiny, "--method", "channel", *out])
    assert_one_line_error(found, "records no tailwise architecture", "--model")
    # magnitude/node prune a plain file as it is (prune_file); other methods need the model
    found = invoke(["prune", pt, "--method", "lowrank", *out])
    assert_one_line_error(found, "torch checkpoint", "--model")
    found = invoke(["prune", tiny, "--model", f"{MODULE}:make_tiny", "--method", "channel", *out])
    assert_one_line_error(found, "--input-shape")
    found = invoke(["prune", tiny, "--model", f"{MODULE}:nothing", *out])
    assert_one_line_error(found, f"{MODULE}:nothing", "no callable")
    assert not (folder / "never.safetensors").exists()


def test_unprunable_graph_names_the_layer_and_writes_nothing(
    jobs: Jobs, nets: tuple[Path, Any]
) -> None:
    folder, _ = nets
    assert_one_line_error(jobs["reshape"], "could not be pruned", "'conv'")
    assert leftovers(folder / "failed") == []


# --- one-line errors ------------------------------------------------------------------------

# Errors found while loading or pruning: real subprocesses.
ERRORS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "metric": (["--allocate", "nosuchcolumn"], ("nosuchcolumn", "alpha")),
    "missing": (["{dir}/missing.safetensors"], ("{dir}/missing.safetensors",)),
    "corrupt": (["{dir}/corrupt.safetensors"], ("{dir}/corrupt.safetensors",)),
}
# Option checks done before any work: in-process, 3 s of imports saved each.
OPTION_ERRORS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "ratio-one": (["--ratio", "1.0"], ("ratio", "1.0", "[0, 1)")),
    "ratio-negative": (["--ratio", "-0.1"], ("ratio", "-0.1", "[0, 1)")),
    "method": (["--method", "prune-everything"], ("prune-everything", "magnitude")),
    "lamp-global": (["--method", "global-magnitude", "--allocate", "lamp"], ("global",)),
    "center-lowrank": (["--method", "lowrank", "--center"], ("center", "magnitude")),
    "out-suffix": (["--out", "{dir}/model.pt"], ("unsupported suffix", ".safetensors")),
    "report-suffix": (["--report", "{dir}/report.txt"], ("--report", "unsupported suffix")),
}


def prune_args(name: str, args: list[str], folder: Path) -> list[str]:
    """``prune ARGS`` asking for both outputs too (unless ARGS names them): neither may
    appear after a failure."""
    outputs = {"--out": f"{folder}/{name}.safetensors", "--report": f"{folder}/{name}.html"}
    extra = [
        part for option, path in outputs.items() if option not in args for part in (option, path)
    ]
    return ["prune", *(a.format(dir=folder) for a in args), *extra]


def error_commands(folder: Path) -> dict[str, list[str]]:
    (folder / "corrupt.safetensors").write_bytes(b"not a safetensors file at all")
    return {f"error-{name}": prune_args(name, args, folder) for name, (args, _) in ERRORS.items()}


@pytest.mark.parametrize("name", [n for n in ERRORS if n != "corrupt"])
def test_prune_errors_are_one_line(name: str, jobs: Jobs) -> None:
    folder, run = jobs.error_dir, jobs[f"error-{name}"]
    _, needles = ERRORS[name]
    assert_one_line_error(run, *(n.format(dir=folder) for n in needles))
    assert run.stdout == ""
    assert not (folder / f"{name}.safetensors").exists()
    assert not (folder / f"{name}.html").exists()


def test_prune_corrupt_file_is_one_line(jobs: Jobs) -> None:
    """Library bug: read_metadata lets safetensors' SafetensorError escape as a traceback."""
    assert_one_line_error(jobs["error-corrupt"], str(jobs.error_dir / "corrupt.safetensors"))


def test_failed_prunes_leave_no_files(jobs: Jobs) -> None:
    for name in ERRORS:
        jobs[f"error-{name}"]
    # "metric" fails after the model was loaded and analysed: still no output, no temp file
    assert leftovers(jobs.error_dir) == ["corrupt.safetensors"]


@pytest.mark.parametrize("name", list(OPTION_ERRORS))
def test_bad_options_are_one_line(
    name: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(cache))
    args, needles = OPTION_ERRORS[name]
    result = invoke(prune_args(name, args, tmp_path))
    assert_one_line_error(result, *(n.format(dir=tmp_path) for n in needles))
    assert result.stdout == "" and leftovers(tmp_path) == []
