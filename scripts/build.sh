#!/usr/bin/env bash
# Configures and builds loom out of tree: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# This is the developers' build: warnings are errors (LOOM_FATAL_WARNINGS=ON; pass
# -DLOOM_FATAL_WARNINGS=OFF after the folder to turn that off). A plain cmake build leaves it off.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
shift || true
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" -DLOOM_FATAL_WARNINGS=ON "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
