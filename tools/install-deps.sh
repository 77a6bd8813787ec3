#!/usr/bin/env bash
# Installs the Debian packages lora-dist builds and runs with, when any is missing.
# Idempotent: a machine that has them all is left alone (no apt-get update).
set -euo pipefail
pkgs=(libopenmpi-dev openmpi-bin libopenblas-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler pkg-config)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "swift is not on PATH: install the Swift 6 toolchain" >&2; exit 1; }
