#!/usr/bin/env bash
# Quick start, command 1: installs what is missing (Debian packages, the release
# build, the default corpus) and runs the default job. Extra arguments go to lora-dist.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/fetch-corpus.sh
swift build -c release --product lora-dist >&2
test -x .build/release/lora-dist || { echo "release build failed" >&2; exit 1; }
exec .build/release/lora-dist "$@"
