#!/usr/bin/env bash
# The format check (scripts/test.sh runs it), against the repository's .clang-format:
#   1. no line of C, C++ or CUDA source is longer than its ColumnLimit, in the whole tree;
#   2. the lines changed since LOOM_FORMAT_BASE (default HEAD, i.e. the uncommitted change; CI
#      passes the branch's merge base) are as clang-format writes them.
# Older code is not reformatted wholesale, which would rewrite most files at once; it converges
# as it is edited. Fix what it reports with `git clang-format $LOOM_FORMAT_BASE`.
# The frozen 1.0 headers (tests/abi/v1.0) are left as they were released.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp' '*.cu' '*.cuh' | grep -v '^tests/abi/v1.0/')
limit="$(sed -n 's/^ColumnLimit: *//p' .clang-format)"
status=0
python3 - "$limit" "${files[@]}" <<'PY' || status=1
import sys
limit, bad = int(sys.argv[1]), 0
for path in sys.argv[2:]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            width = len(line.rstrip("\n").expandtabs(4))
            if width > limit:
                print(f"{path}:{n}: {width} columns (the limit is {limit})")
                bad += 1
sys.exit(1 if bad else 0)
PY
if command -v git-clang-format >/dev/null 2>&1 || command -v clang-format >/dev/null 2>&1; then
  base="${LOOM_FORMAT_BASE:-HEAD}"
  diff="$(git clang-format --diff --extensions c,h,cpp,cu,cuh "$base" -- "${files[@]}" 2>&1 || true)"
  case "$diff" in
  "" | *"no modified files to format"* | *"did not modify any files"*) ;;
  *)
    printf '%s\n' "$diff"
    echo "format: the lines above differ from .clang-format (run: git clang-format $base)" >&2
    status=1
    ;;
  esac
else
  echo "format: clang-format is not installed (scripts/install-deps.sh installs it); only the column limit was checked" >&2
fi
[ "$status" -eq 0 ] && echo "format: ok"
exit "$status"
