#!/usr/bin/env bash
# The main job: build, make a data set, train the MLP with the default plugins, evaluate,
# predict. Output in ./runs/mlp-spirals.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
loom="$root/build/bin/loom"
data="$root/runs/data/spirals"
out="$root/runs/mlp-spirals"
"$loom" make-data --kind spirals --n_samples 6000 --n_features 2 --n_classes 3 --seed 7 --output_dir "$data"
"$loom" train --output_dir "$out" --overwrite_output_dir \
  --train_file "$data/train.bin" --validation_file "$data/validation.bin" \
  --mlp.hidden_sizes 64,64 --per_device_train_batch_size 32 --learning_rate 3e-3 \
  --num_train_epochs 20 --warmup_ratio 0.05 --weight_decay 0.01 \
  --logging_steps 250 --evaluation_strategy epoch --save_strategy epoch --save_total_limit 2
"$loom" predict --model_name_or_path "$out" --test_file "$data/test.bin"
