"""Tests of the self-contained HTML report (tailwise.report.write_html)."""

from __future__ import annotations

import base64
import io
import math
import os
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from subprocess import CompletedProcess

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

import tailwise.report.html as report_html
from tailwise._io import OutputError
from tailwise.report import write_html

COLUMNS = [
    "name", "kind", "N", "M", "rf", "Q", "num_evals", "alpha", "xmin", "xmax", "D", "sigma",
    "num_pl_spikes", "alpha_weighted", "log_alpha_norm", "norm", "log_norm", "spectral_norm",
    "log_spectral_norm", "stable_rank", "entropy", "matrix_rank", "rank_loss",
    "log_frobenius_norm", "mp_sigma", "num_spikes", "mp_softrank", "rand_distance", "warning",
    "status", "reason",
]  # fmt: skip
EVIL_NAME = '<script>alert("x")</script>.weight'
SUMMARY = {"alpha": 3.5, "log_norm": 1.25, "num_layers": 6, "num_failed": 1}


# The `run_chromium` fixture of conftest.py: run_chromium(args, profile).
RunChromium = Callable[[list[str], Path], CompletedProcess[str]]


def fitted_row(name: str, kind: str, w: np.ndarray) -> tuple[dict[str, object], np.ndarray]:
    """A table row with crude metrics (Hill alpha, REFERENCES §1) and the ESD of ``w``."""
    n, m = max(w.shape), min(w.shape)
    evals = np.linalg.eigvalsh(w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T)
    i = evals.size // 2
    k = evals.size - i
    alpha = 1 + k / (np.log(evals[i:]).sum() - k * np.log(evals[i]))
    warning = "under-trained" if alpha > 6 else "over-trained" if alpha < 2 else ""
    lam_max, total = float(evals[-1]), float(evals.sum())
    p = evals / total
    row: dict[str, object] = {
        "name": name, "kind": kind, "N": n, "M": m, "rf": 1, "Q": n / m,
        "num_evals": evals.size, "alpha": alpha, "xmin": float(evals[i]), "xmax": lam_max,
        "D": 0.05, "sigma": (alpha - 1) / math.sqrt(k), "num_pl_spikes": k,
        "alpha_weighted": alpha * math.log10(lam_max),
        "log_alpha_norm": math.log10(float(np.sum(evals**alpha))), "norm": total,
        "log_norm": math.log10(total), "spectral_norm": lam_max,
        "log_spectral_norm": math.log10(lam_max), "stable_rank": total / lam_max,
        "entropy": float(-(p * np.log(p)).sum() / math.log(m)), "matrix_rank": m,
        "rank_loss": 0, "log_frobenius_norm": 0.5 * math.log10(total), "mp_sigma": 1.0,
        "num_spikes": 2, "mp_softrank": 0.5, "rand_distance": 0.1, "warning": warning,
        "status": "ok", "reason": "",
    }  # fmt: skip
    return row, evals


def not_fitted_row(name: str, status: str, reason: str) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(COLUMNS, math.nan)
    row.update(name=name, kind="linear", warning="", status=status, reason=reason)
    return row


def make_frame(seed: int = 0) -> pd.DataFrame:
    """A realistic analysis table: fitted, skipped and failed layers; ESDs in attrs."""
    rng = np.random.default_rng(seed)
    rows, esd = [], {}
    for name, kind, w in [
        ("features.0.weight", "conv2d", rng.standard_normal((96, 48))),
        ("fc1.weight", "linear", rng.standard_t(2.5, size=(160, 80))),
        (EVIL_NAME, "linear", rng.standard_normal((60, 30))),
        ("fc3.weight", "linear", rng.standard_t(1.5, size=(40, 40))),
    ]:
        row, evals = fitted_row(name, kind, w)
        rows.append(row)
        esd[name] = evals
    rows.insert(2, not_fitted_row("embed.weight", "skipped", "fewer than 10 eigenvalues (3)"))
    rows.append(not_fitted_row("broken.weight", "failed", "LinAlgError: <did not converge> & co"))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["esd"] = esd
    df.attrs["source"] = "nn.Module <MLP> & friends"
    return df


class PageParser(HTMLParser):
    """Collects what the tests look at: table rows, images, figure blocks, scripts, links."""

    def __init__(self) -> None:
        super().__init__()
        self.in_layers_body = False
        self.layer_rows: list[str] = []
        self.images: list[dict[str, str]] = []
        self.figure_ids: list[str] = []
        self.figure_images = 0
        self.in_figure = False
        self.scripts = 0
        self.links: list[str] = []
        self.table_ids: list[str] = []
        self._table_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "table":
            self.table_ids.append(a.get("id", ""))
            self._table_depth += a.get("id") == "layers"
        elif tag == "tbody" and self._table_depth:
            self.in_layers_body = True
        elif tag == "tr" and self.in_layers_body:
            self.layer_rows.append(a.get("id", ""))
        elif tag == "img":
            self.images.append(a)
            self.figure_images += self.in_figure
        elif tag == "section" and "esd-figure" in a.get("class", "").split():
            self.figure_ids.append(a.get("id", ""))
            self.in_figure = True
        elif tag == "script":
            self.scripts += 1
        if "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_layers_body = False
        elif tag == "table":
            self._table_depth = 0
        elif tag == "section":
            self.in_figure = False


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


