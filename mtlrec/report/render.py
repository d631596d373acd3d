"""Render a :class:`~mtlrec.report.table.Table` as Markdown, LaTeX or CSV.

Conventions, the same in every format:

* a cell is ``mean ± std (n)`` over seeds (``mean (n)`` when n = 1; ``—`` when no run logged it);
* **best** per metric column: bold in Markdown (``**…**``) and LaTeX (``\\textbf{…}``); in CSV a
  boolean ``<metric>/best`` column. Higher is better for AUC/accuracy-like metrics, lower for
  loss/logloss/MSE; ties at the printed precision are all marked;
* **significance** vs ``--baseline``: ``†`` after a cell (LaTeX ``$^{\\dagger}$``) when Welch's
  two-sided p < 0.05, explained in a footnote; in CSV the p-value itself, ``<metric>/p_value``;
* **paired wins** vs ``--baseline``: a ``<metric> wins`` column after each metric of known
  direction, ``k/n`` = this row's run beat the baseline row's run of the same seed at k of the n
  seeds both ran, ``k/n (t ties)`` when t seeds gave exactly equal values; ``(baseline)`` on the
  baseline rows themselves, ``—`` where a row has no baseline row. In CSV ``<metric>/wins``,
  ``/ties`` and ``/paired_n`` (empty where not applicable);
* **task means** (``--task-mean``): ``mean/<metric>`` columns at the right, named in a footnote;
* reference columns (``--reference``) follow the metric they refer to, headed ``<metric> (<name>)``.

Outputs hold no timestamps or absolute paths of their own, so regenerating gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pandas as pd

from mtlrec.report.collect import Collection
from mtlrec.report.stats import SIGNIFICANCE_LEVEL, Summary, Wins, decimals, direction, metric_name
from mtlrec.report.reference import ALL_ROWS_LABEL
from mtlrec.report.table import PARAMS, THROUGHPUT, Table, format_value

DAGGER = "†"
PLUS_MINUS = " ± "
NO_VALUE = "—"


# --------------------------------------------------------------------------- cells


def format_summary(s: Summary, places: int, pm: str = PLUS_MINUS, none: str = NO_VALUE,
                   thousands: bool = False, with_n: bool = True) -> str:
    """``0.9512 ± 0.0010 (3)``; see the module docstring for the n = 1 and n = 0 cases."""
    if s.n == 0 or not math.isfinite(s.mean):
        return none
    spec = f"{',' if thousands else ''}.{places}f"
    text = format(s.mean, spec)
    if math.isfinite(s.std):
        text += pm + format(s.std, spec)
    return f"{text} ({s.n})" if with_n else text


def format_params(bounds: tuple[float, float], dash: str = "–") -> str:
    """Parameter count with thousands separators; a range if a row mixes model sizes."""
    low, high = bounds
    if not math.isfinite(low):
        return NO_VALUE
    return f"{low:,.0f}" if low == high else f"{low:,.0f}{dash}{high:,.0f}"


def metric_header(column: str) -> str:
    """``test/income/auc`` -> ``income/auc`` (the split is stated once, in the footnote)."""
    return column.split("/", 1)[1]


def format_wins(wins: Wins | None, is_baseline: bool = False) -> str:
    """``8/10``, ``7/10 (1 tie)``; ``(baseline)`` for a baseline row, ``—`` when not compared."""
    if is_baseline:
        return "(baseline)"
    if wins is None or wins.wins is None:
        return NO_VALUE
    text = f"{wins.wins}/{wins.n}"
    if wins.ties:
        text += f" ({wins.ties} tie{'s' if wins.ties != 1 else ''})"
    return text


def wins_columns(table: Table) -> list[str]:
    """The metric columns followed by a wins column: with a baseline, those of known direction."""
    if not table.baseline:
        return []
    return [col for col in table.columns if direction(col) is not None]


def _is_baseline_row(table: Table, row: int) -> bool:
    return bool(table.baseline_rows) and table.baseline_rows[row] == row


def _throughput_places(table: Table) -> int:
    return decimals(THROUGHPUT, [s.mean for s in table.throughput])


def _reference_text(value: object, places: int) -> str:
    if value is None:
        return ""
    return format(value, f".{places}f") if isinstance(value, float) else str(value)


def _grid(
    table: Table, cell: Callable[[int, str, str], str], text: Callable[[str], str]
) -> tuple[list[str], list[list[str]]]:
    """Header and body shared by Markdown and LaTeX.

    ``cell(row, column, kind)`` formats a value cell in the target syntax; ``text`` escapes plain
    text (headers and factor values) for it.
    """
    with_wins = set(wins_columns(table))
    header = list(table.row_keys) or ["runs"]
    for col in table.columns:
        header.append(metric_header(col))
        if col in with_wins:
            header.append(f"{metric_header(col)} wins")
        header += [f"{metric_header(col)} ({name})" for name in table.reference_columns(col)]
    header = [text(h) for h in header + ["samples/s", "params"]]
    body = []
    for i, values in enumerate(table.rows):
        line = [text(format_value(v)) for v in values] or [text(ALL_ROWS_LABEL)]
        for col in table.columns:
            line.append(cell(i, col, "metric"))
            if col in with_wins:
                line.append(text(format_wins(table.cells[(i, col)].wins, _is_baseline_row(table, i))))
            line += [cell(i, col, f"ref:{name}") for name in table.reference_columns(col)]
        line.append(cell(i, THROUGHPUT, "throughput"))
        line.append(cell(i, PARAMS, "params"))
        body.append(line)
    return header, body


def _footnotes(table: Table, text: Callable[[str], str], code: Callable[[str], str]) -> list[str]:
    """The notes under a table; ``text`` escapes prose, ``code`` typesets a literal spec."""
    notes = [text(f"Cells: mean ± sample std (number of seeds) of complete runs on the {table.split} split; "
                  "best per column in bold (higher is better for AUC/accuracy, lower for loss/logloss/MSE).")]
    if table.baseline:
        spec = ",".join(f"{k}={v}" for k, v in sorted(table.baseline.items()))
        notes.append(text(f"{DAGGER} p < {SIGNIFICANCE_LEVEL:g}, Welch's two-sided t-test over seeds against ")
                     + code(spec) + text(" with the same other factors."))
        if wins_columns(table):
            if table.paired_on:
                unit = f"({', '.join(['seed', *table.paired_on])}) pairs"
                also = f" and the same {', '.join(table.paired_on)}"
            else:
                unit, also = "seeds", ""
            note = (f"Wins k/n: this row's run beat the baseline row's run with the same seed{also} at k of "
                    f"the n {unit} both ran (paired run against run; {unit} only one side ran are left out); "
                    f"(t ties): {unit} with exactly equal values, neither wins nor losses.")
            if len(wins_columns(table)) < len(table.columns):
                note += " Metrics of unknown direction have no wins column."
            notes.append(text(note))
    for col, tasks in table.derived.items():
        notes.append(text(f"{metric_header(col)}: per-run mean of {metric_name(col)} over tasks "
                          f"{', '.join(tasks)}, then summarised over seeds like the other columns."))
    return notes


# --------------------------------------------------------------------------- Markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table, collection: Collection | None = None) -> str:
    """A GitHub-flavoured Markdown table, its footnotes, and the runs left out of it."""
    tp_places = _throughput_places(table)

    def cell(i: int, col: str, kind: str) -> str:
        if kind == "throughput":
            return format_summary(table.throughput[i], tp_places, thousands=True, with_n=False)
        if kind == "params":
            return format_params(table.params[i])
        if kind.startswith("ref:"):
            return _reference_text(table.reference(kind[4:], i, col), table.decimals[col])
        c = table.cells[(i, col)]
        text = format_summary(c.summary, table.decimals[col])
        if c.best:
            text = f"**{text}**"
        if c.p_value < SIGNIFICANCE_LEVEL:
            text += f" {DAGGER}"
        return text

    header, body = _grid(table, cell, _md_escape)
    n_keys = max(1, len(table.row_keys))
    align = [":--"] * n_keys + ["--:"] * (len(header) - n_keys)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines.append("")
    lines += _footnotes(table, lambda s: s, lambda s: f"`{s}`")
    lines.append("")
    lines += _run_notes(table, collection)
    return "\n".join(lines).rstrip("\n") + "\n"


def _run_notes(table: Table, collection: Collection | None) -> list[str]:
    """What was used and what was left out — so an excluded failed seed is never invisible."""
    problems = collection.problems if collection is not None else pd.DataFrame()
    dupes = collection.duplicates if collection is not None else pd.DataFrame()
    lines = [f"{table.n_runs} complete run(s) used; {len(dupes)} duplicate(s) skipped; "
             f"{len(problems)} failed/incomplete run(s) excluded."]
    if len(problems):
        lines += ["", "**Failed / incomplete runs (excluded):**", ""]
        for p in problems.itertuples():  # discovery order: paths as given, jobs in natural order
            what = f" (`{p.overrides}`)" if p.overrides else ""
            lines.append(f"- `{p.run_dir}`{what}: {_md_escape(p.reason)}")
    if len(dupes):
        lines += ["", "**Duplicate runs (same config hash and seed; skipped):**", ""]
        for d in dupes.itertuples():
            lines.append(f"- `{d.run_dir}` duplicates `{d.kept}` (config {d.config_hash}, seed {d.seed})")
    return lines


# --------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "—": "--", "–": "--", "†": r"$^{\dagger}$", "<": r"$<$", ">": r"$>$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and typeset ±, †, dashes) in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table, title: str | None = None) -> str:
    """A plain ``tabular`` (no booktabs) in a ``table`` float, footnotes below it."""
    tp_places = _throughput_places(table)

    def cell(i: int, col: str, kind: str) -> str:
        if kind == "throughput":
            return latex_escape(format_summary(table.throughput[i], tp_places, thousands=True, with_n=False))
        if kind == "params":
            return latex_escape(format_params(table.params[i]))
        if kind.startswith("ref:"):
            return latex_escape(_reference_text(table.reference(kind[4:], i, col), table.decimals[col]))
        c = table.cells[(i, col)]
        text = latex_escape(format_summary(c.summary, table.decimals[col]))
        if c.best:
            text = rf"\textbf{{{text}}}"
        if c.p_value < SIGNIFICANCE_LEVEL:
            text += latex_escape(DAGGER)
        return text

    header, body = _grid(table, cell, latex_escape)
    n_keys = max(1, len(table.row_keys))
    spec = "l" * n_keys + "r" * (len(header) - n_keys)
    lines = ["% Generated by mtlrec-report; regenerate rather than edit.", r"\begin{table}[t]", r"\centering"]
    if title:
        lines.append(rf"\caption{{{latex_escape(title)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\hline",
              " & ".join(header) + r" \\", r"\hline"]
    lines += [" & ".join(row) + r" \\" for row in body]
    lines += [r"\hline", r"\end{tabular}", ""]
    for note in _footnotes(table, latex_escape, lambda s: rf"\texttt{{{latex_escape(s)}}}"):
        lines.append(rf"{{\footnotesize {note}\par}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CSV


def to_frame(table: Table) -> pd.DataFrame:
    """One row per table row with raw numbers: the machine-readable twin of the table.

    Columns: the row keys (or ``label`` alone), ``label``, then per metric ``<metric>/mean``,
    ``/std``, ``/n``, ``/best`` (bool), ``/p_value``, ``/wins``, ``/ties``, ``/paired_n`` (these four
    with a baseline; the counts empty for baseline rows, rows without a baseline row, and — wins
    and ties — metrics of unknown direction), ``/ref:<name>``; then
    ``train_samples_per_second/mean`` and ``/std``, ``num_parameters/min`` and ``/max`` (equal
    unless a row mixes model sizes); ``baseline`` names the
    row each row was tested against.
    """
    records = []
    for i, values in enumerate(table.rows):
        rec: dict[str, object] = {k: (None if v is None else v) for k, v in zip(table.row_keys, values)}
        rec["label"] = table.label(i)
        for col in table.columns:
            c = table.cells[(i, col)]
            rec[f"{col}/mean"] = c.summary.mean
            rec[f"{col}/std"] = c.summary.std
            rec[f"{col}/n"] = c.summary.n
            rec[f"{col}/best"] = c.best
            if table.baseline:
                rec[f"{col}/p_value"] = c.p_value
                w = c.wins
                rec[f"{col}/wins"] = None if w is None else w.wins
                rec[f"{col}/ties"] = None if w is None else w.ties
                rec[f"{col}/paired_n"] = None if w is None else w.n
            for name in table.reference_columns(col):
                rec[f"{col}/ref:{name}"] = table.reference(name, i, col)
        rec[f"{THROUGHPUT}/mean"] = table.throughput[i].mean
        rec[f"{THROUGHPUT}/std"] = table.throughput[i].std
        rec[f"{PARAMS}/min"], rec[f"{PARAMS}/max"] = table.params[i]
        if table.baseline:
            b = table.baseline_rows[i]
            rec["baseline"] = table.label(b) if b is not None else None
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    counts = [c for c in frame.columns if c.endswith(("/wins", "/ties", "/paired_n"))]
    # Integer counts with gaps: nullable integers, so CSV says "8" and "", never "8.0" and "nan".
    return frame.astype({c: "Int64" for c in counts})


def to_csv(table: Table) -> str:
    """:func:`to_frame` as CSV text (``\\n`` line ends, full float precision)."""
    buf = io.StringIO()
    to_frame(table).to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()
