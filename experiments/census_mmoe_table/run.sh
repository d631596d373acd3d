#!/usr/bin/env bash
# Reproduce the MMoE paper's Census-Income table (both task groups, 7 architectures × 10 seeds).
# Usage: experiments/census_mmoe_table/run.sh path/to/census-income-kdd [extra Hydra overrides...]
# Needs the sweep extra (joblib launcher): pip install -e ".[sweep]"
# Environment (for smoke tests and other machines): SWEEP_DIR (default multirun/census_mmoe_table),
# OUT (where runs/, report/ and RESULTS.md go; default this folder), LAUNCHER (default local_parallel).
# FAST=1: the fast form, bf16-mixed training through torch.compile (validation and test still score in
# float32), into multirun/census_mmoe_table_fast and fast/ by default, then fast/COMPARISON.md sets its
# cells beside the float32 table's (compare_fast.py). See README.md.
set -euo pipefail
root=$(cd "${1:?usage: run.sh CENSUS_DIR [overrides...]}" && pwd)  # absolute: the script changes folder
shift
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../paths.sh
source "$here/../paths.sh"
experiment_paths census_mmoe_table "$here"
form=() title="Census-Income (MMoE paper protocol): test AUC, mean ± std (n seeds)" notes=(--notes "$rel/NOTES.md")
if [ "${FAST:-0}" = 1 ]; then
  form=(trainer.precision=bf16-mixed compile=true) notes=()
  title="Census-Income (MMoE paper protocol), fast form (bf16-mixed + compile): test AUC, mean ± std (n seeds)"
  [ -n "${SWEEP_DIR:-}" ] || sweep=multirun/census_mmoe_table_fast
  [ -n "${OUT:-}" ] || out=$rel/fast
fi
# Finished runs are skipped on a re-run (same config hash), so an interrupted sweep just resumes.
mtlrec-train -m experiment=census_mmoe_table data.root="$root" hydra/launcher="${LAUNCHER:-local_parallel}" \
  hydra.sweep.dir="$sweep" "${form[@]}" "$@"
archive_runs
mtlrec-report "$out/runs" --rows data.group,arch --metrics "*/auc" \
  --baseline arch=shared_bottom --reference "$rel/paper.yaml" \
  --title "$title" "${notes[@]}" --out "$out/report" --markdown-file "$out/RESULTS.md"
if [ "${FAST:-0}" = 1 ]; then
  python "$rel/compare_fast.py" "$rel/runs" "$out/runs" --out "$out/COMPARISON.md"
fi
