#!/usr/bin/env bash
# The MMoE paper's Figure 4 setting: test loss vs task correlation per architecture, 10 paired seeds.
# Usage: experiments/synthetic_correlation/run.sh      (needs: pip install -e ".[sweep]")
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
mtlrec-train -m experiment=synthetic_correlation hydra/launcher=local_parallel
# keep a publishable copy of every complete result (no checkpoints, no machine paths)
python -m mtlrec.report.archive multirun/synthetic_correlation experiments/synthetic_correlation/runs
mtlrec-report experiments/synthetic_correlation/runs --rows data.correlation,arch --metrics mse \
  --task-mean mse --baseline arch=shared_bottom \
  --plot-x data.correlation --plot-metric test/mean/mse --plot-lines arch \
  --title "Synthetic data (MMoE paper Fig. 4 setting): test MSE, mean ± std over 10 paired seeds" \
  --notes "experiments/synthetic_correlation/NOTES.md" --out "experiments/synthetic_correlation/report" --markdown-file "experiments/synthetic_correlation/RESULTS.md"
