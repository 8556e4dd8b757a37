"""The terminal tables (``tailwise._terminal``): fitted to the width, numbers never cut, text
from files never read as rich markup, control characters shown escaped (issue 9, items 1, 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

import tailwise
from tailwise._terminal import columns, plain, print_rows, select_columns

# The default columns of `tailwise analyze` (tailwise.cli._SHOWN), spelled out here so that
# this test does not import the command line.
SHOWN = columns(
    "name! kind N! M! alpha! xmin D num_pl_spikes:tail log_norm log_spectral_norm:log_spec "
    "stable_rank entropy num_spikes:spikes"
)
MUST_KEEP = [col for col, _, keep in SHOWN if keep]
OPTIONAL = [col for col, _, keep in SHOWN if not keep]


@pytest.fixture(scope="module")
def bert_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """`tailwise.analyze` of a small BERT-shaped model: long names, a few 1-D tensors."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for i in range(2):
        for part in ("query", "key", "value"):
            state[f"encoder.layer.{i}.attention.self.{part}.weight"] = torch.randn(
                96, 96, generator=generator
            )
        state[f"encoder.layer.{i}.intermediate.dense.weight"] = torch.randn(
            384, 96, generator=generator
        )
        state[f"encoder.layer.{i}.output.LayerNorm.weight"] = torch.ones(96)
    path = tmp_path_factory.mktemp("bert") / "model.safetensors"
    save_file(state, str(path))
    df = tailwise.analyze(path, progress=False)
    assert (df.loc[df.status != "skipped", "status"] == "ok").all()
    return df


def render(df: pd.DataFrame, width: int, shown: tuple = SHOWN, extra: str = "warning") -> str:
    console = Console(width=width, force_terminal=True, record=True)
    print_rows(console, df, shown, "tailwise analyze: bert", extra)
    return console.export_text()


def left_out_line(text: str) -> str:
    """The 'left out to fit' note, its wrapped lines joined."""
    start = text.find("left out to fit")
    assert start >= 0, text
    return " ".join(text[start:].split())


