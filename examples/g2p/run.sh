#!/usr/bin/env bash
# The grapheme-to-phoneme job (docs/seq2seq.md#g2p): CMUdict from npm, a deterministic
# train/dev/test split of distinct words, a small T5 trained from scratch (letters in, ARPAbet
# phones out), beam search on the test words, and the phone and word error rates against every
# pronunciation of each word.
#   examples/g2p/run.sh            (G2P_STEPS, default 6000; G2P_DIR, default runs/g2p)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
loom="${LOOM:-$root/build/bin/loom}"
dest="${G2P_DIR:-$root/runs/g2p}"
python3 "$root/examples/g2p/prepare.py" --dest "$dest" --loom "$loom"
vocab="$dest/data/char_vocab.json"
size="$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["tokens"]))' "$vocab")"
# T5 v1.0 shapes, scaled down: 3 + 3 layers, d_model 256, 8 heads of 32, ReLU FFN of 1024, no
# dropout (3 epochs do not overfit). T5 has no absolute positions: letter order reaches the model
# only through block 0's relative-position bias, and learning to use it is the slow first phase
# of this job (loss flat near 1.8 for hundreds of steps); 8 heads leave it sooner than 4, and
# shuffled batches much sooner than --sortish_sampler's (docs/benchmarks.md#g2p-sortish).
"$loom" train --train_file "$dest/data/train.jsonl" --validation_file "$dest/data/validation.jsonl" \
  --tokenizer_name "$vocab" --output_dir "$dest/model" --overwrite_output_dir \
  --vocab_size "$size" --d_model 256 --d_kv 32 --num_heads 8 --d_ff 1024 --dropout_rate 0 --num_layers 3 \
  --per_device_train_batch_size 64 --learning_rate 1e-3 --warmup_steps 300 --weight_decay 0.01 \
  --max_steps "${G2P_STEPS:-6000}" --logging_steps 200 --evaluation_strategy steps --eval_steps 2000 \
  --save_steps 2000 --save_total_limit 1 --seed 1
"$loom" predict --model_name_or_path "$dest/model" --test_file "$dest/data/test.jsonl" \
  --output_dir "$dest/predict" --predict_with_generate --generation_num_beams 5 --generation_max_length 24 \
  --per_device_eval_batch_size 64
python3 "$root/examples/g2p/score.py" "$dest/text/test.jsonl" "$dest/predict/generated_predictions.txt" \
  | tee "$dest/test_scores.json"
