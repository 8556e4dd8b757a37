"""tailwise.experiments.report: one self-contained HTML page, checked as text and in a real
headless Chromium."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from subprocess import CompletedProcess

import matplotlib.image
import numpy as np
import pytest
from tiny_experiments import EVIL_CLAIM, Register, tiny

from tailwise import UsageError
from tailwise.experiments import report, run

RunChromium = Callable[[list[str], Path], CompletedProcess[str]]


class _Page(HTMLParser):
    """Sections, images (decoded), scripts and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[bytes] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("class") == "experiment":
            self.sections.append(str(values.get("id")))
        if tag == "img":
            source = str(values.get("src"))
            assert source.startswith("data:image/png;base64,")
            self.images.append(base64.b64decode(source.split(",", 1)[1]))
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture
def page(tmp_path: Path, registered: Register) -> Path:
    """A store with one finished tiny experiment and one never run; the report of both."""
    registered(tiny("tiny-report", tmp_path / "calls", xs=(1, 2, 3), seeds=3))
    registered(tiny("tiny-empty", tmp_path / "calls-empty"))
    store = tmp_path / "store"
    run("tiny-report", store=store, workers=0, progress=False)
    return report(["tiny-report", "tiny-empty"], tmp_path / "out" / "page.html", store=store)


def test_report_holds_claim_figure_table_verdict_and_command(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    parsed = _parse(html)
    text = " ".join(parsed.text)
    assert parsed.sections == ["exp-tiny-report", "exp-tiny-empty"]
    assert parsed.scripts == 0  # the claim's <script> stayed text
    assert EVIL_CLAIM in text and "<script>alert" not in html
    assert "the source shows y = x^2 <b>exactly</b>" in text  # escaped, shown as written
    assert "tailwise experiment run tiny-report --scale quick --seeds 3" in text
    assert "reproduced" in text and "mean step of y = " in text
    assert re.search(r"Trials ran with tailwise \S+, torch \S+, numpy \S+, python \S+", text)
    assert "9 trials (3 seeds x 3 grid points)" in text
    assert "No finished trials at the quick scale" in text
    assert "tailwise experiment run tiny-empty --scale quick --seeds 2" in text
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    [image] = parsed.images
    pixels = matplotlib.image.imread(io.BytesIO(image), format="png")
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert pixels.shape[0] > 100 and len(colours) > 5
    # the evidence table holds the analysis's rows: x and mean y (x^2 + mean seed 1)
    assert re.search(r"<td class=\"num\">3</td><td class=\"num\">10</td>", html)


def test_report_refuses_a_bad_out_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unsupported suffix '\.txt'"):
        report("002-serw-diffusion", tmp_path / "page.txt", store=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.browser
def test_report_renders_in_chromium(page: Path, tmp_path: Path, run_chromium: RunChromium) -> None:
    done = run_chromium(["--dump-dom", page.as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    rendered = _parse(done.stdout)
    assert rendered.sections == ["exp-tiny-report", "exp-tiny-empty"]
    assert rendered.scripts == 0
    text = " ".join(rendered.text)
    assert EVIL_CLAIM in text and "reproduced" in text
    shot = tmp_path / "page.png"
    done = run_chromium(
        [f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()], tmp_path / "profile"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = np.asarray(matplotlib.image.imread(shot))
    assert pixels.shape[:2] == (1600, 1280)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50
