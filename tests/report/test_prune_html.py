"""Tests of the pruning report page (tailwise.report.write_prune_html)."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from subprocess import CompletedProcess

import matplotlib.image
import numpy as np
import pytest
import torch

import tailwise.report.prune_html as prune_html
from tailwise._io import OutputError
from tailwise.models import MLP, SmallCNN
from tailwise.prune import PruneResult, prune_channels, prune_lowrank, prune_magnitude
from tailwise.report import write_prune_html

EVIL_SOURCE = '<script>alert("x")</script> & co'
ACCURACY = (0.98, 0.97)


# The `run_chromium` fixture of conftest.py: run_chromium(args, profile).
RunChromium = Callable[[list[str], Path], CompletedProcess[str]]


class PageParser(HTMLParser):
    """Collects what the tests look at: summary entries, table rows and cells, images, tags."""

    def __init__(self) -> None:
        super().__init__()
        self.summary: dict[str, str] = {}
        self.layer_rows: list[str] = []
        self.name_cells: list[str] = []
        self.images: list[dict[str, str]] = []
        self.figure_images = 0
        self.scripts = 0
        self.metas: list[dict[str, str]] = []
        self.links: list[str] = []
        self._in_figure = False
        self._in_layers = False
        self._in_name_cell = False
        self._field: str | None = None
        self._term = ""
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "table" and a.get("id") == "layers":
            self._in_layers = True
        elif tag == "tr" and self._in_layers and a.get("id", "").startswith("layer-"):
            self.layer_rows.append(a["id"])
        elif tag == "td" and self._in_layers and "name" in a.get("class", "").split():
            self._in_name_cell, self._text = True, []
        elif tag in ("dt", "dd"):
            self._field, self._text = tag, []
        elif tag == "section" and a.get("id") == "figure":
            self._in_figure = True
        elif tag == "img":
            self.images.append(a)
            self.figure_images += self._in_figure
        elif tag == "script":
            self.scripts += 1
        elif tag == "meta":
            self.metas.append(a)
        for key in ("href", "src"):
            if key in a and tag != "img":
                self.links.append(a[key])

    def handle_data(self, data: str) -> None:
        if self._field or self._in_name_cell:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "dt":
            self._term = "".join(self._text)
            self._field = None
        elif tag == "dd":
            self.summary[self._term] = "".join(self._text)
            self._field = None
        elif tag == "td" and self._in_name_cell:
            self.name_cells.append("".join(self._text))
            self._in_name_cell = False
        elif tag == "table":
            self._in_layers = False
        elif tag == "section":
            self._in_figure = False


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


def decode_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    return np.asarray(matplotlib.image.imread(io.BytesIO(base64.b64decode(uri[len(prefix) :]))))


def magnitude_result() -> PruneResult:
    torch.manual_seed(0)
    return prune_magnitude(MLP(64, [128, 64], 10), 0.6)


def channel_result() -> PruneResult:
    torch.manual_seed(0)
    return prune_channels(SmallCNN(), 0.5, torch.zeros(1, 1, 8, 8))


RESULTS = {"magnitude": magnitude_result, "channel": channel_result}


@pytest.fixture(scope="module", params=sorted(RESULTS))
def written(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PruneResult, Path]:
    result = RESULTS[request.param]()
    path = tmp_path_factory.mktemp(request.param) / "prune.html"
    assert write_prune_html(result, path, source=EVIL_SOURCE, accuracy=ACCURACY) == path
    return result, path


# --- content --------------------------------------------------------------------------------


def test_summary_states_params_flops_and_accuracy(written: tuple[PruneResult, Path]) -> None:
    result, path = written
    page = parse(path.read_text(encoding="utf-8"))
    totals = result.totals()
    assert 0 < totals["params_after"] < totals["params_before"]
    assert page.summary["method"] == result.method
    assert page.summary["params before"] == str(int(totals["params_before"]))
    assert page.summary["params after"] == str(int(totals["params_after"]))
    assert page.summary["params kept"] == f"{totals['params_ratio']:.1%}"
    flops_key = "FLOPs kept" if result.method == "channel" else "FLOPs kept (sparse kernel)"
    assert page.summary[flops_key] == f"{totals['flops_ratio']:.1%}"
    assert page.summary["accuracy before"] == "98.00%"
    assert page.summary["accuracy after"] == "97.00%"


def test_per_layer_figure_decodes(written: tuple[PruneResult, Path]) -> None:
    _, path = written
    page = parse(path.read_text(encoding="utf-8"))
    assert page.figure_images == 1 and len(page.images) == 1
    pixels = decode_png(page.images[0]["src"])
    assert pixels.ndim == 3
    height, width = pixels.shape[:2]
    assert 600 <= width <= 1500 and 150 <= height <= 1500, pixels.shape
    assert float(pixels.std()) > 0.01  # not a blank image


def test_table_has_one_row_per_report_row(written: tuple[PruneResult, Path]) -> None:
    result, path = written
    page = parse(path.read_text(encoding="utf-8"))
    assert len(result.report) >= 3
    assert page.layer_rows == [f"layer-{i}" for i in range(len(result.report))]
    assert page.name_cells == list(result.report["layer"])


def test_hostile_source_is_escaped(written: tuple[PruneResult, Path]) -> None:
    _, path = written
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text
    assert html.escape(EVIL_SOURCE, quote=True) in text
    assert parse(text).scripts == 0


def test_page_is_self_contained(written: tuple[PruneResult, Path]) -> None:
    _, path = written
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"https?://", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    page = parse(text)
    assert page.scripts == 0 and page.links == []
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    csp = [m["content"] for m in page.metas if m.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0] and "script-src" not in csp[0]


def test_title_and_extra_entries(tmp_path: Path) -> None:
    result = magnitude_result()
    path = write_prune_html(
        result, tmp_path / "p.html", title="small <net>", extra={"budget": "60%"}
    )
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert "<title>small &lt;net&gt;</title>" in text
    assert page.summary["budget"] == "60%"
    assert "accuracy before" not in page.summary  # no accuracy given, none shown


def test_speed_up_only_for_physically_smaller_models(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.zeros(1, 64)
    masked = prune_magnitude(MLP(64, [128, 64], 10), 0.8, example_inputs=x)
    smaller = prune_lowrank(MLP(64, [128, 64], 10), 0.8, example_inputs=x)
    for result, name in ((masked, "masked"), (smaller, "smaller")):
        path = write_prune_html(result, tmp_path / f"{name}.html", accuracy=(0.5, 0.25))
        text = path.read_text(encoding="utf-8")
        page = parse(text)
        # Accuracy whenever given, whatever the method.
        assert page.summary["accuracy before"] == "50.00%"
        assert page.summary["accuracy after"] == "25.00%"
        # No text copied from the analysis page about eigenvalues of W^T W.
        assert "W<sup>T</sup>W" not in text and "Eigenvalues" not in text
        if name == "masked":
            assert "FLOPs limit speed-up" not in page.summary
            assert page.summary["dense speed-up"].startswith("none")
        else:
            ratio = result.totals()["flops_ratio"]
            assert ratio < 0.5
            assert page.summary["FLOPs limit speed-up"] == f"{1 / ratio:.2f}x"
            assert "dense speed-up" not in page.summary


def test_a_pruned_file_gets_a_page(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from tailwise.prune import prune_file

    torch.manual_seed(0)
    source = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in MLP(8, [16], 4).state_dict().items()}, str(source))
    result = prune_file(source, None, 0.5, progress=False)
    page = parse(write_prune_html(result, tmp_path / "p.html").read_text(encoding="utf-8"))
    assert page.summary["method"] == "magnitude"
    assert page.name_cells == list(result.report["layer"])
    assert "FLOPs limit speed-up" not in page.summary


# --- errors and atomic writing --------------------------------------------------------------


def test_rejects_what_is_not_a_prune_result(tmp_path: Path) -> None:
    result = magnitude_result()
    with pytest.raises(TypeError, match="PruneResult"):
        write_prune_html(result.report, tmp_path / "p.html")
    with pytest.raises(TypeError, match="PruneResult"):
        write_prune_html(result.model, tmp_path / "p.html")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_unwritable_location_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Not a directory"):
        write_prune_html(magnitude_result(), blocker / "sub" / "p.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


def test_missing_directory_is_created(tmp_path: Path) -> None:
    # atomic_path creates missing parents, so this succeeds rather than raising.
    path = write_prune_html(magnitude_result(), tmp_path / "new" / "p.html")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["p.html"]


def test_failure_midway_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.html"
    path.write_text("old report", encoding="utf-8")

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("boom")

    # The summary block is already in the temporary file when the figure fails.
    monkeypatch.setattr(prune_html, "figure_to_data_uri", broken)
    with pytest.raises(RuntimeError, match="boom"):
        write_prune_html(magnitude_result(), path, accuracy=ACCURACY)
    assert path.read_text(encoding="utf-8") == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]


# --- a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[PruneResult, Path]:
    result = channel_result()
    path = tmp_path_factory.mktemp("browser") / "prune.html"
    write_prune_html(result, path, source=EVIL_SOURCE, accuracy=ACCURACY)
    return result, path


@pytest.mark.browser
def test_browser_renders_the_table(
    channel_page: tuple[PruneResult, Path], tmp_path: Path, run_chromium: RunChromium
) -> None:
    result, path = channel_page
    done = run_chromium(["--dump-dom", path.as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    page = parse(done.stdout)
    assert page.layer_rows == [f"layer-{i}" for i in range(len(result.report))]
    assert page.name_cells == list(result.report["layer"])
    assert page.figure_images == 1
    assert page.scripts == 0  # the escaped source stayed text
    assert page.summary["accuracy after"] == "97.00%"


@pytest.mark.browser
def test_browser_screenshot_is_not_blank(
    channel_page: tuple[PruneResult, Path], tmp_path: Path, run_chromium: RunChromium
) -> None:
    _, path = channel_page
    shot = tmp_path / "page.png"
    done = run_chromium(
        [f"--screenshot={shot}", "--window-size=1280,1400", path.as_uri()], tmp_path / "profile"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = np.asarray(matplotlib.image.imread(shot))
    assert pixels.shape[:2] == (1400, 1280)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 50
