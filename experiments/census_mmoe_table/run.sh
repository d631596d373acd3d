#!/usr/bin/env bash
# Reproduce the MMoE paper's Census-Income table (both task groups, 7 architectures × 10 seeds).
# Usage: experiments/census_mmoe_table/run.sh path/to/census-income-kdd
# Needs the sweep extra (joblib launcher): pip install -e ".[sweep]"
set -euo pipefail
root=$(cd "${1:?usage: run.sh CENSUS_DIR}" && pwd)  # absolute: the script changes folder
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
# Finished runs are skipped on a re-run (same config hash), so an interrupted sweep just resumes.
mtlrec-train -m experiment=census_mmoe_table data.root="$root" hydra/launcher=local_parallel
# keep a publishable copy of every complete result (no checkpoints, no machine paths)
python -m mtlrec.report.archive multirun/census_mmoe_table experiments/census_mmoe_table/runs
mtlrec-report experiments/census_mmoe_table/runs --rows data.group,arch --metrics "*/auc" \
  --baseline arch=shared_bottom --reference "experiments/census_mmoe_table/paper.yaml" \
  --title "Census-Income (MMoE paper protocol): test AUC, mean ± std (n seeds)" \
  --notes "experiments/census_mmoe_table/NOTES.md" --out "experiments/census_mmoe_table/report" --markdown-file "experiments/census_mmoe_table/RESULTS.md"
