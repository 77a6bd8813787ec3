#!/usr/bin/env python3
"""Decodes and verifies a lora-dist checkpoint directory; prints a JSON summary.

    python3 tools/decode_checkpoint.py RUN/checkpoints/step-0000010
    python3 tools/decode_checkpoint.py RUN/checkpoints          # follows `latest`

Python classes are generated from proto/checkpoint.proto with `protoc --python_out`
into a temporary directory (needs protoc and the pinned `protobuf` of
tools/requirements-test.txt). Checks, for every slice of the manifest:
  * its shard file parses whole as one ShardChunk, and the slices it holds are,
    in order, the ones parsed one by one at SliceRef.offset/length;
  * each slice message holds exactly that slice (name, kind, start, count,
    shape, dtype F32, 4 * count data bytes), and the messages of a shard file
    follow each other with no gap up to the end of the file;
  * the CRC-32C (Castagnoli) of its data bytes equals SliceRef.crc32c;
  * every tensor's slices of each kind cover its elements once, without gap or overlap.
Prints {"step", "mode", "world_size", "format_version", "tensors": {"NAME#KIND":
{"shape", "elements", "sum", "first"}}, "slices", "crc_ok", "errors"} and exits
1 when any check fails, 2 when the checkpoint cannot be read at all.
"""
import importlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(REPO, "proto")
FORMAT_VERSION = 2  # the newest Manifest.format_version this reader understands
KINDS = ("param", "adam_m", "adam_v")


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78); crc32c(b"123456789") == 0xE3069283."""
    t = CRC32C_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def load_proto(tmp):
    subprocess.run(["protoc", "--python_out=" + tmp, "-I" + PROTO_DIR,
                    os.path.join(PROTO_DIR, "checkpoint.proto")], check=True)
    sys.path.insert(0, tmp)
    return importlib.import_module("checkpoint_pb2")


def fail(msg):
    print("decode_checkpoint: " + msg, file=sys.stderr)
    sys.exit(2)


def resolve(path):
    """A step directory, or a checkpoints directory whose `latest` names one."""
    if not os.path.exists(os.path.join(path, "manifest.pb")) and os.path.exists(os.path.join(path, "latest")):
        with open(os.path.join(path, "latest"), encoding="utf-8") as f:
            return os.path.join(path, f.read().strip())
    return path


def decode(pb, ckpt):
    errors = []
    manifest_path = os.path.join(ckpt, "manifest.pb")
    if not os.path.exists(manifest_path):
        fail("%s is missing: not a complete checkpoint (an interrupted save has no manifest)" % manifest_path)
    with open(manifest_path, "rb") as f:
        raw = f.read()
    manifest = pb.Manifest.FromString(raw)
    if not 1 <= manifest.format_version <= FORMAT_VERSION:
        errors.append("format_version %d is not one this reader understands (1..%d)"
                      % (manifest.format_version, FORMAT_VERSION))

    crc_ok = True
    # Format 2: the last 6 bytes are manifest_crc32c (tag 0xAD 0x01, fixed32) over every byte before them.
    if manifest.format_version >= 2:
        if len(raw) < 6 or raw[-6:-4] != b"\xad\x01" or crc32c(raw[:-6]) != manifest.manifest_crc32c:
            crc_ok = False
            errors.append("manifest.pb: its CRC-32C does not match its bytes")
    values = {}  # "name#kind" -> [(start, floats)]
    shapes = {}
    by_file = {}
    for ref in manifest.slices:
        by_file.setdefault(ref.file, []).append(ref)

    for file, refs in sorted(by_file.items()):
        path = os.path.join(ckpt, file)
        if os.path.basename(file) != file or not os.path.exists(path):
            errors.append("%s: shard file missing" % file)
            crc_ok = False
            continue
        with open(path, "rb") as f:
            whole = f.read()
        # Concatenated messages parse as one: every slice of the file at once.
        try:
            all_slices = list(pb.ShardChunk.FromString(whole).slices)
        except Exception as e:  # google.protobuf.message.DecodeError
            errors.append("%s: does not parse as a ShardChunk: %s" % (file, e))
            all_slices = None
        refs = sorted(refs, key=lambda r: r.offset)
        if all_slices is not None and len(all_slices) != len(refs):
            errors.append("%s: holds %d slices, the manifest lists %d" % (file, len(all_slices), len(refs)))
        at = 0
        for i, ref in enumerate(refs):
            where = "%s@%d '%s' (%s) %d+%d" % (file, ref.offset, ref.name, ref.kind, ref.start, ref.count)
            if ref.offset != at:
                errors.append("%s: expected at byte %d (slice messages follow each other)" % (where, at))
            at = ref.offset + ref.length
            raw = whole[ref.offset:ref.offset + ref.length]
            if len(raw) != ref.length:
                errors.append("%s: file is truncated" % where)
                crc_ok = False
                continue
            try:
                chunk = pb.ShardChunk.FromString(raw)
            except Exception as e:
                errors.append("%s: does not parse: %s" % (where, e))
                crc_ok = False
                continue
            if len(chunk.slices) != 1:
                errors.append("%s: message holds %d slices, not 1" % (where, len(chunk.slices)))
                continue
            s = chunk.slices[0]
            if (s.name, s.kind, s.start, s.count, list(s.shape)) != (ref.name, ref.kind, ref.start, ref.count, list(ref.shape)):
                errors.append("%s: the message holds '%s' (%s) %d+%d shape %s instead"
                              % (where, s.name, s.kind, s.start, s.count, list(s.shape)))
            if s.dtype != "F32" or (ref.dtype and ref.dtype != "F32"):
                errors.append("%s: dtype %r / %r, not F32" % (where, s.dtype, ref.dtype))
                continue
            if len(s.data) != 4 * s.count:
                errors.append("%s: %d data bytes for %d floats" % (where, len(s.data), s.count))
                continue
            if all_slices is not None and i < len(all_slices) and all_slices[i] != s:
                errors.append("%s: differs from slice %d of the whole-file parse" % (where, i))
            crc = crc32c(s.data)
            if crc != ref.crc32c:
                errors.append("%s: CRC-32C %08x, manifest says %08x" % (where, crc, ref.crc32c))
                crc_ok = False
                continue
            key = ref.name + "#" + ref.kind
            shape = list(ref.shape)
            if shapes.setdefault(key, shape) != shape:
                errors.append("%s: shape %s, other slices say %s" % (where, shape, shapes[key]))
            values.setdefault(key, []).append((ref.start, struct.unpack("<%df" % s.count, s.data)))
        if at != len(whole):
            errors.append("%s: %d bytes, its slice messages end at byte %d" % (file, len(whole), at))

    tensors = {}
    for key in sorted(values):
        parts = sorted(values[key], key=lambda p: p[0])
        total = math.prod(shapes[key])
        at = 0
        for start, v in parts:
            if start != at:
                errors.append("%s: elements %d..<%d %s" % (key, min(at, start), max(at, start),
                                                           "overlap" if start < at else "are missing"))
            at = max(at, start + len(v))
        if at != total:
            errors.append("%s: slices end at element %d of %d" % (key, at, total))
        flat = [x for _, v in parts for x in v]
        tensors[key] = {"shape": shapes[key], "elements": len(flat), "sum": math.fsum(flat), "first": list(flat[:4])}
    # PowerSGD's Q (kind powersgd_q) is a tensor of its own, not a trainable one (docs/formats.md).
    names = {k.split("#")[0] for k in values if k.split("#")[1] in KINDS + ("powersgd_error",)}
    for name in sorted(names):
        missing = [k for k in KINDS if name + "#" + k not in values]
        if missing:
            errors.append("'%s' lacks kind(s) %s" % (name, ", ".join(missing)))

    return {
        "step": manifest.step,
        "mode": manifest.mode,
        "world_size": manifest.world_size,
        "format_version": manifest.format_version,
        "tensors": tensors,
        "slices": len(manifest.slices),
        "crc_ok": crc_ok,
        "errors": errors,
    }


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    ckpt = resolve(argv[1])
    if not os.path.isdir(ckpt):
        fail("%s is not a directory" % ckpt)
    with tempfile.TemporaryDirectory(prefix="decode-checkpoint-") as tmp:
        try:
            pb = load_proto(tmp)
        except (OSError, subprocess.CalledProcessError) as e:
            fail("cannot generate Python code from %s/checkpoint.proto with protoc: %s" % (PROTO_DIR, e))
        out = decode(pb, ckpt)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    for e in out["errors"]:
        print("decode_checkpoint: " + e, file=sys.stderr)
    return 0 if out["crc_ok"] and not out["errors"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
