#!/usr/bin/env bash
# Multi-task product classification from photos (Grocery Store): frozen VGG16 features, four
# architectures x 3 seeds; then freeze=all vs last-block fine-tuning for MMoE.
# Usage: experiments/grocery_multitask/run.sh path/to/GroceryStoreDataset [extra Hydra overrides...]
#   e.g. ... backbone.weights_path=/path/to/vgg16-397923af.pth for ImageNet features
# Environment (for smoke tests and other machines): SWEEP_DIR (default multirun/grocery_multitask;
# the fine-tuning sweep goes to $SWEEP_DIR_finetune), OUT (where runs/, report/, RESULTS.md go;
# default this folder), MTLREC_CACHE_DIR (the feature cache; default ~/.cache/mtlrec).
set -euo pipefail
root=$(cd "${1:?usage: run.sh GROCERY_DIR [overrides...]}" && pwd)  # absolute: the script changes folder
shift
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../paths.sh
source "$here/../paths.sh"
experiment_paths grocery_multitask "$here"
# One job at a time (basic launcher): the first run extracts the features with both cores, every
# later run reads them from the cache. Finished runs are skipped on a re-run (same config hash).
mtlrec-train -m experiment=grocery_multitask data.root="$root" hydra/launcher=basic hydra.sweep.dir="$sweep" "$@"
archive_runs
mtlrec-report "$out/runs" --rows arch --metrics "fine/accuracy,coarse/accuracy,category/accuracy" \
  --baseline arch=single_task \
  --title "Grocery Store, frozen VGG16 features: test accuracy, mean ± std (n seeds)" \
  --notes "$rel/NOTES.md" --out "$out/report" --markdown-file "$out/RESULTS.md"

sweep="${sweep}_finetune"
mtlrec-train -m experiment=grocery_finetune data.root="$root" hydra/launcher=basic hydra.sweep.dir="$sweep" "$@"
python -m mtlrec.report.archive "$sweep" "$out/runs_finetune"
mtlrec-report "$out/runs_finetune" --rows backbone.freeze --metrics "fine/accuracy,coarse/accuracy,category/accuracy" \
  --title "Grocery Store, MMoE: VGG16 base frozen (all) vs last block trained (1), test accuracy" \
  --notes "$rel/FINETUNE_NOTES.md" --out "$out/report_finetune" --markdown-file "$out/FINETUNE.md"
