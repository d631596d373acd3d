"""Copy a sweep's results into a small, publishable folder of ``results.json`` files.

    python -m mtlrec.report.archive multirun/census_mmoe_table experiments/census_mmoe_table/runs

A sweep folder holds checkpoints and logs (too big to commit) and machine paths. The archive
keeps one ``<run name>/results.json`` per *complete* run, with location keys (data root, output
folders) removed from the config and the overrides, so a committed RESULTS.md can be regenerated
byte for byte from the archive on any machine. Failed or incomplete runs are listed, not copied.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from mtlrec.report.collect import find_run_dirs
from mtlrec.training.results import (
    RESULTS_FILE,
    is_location_key,
    read_results,
    without_location_keys,
    write_json_atomic,
)


def sanitize(record: dict) -> dict:
    """The record without machine-specific locations."""
    clean = dict(record)
    clean["config"] = without_location_keys(record.get("config", {}))
    clean["overrides"] = _without_locations(record.get("overrides", []))
    if isinstance(record.get("stacked"), dict):  # a seed of a stack (seeds=K) keeps the stack's overrides
        stacked = record["stacked"]
        clean["stacked"] = {**stacked, "overrides": _without_locations(stacked.get("overrides", []))}
    return clean


def _without_locations(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not is_location_key(str(o).split("=", 1)[0].lstrip("+~"))]


def archive(sources: Sequence[str | Path], dest: str | Path) -> tuple[int, list[str]]:
    """Replace ``dest`` with sanitized copies; returns (runs copied, runs skipped with why)."""
    dest = Path(dest)
    staging = dest.with_name(f".{dest.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    copied, skipped = 0, []
    for source in map(Path, sources):
        for run_dir in find_run_dirs([source]):
            record = read_results(run_dir)
            if not record or record.get("status") != "complete":
                skipped.append(f"{run_dir}: {'no readable results.json' if not record else record.get('status')}")
                continue
            # named as below the sweep folder: a stacked job's seeds are <job>/seed=<s>
            inside = run_dir.resolve() != source.resolve() and run_dir.resolve().is_relative_to(source.resolve())
            name = run_dir.resolve().relative_to(source.resolve()) if inside else Path(run_dir.name)
            write_json_atomic(staging / name / RESULTS_FILE, sanitize(record))
            copied += 1
    if copied == 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise FileNotFoundError(f"no complete runs under {[str(s) for s in sources]}; nothing archived")
    shutil.rmtree(dest, ignore_errors=True)  # swap in the new archive only once it is complete
    staging.rename(dest)
    return copied, skipped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlrec.report.archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="sweep folders (searched recursively for runs)")
    parser.add_argument("dest", help="archive folder (replaced)")
    args = parser.parse_args(argv)
    try:
        copied, skipped = archive(args.sources, args.dest)
    except FileNotFoundError as err:
        print(f"archive: error: {err}", file=sys.stderr)
        return 2
    print(f"archive: {copied} complete run(s) written to {args.dest}")
    for line in skipped:
        print(f"archive: skipped {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
