#!/usr/bin/env bash
# Product photos across categories (Grocery Store): pretrain VGG16-BN + MMoE on Fruit and
# Vegetables (the source), then train on Packages (the target) with k photos per class:
# from scratch vs the source's backbone frozen / last block / full fine-tune, + L2-SP, + augmentation.
# Usage: experiments/grocery_transfer/run.sh path/to/GroceryStoreDataset [extra Hydra overrides...]
# Environment: SWEEP_DIR (default multirun/grocery_transfer), OUT (default this folder), SEEDS
# (default "0 1 2"), SHOTS (default "5 10 all"; all: every training photo), ARMS (default all six: scratch frozen last_block full
# full_l2sp full_augment), IMAGENET (torchvision's vgg16_bn-6c64b313.pth: the
# source step then starts from ImageNet instead of random weights; nothing else changes).
set -euo pipefail
root=$(cd "${1:?usage: run.sh GROCERY_DIR [overrides...]}" && pwd)
shift
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../paths.sh
source "$here/../paths.sh"
experiment_paths grocery_transfer "$here"
seeds=${SEEDS:-0 1 2}
shots=${SHOTS:-5 10 all}
arms=" ${ARMS:-scratch frozen last_block full full_l2sp full_augment} "
extra=("$@")

train() {  # train FOLDER OVERRIDES...; a finished run is skipped (same config hash)
  local dir=$1
  shift
  mtlrec-train data.root="$root" hydra.run.dir="$dir" console.progress_bar=false "${extra[@]}" "$@" \
    > "$dir.log" 2>&1 || { echo "failed: $dir (see $dir.log)" >&2; exit 1; }
}
mkdir -p "$sweep/target"
# step 1: the source
source_run="$sweep/source"
train "$source_run" experiment=grocery_transfer_source ${IMAGENET:+backbone.weights_path="$IMAGENET"}
from_source=(init_from="$source_run" backbone.weights_path="$source_run/backbone.pth")
# the crop (96 px) is then resized to backbone.input_size (64) by the weights' own transform: keep
# its size >= input_size when you change that one (e.g. 224 for ImageNet-sized inputs)
augment='backbone.augment=[{_target_: torchvision.transforms.v2.RandomResizedCrop, size: 96, scale: [0.5, 1.0]}, {_target_: torchvision.transforms.v2.RandomHorizontalFlip}]'
targets=()  # this invocation's target runs: only they are archived (not older runs in the sweep folder)
# step 2: the target arms (the k photos are drawn anew for every seed: data.shots_seed=seed)
for k in $shots; do
  for seed in $seeds; do
    at="$sweep/target/k$k-seed$seed"
    common=(experiment=grocery_transfer data.shots="${k/#all/null}" data.shots_seed="$seed" seed="$seed")
    arm() {  # arm LABEL OVERRIDES...: one target run, when LABEL is in ARMS
      local label=$1
      shift
      [[ $arms == *" $label "* ]] || return 0
      train "$at-$label" "${common[@]}" "$@" label="$label"
      targets+=("$at-$label")
    }
    arm scratch backbone.lr=null
    arm frozen "${from_source[@]}" backbone.freeze=all
    arm last_block "${from_source[@]}" backbone.freeze=1
    arm full "${from_source[@]}"
    arm full_l2sp "${from_source[@]}" 'finetune.l2sp={alpha: 0.1, beta: 0.01}'
    arm full_augment "${from_source[@]}" "$augment"
  done
done

python -m mtlrec.report.archive "$source_run" "$out/runs/source"
python -m mtlrec.report.archive "${targets[@]}" "$out/runs/target"
mtlrec-report "$out/runs/target" --rows data.shots,label --metrics "fine/accuracy,coarse/accuracy" \
  --baseline label=scratch \
  --title "Grocery Store, target Packages with k photos per class: test accuracy, mean ± std (n seeds)" \
  --notes "$rel/NOTES.md" --out "$out/report" --markdown-file "$out/RESULTS.md"
mtlrec-report "$out/runs/source" --rows "" --metrics "fine/accuracy,coarse/accuracy,category/accuracy" \
  --title "Grocery Store, the source step (Fruit and Vegetables, VGG16-BN from random weights, 64 px)" \
  --out "$out/report_source" --markdown-file "$out/SOURCE.md"
