#!/usr/bin/env bash
# Regenerates Sources/CProto from proto/*.proto with protoc-c (Debian: protobuf-c-compiler).
# With --check, fails when the committed output differs from what protoc-c makes now.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protoc --c_out="$out" -Iproto proto/*.proto
mkdir -p "$out/include"
mv "$out"/*.pb-c.h "$out/include/"
# The generated .c includes its header by bare name; SwiftPM puts include/ on the path.
if [[ "${1:-}" == "--check" ]]; then
  diff -r "$out/include" Sources/CProto/include >/dev/null && \
  for f in "$out"/*.pb-c.c; do cmp -s "$f" "Sources/CProto/$(basename "$f")"; done || {
    echo "Sources/CProto is stale: run tools/gen-proto.sh" >&2; exit 1; }
  echo "Sources/CProto is up to date"
else
  rm -f Sources/CProto/*.pb-c.c Sources/CProto/include/*.pb-c.h
  cp "$out"/*.pb-c.c Sources/CProto/
  cp "$out"/include/*.pb-c.h Sources/CProto/include/
  echo "regenerated Sources/CProto"
fi
