#!/usr/bin/env python3
"""Generate the JSON Lines corpus fixtures in Tests/Fixtures/jsonl/.

Writes
  to_json.jsonl        datasets.Dataset.to_json with its defaults (pandas force_ascii: every
                       non-ASCII character as \\uXXXX, surrogate pairs above U+FFFF, "/" as "\\/")
  to_json_utf8.jsonl   the same rows with force_ascii=False (raw UTF-8)
  texts/NN.txt         each row's "text", written byte for byte (UTF-8, no newline translation)

The rows carry other columns of every JSON kind (int, float with NaN -> null, list, dict,
bool) so the reader must skip them. Tests/LoraDistTests/Data/CorpusTests.swift checks that each
record tokenises exactly as its texts/NN.txt file does.

Deterministic. Needs `pip install datasets` (made with datasets 5.2.0, pandas 3.1.1). Run:
  python3 tools/make_jsonl_fixtures.py
"""

import os

import datasets

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "jsonl")

TEXTS = [
    "A plain line of English.",
    'Escapes: a/b, "quoted", back\\slash, tab\there, CRLF\r\nand LF\nend',
    "Non-ASCII: caf\u00e9, na\u00efve, \u4e2d\u6587, emoji \U0001F600 and \U0001F469\u200D\U0001F52C, "
    "line separator \u2028 and NUL \u0000 inside",
    "",
    "Many lines\n" * 1200,                        # 13 KB: cut into blocks at line ends
    "\u00e9" * 5000 + " no newline in 10 KB",      # a block cut inside one long line, at a character boundary
    "Last record, ending with a newline\n",
]


def main():
    os.makedirs(os.path.join(OUT, "texts"), exist_ok=True)
    n = len(TEXTS)
    ds = datasets.Dataset.from_dict({
        "id": list(range(n)),
        "text": TEXTS,
        "score": [0.5 * i if i % 3 else float("nan") for i in range(n)],
        "tags": [["a", "b/c"][: i % 3] for i in range(n)],
        "meta": [{"source": "fixture", "ok": i % 2 == 0} for i in range(n)],
    })
    ds.to_json(os.path.join(OUT, "to_json.jsonl"))
    ds.to_json(os.path.join(OUT, "to_json_utf8.jsonl"), force_ascii=False)
    for i, t in enumerate(TEXTS):
        with open(os.path.join(OUT, "texts", f"{i:02d}.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(t)


if __name__ == "__main__":
    main()