@pytest.mark.parametrize("width", [80, 120, 200])
def test_tables_fit_the_width_and_never_cut_a_number(bert_table: pd.DataFrame, width: int) -> None:
    text = render(bert_table, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    analysed = bert_table[bert_table.status == "ok"]
    for row in analysed.itertuples():
        assert f" {row.alpha:.3f} " in text
        assert f" {row.N} " in text and f" {row.M} " in text
    # Every name is shown in full (folded over lines, never cut).
    flat = "".join(line.split("│")[1].strip() for line in text.splitlines() if line[:1] == "│")
    for name in analysed.name:
        assert name in flat
    header = next(line for line in text.splitlines() if "┃" in line)
    shown_headers = {cell.strip() for cell in header.split("┃") if cell.strip()}
    for col in MUST_KEEP:
        assert col in shown_headers
    if width == 80:
        note = left_out_line(text)
        dropped = [col for col, head, _ in SHOWN if head not in shown_headers]
        assert dropped, "80 columns cannot hold every default column"
        assert set(dropped) <= set(OPTIONAL)
        for col in dropped:
            assert col in note
        assert f"{len(dropped)} column(s) left out to fit {width}" in text.replace("\n", " ")
        assert "--columns" in note and "--out" in note
    if width == 200:
        assert "left out" not in text
        assert shown_headers >= {head for _, head, _ in SHOWN}


def test_optional_columns_go_from_the_right_end(bert_table: pd.DataFrame) -> None:
    text = render(bert_table, 120)
    note = left_out_line(text)
    listed = note.split(":", 1)[1].split(";", 1)[0]
    dropped = [name.strip() for name in listed.split(",")]
    assert dropped == OPTIONAL[-len(dropped) :]


@pytest.mark.parametrize("width", [40, 60, 70])
def test_narrow_terminals_keep_every_must_keep_column_whole(
    bert_table: pd.DataFrame, width: int
) -> None:
    """Below what the must-keep columns need at their usual widths, the names fold further:
    numbers stay whole, and so do the labels (down to 60 columns; below, they fold)."""
    text = render(bert_table, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    for row in bert_table[bert_table.status == "ok"].itertuples():
        assert f" {row.alpha:.3f} " in text
        assert f" {row.N} " in text and f" {row.M} " in text
    if width >= 60:
        for label in set(bert_table.warning.dropna()) - {""}:
            assert label in text, f"{label!r} cut at {width} columns"


def test_select_columns_keeps_the_order_given_and_keeps_them_all(
    bert_table: pd.DataFrame,
) -> None:
    chosen = select_columns("alpha, name,stable_rank", SHOWN, tailwise.COLUMNS)
    assert [col for col, _, _ in chosen] == ["alpha", "name", "stable_rank"]
    assert all(keep for _, _, keep in chosen)
    text = render(bert_table, 80, chosen)
    header = next(line for line in text.splitlines() if "┃" in line)
    assert [cell.strip() for cell in header.split("┃") if cell.strip()] == [
        "alpha",
        "name",
        "stable_rank",
        "warning",
    ]
    assert "left out" not in text
    everything = select_columns("all", SHOWN, tailwise.COLUMNS)
    assert [col for col, _, _ in everything] == list(tailwise.COLUMNS)
    assert {col for col, _, keep in everything if keep} == set(MUST_KEEP)
    assert select_columns(None, SHOWN, tailwise.COLUMNS) == SHOWN


@pytest.mark.parametrize("width", [80, 200])
def test_columns_all_fits_too(bert_table: pd.DataFrame, width: int) -> None:
    """Every column of the table is wider than any terminal: they are left out from the right
    end as for the default columns, never squeezed to nothing."""
    everything = select_columns("all", SHOWN, tailwise.COLUMNS)
    text = render(bert_table, width, everything)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    header = next(line for line in text.splitlines() if "┃" in line)
    headers = [cell.strip() for cell in header.split("┃") if cell.strip()]
    assert headers[0] == "name" and set(MUST_KEEP) <= set(headers)
    note = left_out_line(text)
    for col, head, _ in everything:
        assert head in headers or col in note
    for row in bert_table[bert_table.status == "ok"].itertuples():
        assert f" {row.alpha:.3f} " in text and f" {row.N} " in text


@pytest.mark.parametrize("option", ["name,bogus", ",", "alpha,Alpha"])
def test_select_columns_unknown_names_list_the_table(option: str) -> None:
    with pytest.raises(tailwise.UsageError) as caught:
        select_columns(option, SHOWN, tailwise.COLUMNS)
    message = str(caught.value)
    assert "\n" not in message
    assert "--columns" in message
    assert ", ".join(tailwise.COLUMNS) in message


HOSTILE = ["[/bold]x.weight", "[link=http://evil]y.weight", "z\x1b[31m.weight", "[red]w[/red]"]


def test_names_are_shown_literally_and_control_characters_escaped() -> None:
    df = pd.DataFrame(
        {
            "name": HOSTILE,
            "N": [40] * 4,
            "M": [20] * 4,
            "alpha": [2.5, 3.25, 4.125, 5.0],
            "status": ["ok", "ok", "failed", "ok"],
            "reason": ["", "", "bad [bold]thing[/bold]\x07", ""],
            "warning": ["", "[i]w[/i]", "", ""],
        }
    )
    shown = columns("name! N! M! alpha!")
    console = Console(width=200, force_terminal=True, record=True)
    print_rows(console, df, shown, "tailwise analyze: [bold]t\x1b[0m", "warning")
    styled = console.export_text(styles=True, clear=False)
    text = console.export_text()
    assert "\x1b" not in text
    for expected in (
        "[/bold]x.weight",
        "[link=http://evil]y.weight",
        "z\\x1b[31m.weight",
        "[red]w[/red]",
        "[i]w[/i]",
        "failed: bad [bold]thing[/bold]\\x07",
        "tailwise analyze: [bold]t\\x1b[0m",
    ):
        assert expected in text
    # No hyperlink and no colour came from a name: the only styles are the table's own.
    assert "http://evil" not in styled.replace("[link=http://evil]y.weight", "")
    assert "\x1b]8;" not in styled


def test_skipped_reasons_are_escaped_too() -> None:
    df = pd.DataFrame(
        {
            "name": ["a.weight", "b"],
            "alpha": [2.0, float("nan")],
            "status": ["ok", "skipped"],
            "reason": ["", "[/dim]odd\x1b"],
            "warning": ["", ""],
        }
    )
    console = Console(width=120, force_terminal=True, record=True)
    print_rows(console, df, columns("name! alpha!"), "t", "warning")
    text = console.export_text()
    assert "1 [/dim]odd\\x1b" in text


def test_plain_escapes_markup_and_control_characters() -> None:
    console = Console(width=100, force_terminal=False, record=True)
    for value in [*HOSTILE, "del\x7f csi\x9b bell\x07"]:
        console.print(plain(value), end="")
        printed = console.export_text()
        assert "\x1b" not in printed and "\x9b" not in printed and "\x7f" not in printed
        assert printed == plain(value).replace("\\[", "[")
    assert "\\x1b" in plain("z\x1b[31m")


def test_piped_console_is_200_wide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tailwise._terminal import console

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    assert console().width == 200  # pytest captures stdout: not a terminal


def test_chosen_columns_wider_than_the_terminal_are_never_cut(bert_table: pd.DataFrame) -> None:
    """Columns named with --columns are all kept; when they cannot fit, the table is drawn
    wider than the terminal (the terminal wraps it) and says so, instead of cutting numbers."""
    chosen = select_columns(
        "name,N,M,alpha,alpha_weighted,log_norm,log_spectral_norm,stable_rank,entropy,xmin,D",
        SHOWN,
        tailwise.COLUMNS,
    )
    text = render(bert_table, 60, chosen)
    assert "…" not in text
    header = next(line for line in text.splitlines() if "┃" in line)
    headers = [cell.strip() for cell in header.split("┃") if cell.strip()]
    assert headers[:-1] == [head for _, head, _ in chosen]
    for row in bert_table[bert_table.status == "ok"].itertuples():
        assert f" {row.alpha:.3f} " in text and f" {row.stable_rank:.3f} " in text
    assert "the terminal has 60" in " ".join(text.split())
