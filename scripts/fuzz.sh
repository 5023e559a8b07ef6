#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, -DLOOM_FUZZ=ON) into BUILD_DIR and runs each
# over its seed corpus for SECONDS (docs/fuzzing.md):
#   scripts/fuzz.sh [BUILD_DIR] [SECONDS] [TARGET...]      (defaults: build-fuzz, 20, all)
# New inputs go to BUILD_DIR/fuzz-corpus/<target>, never into the repository's seeds; a crash
# stops the script with the input libFuzzer wrote (BUILD_DIR/fuzz-artifacts/<target>/crash-*).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-fuzz}"
seconds="${2:-20}"
shift 2 || shift $#
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors model_config args_json ds_config tokens classification bpe checkpoint resume_state
           optimizer_shards store)
fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOOM_FUZZ=ON -DLOOM_CUDA=OFF \
  -DLOOM_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target loom_fuzz
for t in "${targets[@]}"; do
  mkdir -p "$build/fuzz-corpus/$t" "$build/fuzz-artifacts/$t"
  echo "fuzz: $t for ${seconds} s"
  log="$build/fuzz-artifacts/$t.log"
  # The seeds (and the regression inputs of crashes found before) must pass first.
  if ! "$build/tests/fuzz/fuzz_$t" -runs=0 "$root/tests/fuzz/corpus/$t" >"$log" 2>&1 ||
     ! "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$build/fuzz-artifacts/$t/" "$build/fuzz-corpus/$t" "$root/tests/fuzz/corpus/$t" >>"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t failed: $(ls "$build/fuzz-artifacts/$t")" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" | tr '\n' ' '
  echo
done
