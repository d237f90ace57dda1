#!/usr/bin/env bash
# `make test-aarch64`: the edge bundle on an emulated aarch64 board, its .psem compared byte for byte with x86's.
#   qemu-user-static (apt) runs Debian bookworm's arm64 Python 3.11 (packages unpacked with dpkg -x into a sysroot)
#   with the manylinux aarch64 wheels of prosemc[edge]'s dependencies; onnxruntime reads /proc/cpuinfo on import
#   and crashes on the x86 host's, so a Cortex-A55 cpuinfo is bind-mounted in a private mount namespace.
# Needs root (apt, unshare -m). Downloads ~60 MB once into .cache/aarch64. Writes docs/bench/export-aarch64.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
WORK=$ROOT/.cache/aarch64
SYSROOT=$WORK/sysroot
SITE=$WORK/site
PACKAGES="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g libffi8 libssl3
  libstdc++6 libgcc-s1 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libcrypt1
  libdb5.3 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1"

command -v qemu-aarch64-static >/dev/null || (apt-get update -qq && apt-get install -y -qq qemu-user-static >/dev/null)
if [ ! -x "$SYSROOT/usr/bin/python3.11" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  mkdir -p "$WORK/debs" "$SYSROOT"
  (cd "$WORK/debs" && apt-get download $(for p in $PACKAGES; do echo "$p:arm64"; done) 2>/dev/null)
  for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$SYSROOT"; done
fi
if [ ! -d "$SITE/onnxruntime" ]; then
  # manylinux_2_28 first: with manylinux2014 alone pip resolves to old releases; safetensors ships 2_17 (abi3).
  "$PY" -m pip install -q --only-binary=:all: --python-version 3.11 --implementation cp --target "$SITE" \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    numpy pillow onnxruntime safetensors click
fi
OMP_NUM_THREADS=1 "$PY" tests/aarch64/compare.py "$WORK" "$SYSROOT" "$SITE" docs/bench/export-aarch64.json
