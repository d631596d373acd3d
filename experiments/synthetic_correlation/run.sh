#!/usr/bin/env bash
# The MMoE paper's Figure 4 setting: test loss vs task correlation per architecture, 10 paired seeds.
# Usage: experiments/synthetic_correlation/run.sh [extra Hydra overrides...]   (needs: pip install -e ".[sweep]")
# Environment (for smoke tests and other machines): SWEEP_DIR (default multirun/synthetic_correlation),
# OUT (where runs/, report/ and RESULTS.md go; default this folder), LAUNCHER (default local_parallel).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../paths.sh
source "$here/../paths.sh"
experiment_paths synthetic_correlation "$here"
mtlrec-train -m experiment=synthetic_correlation hydra/launcher="${LAUNCHER:-local_parallel}" hydra.sweep.dir="$sweep" "$@"
archive_runs
mtlrec-report "$out/runs" --rows data.correlation,arch --metrics mse \
  --task-mean mse --baseline arch=shared_bottom \
  --plot-x data.correlation --plot-metric test/mean/mse --plot-lines arch \
  --title "Synthetic data (MMoE paper Fig. 4 setting): test MSE, mean ± std over 10 paired seeds" \
  --notes "$rel/NOTES.md" --out "$out/report" --markdown-file "$out/RESULTS.md"