def decode_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    return np.asarray(matplotlib.image.imread(io.BytesIO(base64.b64decode(uri[len(prefix) :]))))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def report(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert write_html(frame, path, title="my <model>", summary=SUMMARY) == path
    return path


# --- content --------------------------------------------------------------------------------


def test_page_has_table_figures_and_summary(frame: pd.DataFrame, report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    page = parse(text)
    assert "layers" in page.table_ids
    assert page.layer_rows == [f"layer-{i}" for i in range(len(frame))]
    with_evals = [i for i, name in enumerate(frame["name"]) if name in frame.attrs["esd"]]
    assert page.figure_ids == [f"esd-{i}" for i in with_evals]
    assert page.figure_images == len(with_evals)
    assert 'id="alpha-figure"' in text
    for key in SUMMARY:
        assert f"<dt>{key}</dt>" in text
    assert "fewer than 10 eigenvalues (3)" in text  # skipped row keeps its reason
    assert "warning-under-trained" in text or "warning-over-trained" in text
    assert "my &lt;model&gt;" in text and "nn.Module &lt;MLP&gt; &amp; friends" in text


def test_numbers_are_formatted(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    # Counts stay integers, NaN shows as a dash, floats get four significant digits.
    assert '<td class="num">160</td>' in text
    assert '<td class="na">–</td>' in text
    assert not re.search(r"\d\.\d{6,}", text.split('<section id="figures">')[0])


def test_page_is_self_contained(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"https?://", text.replace("http://www.w3.org", ""))
    assert "<link" not in text and "@import" not in text and "url(" not in text
    page = parse(text)
    assert page.scripts == 0
    assert all(href.startswith("#esd-") for href in page.links)
    assert all(img["src"].startswith("data:image/") for img in page.images)


def test_layer_name_is_escaped(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.weight" in text
    assert "&lt;did not converge&gt; &amp; co" in text


def test_images_decode(report: Path) -> None:
    page = parse(report.read_text(encoding="utf-8"))
    assert len(page.images) == 5  # alpha figure + four layers
    for image in page.images:
        pixels = decode_png(image["src"])
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 200
        assert float(pixels.std()) > 0.01


def test_figure_limit_is_stated(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = write_html(frame, tmp_path / "r.html", summary=SUMMARY, max_layer_figures=1)
    text = path.read_text(encoding="utf-8")
    assert parse(text).figure_ids == ["esd-0"]
    assert 'id="figures-truncated"' in text and "first 1 of 4 layers" in text


def test_without_kept_eigenvalues(frame: pd.DataFrame, tmp_path: Path) -> None:
    df = frame.copy()
    df.attrs = {}
    text = write_html(df, tmp_path / "r.html", summary={}).read_text(encoding="utf-8")
    page = parse(text)
    assert page.figure_ids == [] and len(page.layer_rows) == len(df)
    assert "keep_evals=True" in text and "source: unknown" in text


def test_rejects_bad_max_layer_figures(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_layer_figures"):
        write_html(frame, tmp_path / "r.html", summary=SUMMARY, max_layer_figures=-1)
    assert not (tmp_path / "r.html").exists()


# --- atomic writing -------------------------------------------------------------------------


def test_unwritable_location_leaves_nothing(frame: pd.DataFrame, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not-a-dir"):
        write_html(frame, blocker / "sub" / "r.html", summary=SUMMARY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_directory_leaves_nothing(frame: pd.DataFrame, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            write_html(frame, locked / "r.html", summary=SUMMARY)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_failure_midway_keeps_old_file(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.html"
    path.write_text("old report", encoding="utf-8")
    calls = []
    real = report_html.plot_esd_mp

    def fail_on_second_layer(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(report_html, "plot_esd_mp", fail_on_second_layer)
    with pytest.raises(RuntimeError, match="boom"):
        write_html(frame, path, summary=SUMMARY)
    assert len(calls) == 2  # the first layer's block was already written to the temp file
    assert path.read_text(encoding="utf-8") == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


# --- a real browser -------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_renders_table_and_figures(
    frame: pd.DataFrame, report: Path, tmp_path: Path, run_chromium: RunChromium
) -> None:
    done = run_chromium(["--dump-dom", report.as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    page = parse(done.stdout)
    assert page.layer_rows == [f"layer-{i}" for i in range(len(frame))]
    assert len(page.figure_ids) == len(frame.attrs["esd"])
    assert page.figure_images == len(frame.attrs["esd"])
    assert page.scripts == 0  # the escaped name stayed text


@pytest.mark.browser
def test_browser_screenshot_is_not_blank(
    report: Path, tmp_path: Path, run_chromium: RunChromium
) -> None:
    shot = tmp_path / "page.png"
    done = run_chromium(
        [f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()], tmp_path / "profile"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = np.asarray(matplotlib.image.imread(shot))
    assert pixels.shape[:2] == (2000, 1280)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 50


# --- end to end with the real analysis ------------------------------------------------------


def test_report_of_a_real_analysis(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from tailwise.spectral.analyze import analyze, summary

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    df = analyze(model, keep_evals=True, progress=False)
    path = write_html(df, tmp_path / "model.html")  # summary(df) by default
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.layer_rows == [f"layer-{i}" for i in range(len(df))]
    with_evals = [i for i, name in enumerate(df["name"]) if name in df.attrs["esd"]]
    assert len(with_evals) == 4  # two conv, two linear weights; biases are skipped rows
    assert page.figure_ids == [f"esd-{i}" for i in with_evals]
    for key in summary(df):
        assert f"<dt>{key}</dt>" in text
    for image in page.images:
        assert decode_png(image["src"]).shape[0] > 100
