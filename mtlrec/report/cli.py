"""``mtlrec-report``: turn run folders into a paper-style table (Markdown, LaTeX, CSV) and plots.

Examples::

    mtlrec-report multirun/census_arch                       # table to stdout
    mtlrec-report multirun/census_arch --out reports/arch --baseline arch=shared_bottom \\
        --reference experiments/census/paper.yaml --markdown-file experiments/census/RESULTS.md
    mtlrec-report multirun/corr --out reports/corr --plot-x data.correlation \\
        --plot-metric income/loss --plot-lines arch --weights-plot
    mtlrec-report multirun/synthetic --baseline arch=shared_bottom --task-mean mse   # + mean/mse column

With ``--baseline``, every metric of known direction also gets a ``wins`` column: at how many of
the seeds both ran each row's run beat the baseline row's run of the same seed (``8/10``, ties
counted apart). ``--task-mean METRIC`` adds ``<split>/mean/<METRIC>``, each run's mean of that
metric over its tasks, tabulated (std, p-value, wins) like a logged metric.

stdout gets the Markdown table (with its footnotes and the list of excluded runs); warnings and
the list of written files go to stderr so stdout can be redirected into a file as is. Files in
``--out`` are written atomically. Exit status: 0 on success, 2 when nothing can be reported (no
runs under the paths, only failed runs, or an impossible request such as an unknown row key).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from mtlrec.report.collect import Collection, add_task_mean, collect
from mtlrec.report.output import write_text_atomic
from mtlrec.report.plots import plot_metric, plot_weights
from mtlrec.report.reference import load_reference
from mtlrec.report.render import to_csv, to_latex, to_markdown
from mtlrec.report.table import Table, build_table

PROG = "mtlrec-report"
FORMATS = {"md": "results.md", "tex": "results.tex", "csv": "results.csv"}


class ReportError(Exception):
    """A request the runs cannot answer; reported as one ``error:`` line and exit status 2."""


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _assignments(text: str) -> dict[str, str]:
    out = {}
    for part in _csv_list(text):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"expected KEY=VAL[,KEY=VAL], got {text!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    if not out:
        raise argparse.ArgumentTypeError("expected KEY=VAL[,KEY=VAL]")
    return out


def _formats(text: str) -> list[str]:
    chosen = _csv_list(text)
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format(s) {unknown}; choose from {sorted(FORMATS)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Tabulate and plot mtlrec runs (results.json files).")
    add = p.add_argument
    add("paths", nargs="+", metavar="PATH", help="run folders, or folders above them (searched recursively)")
    add("--out", type=Path, metavar="DIR", help="folder for results.{md,tex,csv} and plots (default: stdout only)")
    add("--format", type=_formats, metavar="LIST", default=list(FORMATS),
        help="files to write: md,tex,csv (default: all)")
    add("--split", choices=("test", "val"), default="test", help="metrics of which split (default: test)")
    add("--rows", type=_csv_list, metavar="KEYS",
        help="row keys, e.g. arch,weighting (default: every varying override except seed); "
             "an empty string gives one row of all runs")
    add("--metrics", type=_csv_list, metavar="PATTERN",
        help="glob(s) on task/metric, e.g. '*/auc' or 'income/*'; a bare 'auc' means '*/auc'")
    add("--baseline", type=_assignments, metavar="KEY=VAL[,KEY=VAL]",
        help="row every other row is compared with (Welch's test, and paired wins per seed), "
             "e.g. arch=shared_bottom")
    add("--task-mean", type=_csv_list, action="extend", metavar="METRIC[,METRIC]", default=[],
        help="add a column mean/METRIC: each run's mean of METRIC over the tasks that logged it, "
             "e.g. mse (shown whatever --metrics; repeatable)")
    add("--reference", type=Path, metavar="FILE.yaml", help="reference numbers (format: mtlrec.report.reference)")
    add("--plot-x", metavar="KEY", help="factor on the x axis of a metric plot, e.g. data.correlation")
    add("--plot-metric", metavar="METRIC", help="its y axis: income/loss (split from --split) or test/income/loss")
    add("--plot-lines", metavar="KEY", help="factor giving one line per value, e.g. arch")
    add("--weights-plot", action="store_true", help="plot per-epoch task weights, one panel per row")
    add("--title", metavar="TEXT", help="title of the Markdown file and LaTeX caption")
    add("--markdown-file", type=Path, metavar="PATH", help="also write title + command + table here (e.g. RESULTS.md)")
    add("--notes", type=Path, metavar="FILE.md",
        help="hand-written discussion appended to the Markdown document (kept in its own file, so the "
             "generated RESULTS.md is never edited by hand)")
    return p


def markdown_document(body: str, title: str | None, argv: Sequence[str], notes: str = "") -> str:
    """The table as a stand-alone, committable Markdown file: title, how to regenerate, table."""
    command = shlex.join([PROG, *argv])
    return (f"# {title or 'Results'}\n\n"
            f"Generated by `{PROG}` from the runs' `results.json` files; regenerate with:\n\n"
            f"```\n{command}\n```\n\n{body}" + (f"\n{notes.rstrip()}\n" if notes else ""))


def _collect(paths: Sequence[str]) -> Collection:
    try:
        collection = collect(paths)
    except ValueError as exc:  # e.g. an override key that clashes with a report column
        raise ReportError(str(exc)) from exc
    if collection.empty:
        raise ReportError(f"no runs found under {', '.join(paths)} (looked for results.json files and "
                          "Hydra job folders with .hydra/)")
    if collection.runs.empty:
        listed = "; ".join(f"{p.run_dir}: {p.reason}" for p in collection.problems.itertuples())
        raise ReportError(f"no complete runs under {', '.join(paths)}; "
                          f"{len(collection.problems)} failed/incomplete: {listed}")
    return collection


def _task_means(collection: Collection, args: argparse.Namespace) -> list[str]:
    """Add the ``--task-mean`` columns to the runs (before tables and plots); return warnings."""
    warnings: list[str] = []
    for metric in dict.fromkeys(args.task_mean):  # once each, in the order given
        try:
            warnings += add_task_mean(collection, args.split, metric)[1]
        except ValueError as exc:
            raise ReportError(f"--task-mean {metric}: {exc}") from exc
    return warnings


def _table(collection: Collection, args: argparse.Namespace) -> Table:
    reference = None
    if args.reference is not None:
        try:
            reference = load_reference(args.reference)
        except (OSError, ValueError) as exc:
            raise ReportError(f"cannot read reference file: {exc}") from exc
    try:
        return build_table(collection, split=args.split, row_keys=args.rows, metrics=args.metrics,
                           baseline=args.baseline, reference=reference)
    except ValueError as exc:
        raise ReportError(str(exc)) from exc


def _plot_metric_column(collection: Collection, args: argparse.Namespace) -> str | None:
    """The full ``<split>/<task>/<metric>`` to plot, checked before anything is written."""
    if not args.plot_x:
        return None
    metric = args.plot_metric
    if not metric.startswith(("test/", "val/")):
        metric = f"{args.split}/{metric}"
    for name, what in ((args.plot_x, "--plot-x"), (args.plot_lines, "--plot-lines")):
        if name and name not in collection.factors:
            raise ReportError(f"{what} {name!r} is not an override key; keys: {collection.factors}")
    if metric not in collection.runs.columns:
        raise ReportError(f"--plot-metric {metric!r} not found; metrics: {collection.metric_columns()}")
    return metric


def _plots(collection: Collection, table: Table, metric: str | None, args: argparse.Namespace) -> list[Path]:
    written: list[Path] = []
    if metric is not None:
        written += plot_metric(collection.runs, args.plot_x, metric, args.out, lines=args.plot_lines,
                               title=args.title)
    if args.weights_plot:
        files = plot_weights(collection, table.row_keys, args.out, title=args.title)
        if not files:
            print(f"{PROG}: warning: no run logged weights.per_epoch; no weights plot", file=sys.stderr)
        written += files
    return written


def _read_notes(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text()
    except OSError as err:
        raise ReportError(f"--notes {path}: cannot read it ({err.strerror})") from err


def run(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Collect, tabulate, print and write; raises :class:`ReportError` when there is nothing to say."""
    notes = _read_notes(args.notes)
    collection = _collect(args.paths)
    warnings = _task_means(collection, args)
    table = _table(collection, args)
    metric = _plot_metric_column(collection, args)
    for warning in warnings + table.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    body = to_markdown(table, collection)
    sys.stdout.write(body)
    written: list[Path] = []
    if args.out is not None:
        texts = {"md": markdown_document(body, args.title, argv, notes), "tex": to_latex(table, args.title),
                 "csv": to_csv(table)}
        written += [write_text_atomic(args.out / FORMATS[f], texts[f]) for f in sorted(args.format)]
        written += _plots(collection, table, metric, args)
    if args.markdown_file is not None:
        written.append(write_text_atomic(args.markdown_file, markdown_document(body, args.title, argv, notes)))
    for path in written:
        print(f"{PROG}: wrote {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mtlrec-report`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.plot_x is None) != (args.plot_metric is None):
        parser.error("--plot-x and --plot-metric go together")
    if args.plot_lines and not args.plot_x:
        parser.error("--plot-lines needs --plot-x and --plot-metric")
    if (args.plot_x or args.weights_plot) and args.out is None:
        parser.error("plots need --out DIR")
    try:
        run(args, argv)
    except ReportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
