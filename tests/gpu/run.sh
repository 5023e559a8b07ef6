#!/usr/bin/env bash
# The GPU check, in one command, for a machine WITH an NVIDIA GPU (CI has none and skips it):
#   tests/gpu/run.sh [BUILD_DIR (default: build-gpu)]
# Installs missing Debian packages, configures BUILD_DIR with -DLOOM_CUDA=ON, builds the CUDA
# kernel library and the GPU programs, runs `ctest -L gpu` (every CUDA kernel against its CPU
# twin), then prints the sgemm benchmark table (also saved to BUILD_DIR/bench_cuda_kernels.txt).
#
# Fails (non-zero) when no GPU is visible, and when the GPU test reports itself skipped: this
# script only runs where a GPU is expected, so "no GPU" is an error here, not a skip.
#
# Environment:
#   LOOM_CUDA_ARCHITECTURES  what to compile for (default: native, this machine's GPU only)
#   LOOM_GPU_BUILD_ALL=1     build the whole tree, not just the GPU programs
#   LOOM_BENCH_SECONDS       seconds per benchmark measurement (default 0.3)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build-gpu}"

die() { echo "tests/gpu/run.sh: FAILED: $*" >&2; exit 1; }

# 1. A GPU must be visible.
command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: no NVIDIA driver on this machine"
gpus="$(nvidia-smi -L 2>&1)" || die "nvidia-smi failed: $gpus"
echo "$gpus" | grep -q '^GPU [0-9]' || die "nvidia-smi lists no GPU: $gpus"
echo "== GPUs"
echo "$gpus"
nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed 's/^/driver: /' | head -1

# 2. Build dependencies, and a CUDA compiler (not a Debian package here: the toolkit is NVIDIA's).
"$root/scripts/install-deps.sh"
nvcc_args=()
if ! command -v nvcc >/dev/null 2>&1; then
  for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
    if [ -x "$c" ]; then nvcc_args=(-DCMAKE_CUDA_COMPILER="$c"); break; fi
  done
  [ ${#nvcc_args[@]} -gt 0 ] || die "no nvcc on PATH or under /usr/local/cuda*: install the CUDA toolkit"
fi

# 3. Configure and build.
echo "== configure $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=ON \
  -DLOOM_CUDA_ARCHITECTURES="${LOOM_CUDA_ARCHITECTURES:-native}" "${nvcc_args[@]}" >/dev/null
echo "== build"
if [ "${LOOM_GPU_BUILD_ALL:-0}" = 1 ]; then
  cmake --build "$build" -j"$(nproc)"
else
  cmake --build "$build" -j"$(nproc)" --target test_cuda_kernels bench_cuda_kernels
fi

# 4. The GPU test. A skip (exit 77) means the CUDA runtime saw no device although nvidia-smi
# did (typically a driver older than the toolkit): that is a failure here.
echo "== ctest -L gpu"
log="$build/ctest-gpu.log"
if ! (cd "$build" && ctest -L gpu --no-tests=error --output-on-failure) 2>&1 | tee "$log"; then
  die "GPU tests failed (log: $log)"
fi
if grep -q "Skipped" "$log"; then
  die "the GPU test was skipped: the CUDA runtime sees no device (driver too old for this toolkit?)"
fi

# 5. The benchmark.
echo "== bench_cuda_kernels"
if ! "$build/bench/bench_cuda_kernels" "${LOOM_BENCH_SECONDS:-0.3}" | tee "$build/bench_cuda_kernels.txt"; then
  die "the benchmark failed"
fi
echo "tests/gpu/run.sh: OK"
