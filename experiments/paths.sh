# Sourced by every experiments/*/run.sh: where a sweep writes and where its archive and tables go.
# Given folders (SWEEP_DIR, OUT) are taken relative to where the script was called from (and kept
# relative to the repository when inside it); the
# defaults, and every path written into RESULTS.md, are relative to the repository (no machine
# paths in what is published). Leaves the shell in the repository root.
#   experiment_paths NAME SCRIPT_DIR  ->  sets $sweep, $out, $rel
experiment_paths() {
  local name=$1 here=$2
  sweep=multirun/$name
  out=experiments/$name
  rel=experiments/$name
  # a given folder inside the repository stays relative to it (what RESULTS.md records)
  local repo
  repo=$(cd "$here/../.." && pwd)
  if [ -n "${SWEEP_DIR:-}" ]; then sweep=$(realpath -m --relative-base="$repo" "$SWEEP_DIR"); fi
  if [ -n "${OUT:-}" ]; then out=$(realpath -m --relative-base="$repo" "$OUT"); fi
  cd "$here/../.."
}

# keep a publishable copy of every complete result (no checkpoints, no machine paths)
archive_runs() {
  python -m mtlrec.report.archive "$sweep" "$out/runs"
}
