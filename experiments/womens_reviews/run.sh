#!/usr/bin/env bash
# Item recommendation + interest prediction on the Women's E-Commerce Clothing Reviews
# (single-task, shared-bottom, MMoE, PLE x 5 seeds).
# Usage: experiments/womens_reviews/run.sh path/to/womens-ecommerce-reviews [extra Hydra overrides...]
# Needs the sweep extra (joblib launcher): pip install -e ".[sweep]"
# Environment (for smoke tests and other machines): SWEEP_DIR (default multirun/womens_reviews),
# OUT (where runs/, report/ and RESULTS.md go; default this folder), LAUNCHER (default local_parallel).
set -euo pipefail
root=$(cd "${1:?usage: run.sh WOMENS_REVIEWS_DIR [overrides...]}" && pwd)  # absolute: the script changes folder
shift
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../paths.sh
source "$here/../paths.sh"
experiment_paths womens_reviews "$here"
# Finished runs are skipped on a re-run (same config hash), so an interrupted sweep just resumes.
mtlrec-train -m experiment=womens_reviews data.root="$root" hydra/launcher="${LAUNCHER:-local_parallel}" \
  hydra.sweep.dir="$sweep" "$@"
archive_runs
mtlrec-report "$out/runs" --rows arch --metrics "recommend/auc,rating/accuracy,department/accuracy" \
  --baseline arch=shared_bottom \
  --title "Women's E-Commerce Clothing Reviews: test metrics, mean ± std (n seeds)" \
  --notes "$rel/NOTES.md" --out "$out/report" --markdown-file "$out/RESULTS.md"
