#!/usr/bin/env bash
# Fetches the Debian packages loom builds with (the libraries and headers of
# scripts/install-deps.sh, and cmake/pkg-config themselves) as .debs into a git-ignored folder,
# for a GPU machine that has the CUDA toolkit but no apt and no network:
#   tests/gpu/fetch-debs.sh [FOLDER (default: tests/gpu/debs)]
# Run it HERE (a Debian machine with network). tests/gpu/run.sh unpacks the folder with
# `dpkg -x` into a local prefix on the GPU machine and points CMake and pkg-config at it.
# The folder is git-ignored: hand it to the device tool with carry (see tests/gpu/README.md).
#
# The dependency closure is taken from apt-cache, without the base system every machine has
# (the C library, the compiler runtime, perl, debconf...): those come from the GPU machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$root/tests/gpu/debs}"
top=(cmake pkgconf libcjson-dev libltdl-dev libopenblas-dev libopenblas-openmp-dev libpcre2-dev libssl-dev libdnnl-dev libgloo-dev libsentencepiece-dev)
# Base packages a machine running PyTorch has; unpacking other versions of them would shadow its own.
base='^(libc6|libc-dev-bin|libc6-dev|linux-libc-dev|libgcc-s1|libgcc-.*-dev|libstdc\+\+6|libstdc\+\+-.*-dev|gcc|gcc-.*|cpp|cpp-.*|g\+\+.*|binutils.*|libbinutils|libctf.*|libgprofng.*|libsframe.*|libjansson4|perl|perl-.*|libperl.*|debconf|debconf-2.0|dpkg|tar|coreutils|libcrypt1|libcrypt-dev|zlib1g|libzstd1|liblzma5|libbz2-1.0|libselinux1|libpcre2-8-0-udeb|libgomp1|libquadmath0|libgfortran5|libatomic1|libasan.*|liblsan.*|libtsan.*|libubsan.*|libhwasan.*|libitm1|libcc1-0|libisl23|libmpc3|libmpfr6|libgmp10|rpcsvc-proto|libnsl.*|libtirpc.*|libc-bin|libnss.*|libkrb5.*|libk5crypto3|libgssapi.*|libcom-err2|libkeyutils1|openssl|ca-certificates|libdb5.3|libgdbm.*|libncursesw6|libtinfo6|libreadline8|readline-common|libexpat1|libuuid1|libsystemd0|libudev1|libcap2|libacl1|libattr1|libaudit.*|libpam.*|libsemanage.*|libsepol2|libsqlite3-0|libffi8|mount|util-linux|sensible-utils|base-files|bash|dash)$'
# apt-cache lists every alternative of a dependency: keep OpenBLAS's OpenMP build (the one
# loom links, CMakeLists.txt) and leave the others and tools no build step runs, which keeps
# the bundle under the device tool's 64 MiB carry limit.
skip='^(libopenblas0-serial|libopenblas-serial-dev|libopenblas0-pthread|libopenblas-pthread-dev|passwd|procps|automake|autoconf|autotools-dev|m4|libslang2|libtool|file|libmagic.*|gnupg.*|gpg.*|dirmngr|pinentry.*|adduser|login|libsemanage-common|init-system-helpers|lsb-base|sysvinit-utils|emacsen-common|install-info)$'
mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances --no-pre-depends "${top[@]}" | grep -v '^ ' | grep -v '^<' | sort -u | grep -Ev "$base" | grep -Ev "$skip")
mkdir -p "$out"
cd "$out"
rm -f ./*.deb
echo "fetching ${#closure[@]} packages into $out"
apt-get download "${closure[@]}" 2>&1 | grep -v "unsandboxed as root" || true
ls ./*.deb >/dev/null 2>&1 || { echo "tests/gpu/fetch-debs.sh: no .deb fetched" >&2; exit 1; }
ls ./*.deb | sed 's|^\./||' > MANIFEST
echo "tests/gpu/fetch-debs.sh: $(wc -l < MANIFEST) packages, $(du -sh . | cut -f1) in $out"
