#!/usr/bin/env bash
# Reproduce the MMoE paper's Census-Income table (both task groups, 7 architectures × 10 seeds).
# Usage: experiments/census_mmoe_table/run.sh path/to/census-income-kdd [extra Hydra overrides...]
# Needs the sweep extra (joblib launcher): pip install -e ".[sweep]"
# Environment (for smoke tests and other machines): SWEEP_DIR (default multirun/census_mmoe_table),
# OUT (where runs/, report/ and RESULTS.md go; default this folder), LAUNCHER (default local_parallel).
set -euo pipefail
root=$(cd "${1:?usage: run.sh CENSUS_DIR [overrides...]}" && pwd)  # absolute: the script changes folder
shift
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../paths.sh
source "$here/../paths.sh"
experiment_paths census_mmoe_table "$here"
# Finished runs are skipped on a re-run (same config hash), so an interrupted sweep just resumes.
mtlrec-train -m experiment=census_mmoe_table data.root="$root" hydra/launcher="${LAUNCHER:-local_parallel}" \
  hydra.sweep.dir="$sweep" "$@"
archive_runs
mtlrec-report "$out/runs" --rows data.group,arch --metrics "*/auc" \
  --baseline arch=shared_bottom --reference "$rel/paper.yaml" \
  --title "Census-Income (MMoE paper protocol): test AUC, mean ± std (n seeds)" \
  --notes "$rel/NOTES.md" --out "$out/report" --markdown-file "$out/RESULTS.md"
