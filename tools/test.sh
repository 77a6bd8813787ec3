#!/usr/bin/env bash
# Quick start, command 2: installs what is missing and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/gen-proto.sh --check
swift build --build-tests
swift test --skip-build
