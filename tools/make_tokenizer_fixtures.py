#!/usr/bin/env python3
"""Generate the byte-level BPE tokenizer fixtures in Tests/Fixtures/tokenizer/.

Writes
  tiny/tokenizer.json          a 600-token byte-level BPE trained here with `tokenizers`
                               (ByteLevel pre-tokenizer, 4 special tokens, merges as pairs)
  tiny_digits/tokenizer.json   the same model with SmolLM2's pre-tokenizer as its
                               tokenizer.json spells it: Sequence[Digits(individual), ByteLevel]
  tiny_llama3/tokenizer.json   the same model with Sequence[Split(Llama-3 regex), ByteLevel(no regex)]
                               and merges as legacy "a b" strings
  tiny_qwen2/tokenizer.json    the same model with Sequence[Split(Qwen2 regex), ByteLevel(no regex)]
  tiny_gpt4o/tokenizer.json    the same model with Split(GPT-4o regex): a pattern the Swift
                               tokenizer has no hand-written scanner for (NSRegularExpression path)
  cases.jsonl                  one JSON object a line: {"text": ..., "ids": {name: [id, ...]}}
                               with Tokenizer.encode(text, add_special_tokens=False).ids for
                               "smollm2" and "tiny" always, and for the other tiny variants only
                               where they differ from "tiny" (absent = same as "tiny").

The SmolLM2 tokenizer is not committed. It is built from the GGUF that tools/fetch-smollm2.sh
fetches, with transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...), and its
pre-tokenizer is then set to the one SmolLM2 was trained with (see PRE_SMOLLM below and
Tests/Fixtures/tokenizer/README.md).

Deterministic: same inputs give byte-identical files. Run:
  python3 tools/make_tokenizer_fixtures.py
"""

import glob
import json
import os
import random
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "tokenizer")
SHAKESPEARE = os.path.expanduser(os.environ.get("LORA_DIST_DATA", "~/.cache/lora-dist/data")) + "/shakespeare"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

TINY_SPECIALS = ["<|endoftext|>", "<|end|>", "<|im_start|>", "<|im_end|>"]

# SmolLM2's own tokenizer.json (HuggingFaceTB/SmolLM2-*) pre-tokenizes with
# Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)],
# and llama.cpp's "smollm" pre-tokenizer is the same: regex "\p{N}" first, then the GPT-2 regex.
# transformers 5.24's GGUF loader has no entry for "smollm" and falls back to plain GPT-2
# ByteLevel, which keeps digit runs together ("2024" -> one piece) unlike the trained model.
PRE_SMOLLM = pre_tokenizers.Sequence(
    [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ]
)

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
GPT4O_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def shakespeare_files():
    files = sorted(glob.glob(SHAKESPEARE + "/*.txt"))
    if not files:
        sys.exit(f"no Shakespeare text in {SHAKESPEARE} (run tools/fetch-corpus.sh)")
    return files


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# Text cases

CODE = [
    'def main():\n    print("hello, world")\n    return 0\n',
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "let x: [Int32] = try tokenizer.encode(\"text\")  // ids\n",
    "public final class BPETokenizer: Tokenizer {\n    private var cache = [String: [Int32]]()\n}",
    '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}, "merges": ["a b"]}',
    "#include <stdio.h>\nint main(void){printf(\"%d\\n\", 42);return 0;}",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son';",
    "if x != nil && y == 3 || !z { return }\n",
    "    \n        \n\t\t\tdeep    indentation\n",
    "x+=1;y-=2;z*=3;w/=4;a%=5;b<<=1;c>>=2;d&&=e;f||=g",
    "arr[::2], d[\"k\"], f(*args, **kwargs), lambda x: x**2",
    "https://example.com/path/to/page?query=1&other=two#frag",
    "user@example.org, admin+tag@sub.domain.co.uk",
    "<div class=\"row\"><span>&nbsp;&amp;&lt;&gt;</span></div>",
    "$ ls -la ~/.cache | grep -v '^d' > out.txt 2>&1",
    "    def __init__(self, *, name: str = 'x') -> None:\n        self._name = name\n",
    "fn main() { let v: Vec<u8> = vec![0xFF, 0o17, 0b1010]; }",
    "matrix = [[1, 2, 3],\r\n          [4, 5, 6]]\r\n",
    "// TODO(someone): fix this!!!\n/* block\n   comment */",
    "a = b if c else d  # comment with 'quotes' and \"double quotes\"",
]

NUMBERS_FIXED = [
    "0", "7", "42", "123", "1234", "12345", "123456789012345678901234567890",
    "3.14159265358979", "1,234,567.89", "-0.000001", "6.022e23", "1e-10", "0xDEADBEEF",
    "2024-01-15T12:34:56Z", "+1 (555) 123-4567", "v1.2.3-rc.4", "99.9%", "$1,000,000",
    "١٢٣٤٥", "०१२३४", "一二三", "Ⅻ ⅻ ½ ¾ ² ³", "𝟘𝟙𝟚", "①②③",
]

CONTRACTIONS = [
    "I'm", "you're", "it's", "we've", "they'll", "he'd", "can't", "won't", "don't",
    "I'M", "YOU'RE", "IT'S", "WE'VE", "THEY'LL", "HE'D", "It'S", "We'Ve", "They'Ll",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
    "''s", "'''", "'x", "' s", "'ll've", "'ſ", "IT'ſ", "'ſt", "rock 'n' roll", "o'clock", "ma'am", "y'all'd've",
    "the dog's bone", "the dogs' bones", "’s", "it’s", "l'homme", "aujourd'hui", "'tis", "'twas",
]

PUNCT = [
    "!!!", "???", "?!?!", "...", "…", "--", "---", "—", "–", "->", "=>", "<=>", "::", ";;",
    "@#$%^&*()", "[]{}<>", "\"'\"'", "``", "~~~", "|||", "\\\\", "//", "/*", "*/",
    "“quoted”", "‘single’", "«guillemets»", "¿Qué?", "¡Hola!", "§ ¶ † ‡ • ·", "© ® ™",
    "(a)", "[b]", "{c}", "a.b.c", "a,b;c:d", " ,", " .", " !", "  !!", "\t!", "\n!",
]

LANGS = [
    "café naïve résumé façade Ångström Ærøskøbing Œuvre straße",
    "Ça va? Où êtes-vous? Élève, garçon, déjà vu.",
    "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Ελληνικά: Καλημέρα κόσμε, τι κάνεις; ΑΒΓΔ αβγδ ἀρχή",
    "Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Українська: Ґанок, їжак, єнот. Беларуская: ў",
    "中文：你好，世界！这是一个测试。",
    "日本語：こんにちは世界。カタカナとひらがな、漢字。ｈａｌｆｗｉｄｔｈ",
    "한국어: 안녕하세요 세계",
    "العربية: مرحبا بالعالم",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया",
    "ไทย: สวัสดีชาวโลก",
    "Tiếng Việt: Xin chào thế giới",
    "e\u0301 a\u0300 combining n\u0303 o\u0308",
    "ﬁ ﬂ ligatures, ＡＢＣ fullwidth",
]

EMOJI = [
    "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇫🇷🇯🇵", "1️⃣ #️⃣", "❤️", "🙂🙃😀", "🧑🏿‍💻",
    "I ❤️ NY", "Thumbs 👍🏽 up!", "family: 👨‍👩‍👧‍👦.", "emoji🙂glued🙃together",
    "😀😀😀😀😀", "✨ sparkle ✨", "☃ ★ ☆ ♠ ♣ ♥ ♦",
]

SPECIAL_TEXT = [
    "<|endoftext|>",
    "<|endoftext|><|endoftext|>",
    "Hello<|endoftext|>World",
    " <|endoftext|> ",
    "text <|endoftext|>\n\nmore text",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>",
    "<|end|>oftext|>",
    "<|end|><|endoftext|><|end|>",
    "<|im_start",
    "<|im_start|",
    "<|endoftext|",
    "<|endoftex|>",
    "<<|endoftext|>>",
    "<|<|im_end|>|>",
    "<repo_name>lora-dist<file_sep>main.swift<filename>x",
    "<issue_start>bug<issue_comment>fix<issue_closed>",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<|ENDOFTEXT|>",
    "< |endoftext| >",
]

WS_PIECES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\u00a0",
             "\u3000", "\u2028", "\u2009", "\u200b", "\x0b", "\x0c", "\x85"]
WORDS = ["the", "The", "THE", "a", "word", "Word", "x", "hello", "Hello", "world", "42", "7",
         "!", "?", ".", "it's", "don't", "I'll", "café", "Привет", "日本", "🙂", "😀x", "-",
         "(", ")", "\"", "'", "123abc", "abc123", "e\u0301"]

SCALAR_POOLS = [
    (0x20, 0x7E), (0x00, 0x1F), (0xA0, 0xFF), (0x100, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x300, 0x36F), (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F),
    (0x2000, 0x206F), (0x2100, 0x214F), (0x2190, 0x21FF), (0x3040, 0x30FF), (0x4E00, 0x4FFF),
    (0xAC00, 0xAD00), (0xFF00, 0xFFEF), (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF), (0x1D400, 0x1D7FF),
    (0xE000, 0xE010), (0xFFF0, 0xFFFD), (0x10000, 0x1007F), (0x20000, 0x20100),
]


def random_scalars(rng, n):
    out = []
    for _ in range(n):
        lo, hi = rng.choice(SCALAR_POOLS)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def make_cases(files):
    rng = random.Random(20240611)
    cases = [""]
    # Shakespeare: single lines, then multi-line chunks (keeps \n, indentation, blank lines).
    lines_by_file = [read(f).split("\n") for f in files]
    for _ in range(900):
        lines = rng.choice(lines_by_file)
        cases.append(rng.choice(lines))
    for _ in range(100):
        lines = rng.choice(lines_by_file)
        i = rng.randrange(len(lines))
        chunk = "\n".join(lines[i : i + rng.randint(2, 4)])
        if rng.random() < 0.2:
            chunk = chunk.replace("\n", "\r\n")
        cases.append(chunk)
    cases += CODE + NUMBERS_FIXED + CONTRACTIONS + PUNCT + LANGS + EMOJI + SPECIAL_TEXT
    # Numbers with many digits, in words and alone.
    for _ in range(120):
        k = rng.randint(1, 40)
        digits = "".join(rng.choice("0123456789") for _ in range(k))
        form = rng.randrange(5)
        if form == 0:
            cases.append(digits)
        elif form == 1:
            cases.append(f"Year {digits} was good")
        elif form == 2:
            cases.append(f"{digits[: k // 2]}.{digits[k // 2 :]}")
        elif form == 3:
            cases.append(f"x{digits}y {digits}")
        else:
            cases.append(" " + ",".join(digits[i : i + 3] for i in range(0, k, 3)))
    # Contractions in sentences, in random case.
    for _ in range(150):
        c = rng.choice(CONTRACTIONS)
        w = rng.choice(["you", "they", "IT", "We", "she", "x", "", " ", "123"])
        s = f"{w}{c} {rng.choice(WORDS)}"
        if rng.random() < 0.3:
            s = "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in s)
        cases.append(s)
    # Runs of spaces / tabs / newlines mixed with words.
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(1, 8)):
            parts.append(rng.choice(WS_PIECES) * rng.randint(1, 4) if rng.random() < 0.5 else rng.choice(WORDS))
        cases.append("".join(parts))
    # Punctuation runs.
    for _ in range(120):
        n = rng.randint(1, 12)
        cases.append("".join(rng.choice("!?.,;:-_=+*/\\|@#$%^&()[]{}<>'\"`~ ") for _ in range(n)))
    # Mixed chunks from every pool, including special tokens in the middle of text.
    pools = [CODE, NUMBERS_FIXED, CONTRACTIONS, PUNCT, LANGS, EMOJI, SPECIAL_TEXT, WORDS, WS_PIECES]
    for _ in range(250):
        parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(2, 4))]
        sep = rng.choice(["", " ", "\n", "  ", "\t"])
        cases.append(sep.join(parts))
    # Random scalars from many blocks (controls, combining marks, private use, astral planes).
    for _ in range(200):
        cases.append(random_scalars(rng, rng.randint(1, 16)))
    # A few long ones: a long word, long whitespace, a long number, a paragraph.
    cases.append("a" * 300)
    cases.append("ab" * 120 + "!")
    cases.append(" " * 300 + "x")
    cases.append("\n" * 200)
    cases.append("\t \n" * 50)
    cases.append("9" * 200)
    cases.append("😀" * 40)
    cases.append(read(files[0])[5000:6200])
    return cases


# ---------------------------------------------------------------------------------------------
# Tokenizers

def train_tiny(files):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=TINY_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = [read(f) for f in files[:6]] + CODE + LANGS + EMOJI
    tok.train_from_iterator(text, trainer=trainer)
    return tok


def variant(base_json, pre, legacy_merges=False):
    j = json.loads(base_json)
    j["pre_tokenizer"] = pre
    if legacy_merges:
        j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    return Tokenizer.from_str(json.dumps(j))


def byte_level_json(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def split_json(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def gguf_path():
    models_dir = os.environ.get("LORA_DIST_MODELS", os.path.expanduser("~/.cache/lora-dist/models"))
    path = os.path.join(models_dir, "SmolLM2-135M-Instruct", GGUF_NAME)
    if not os.path.exists(path):
        subprocess.run(["bash", os.path.join(REPO_ROOT, "tools", "fetch-smollm2.sh")], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def load_smollm2():
    import gguf  # transformers reads GGUF metadata with it

    path = gguf_path()
    hf = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=GGUF_NAME)
    backend = hf.backend_tokenizer
    # What transformers built: plain GPT-2 ByteLevel (see PRE_SMOLLM).
    pre = json.loads(backend.to_str())["pre_tokenizer"]
    assert pre["type"] == "ByteLevel" and pre["use_regex"], pre
    unpatched = Tokenizer.from_str(backend.to_str())
    backend.pre_tokenizer = PRE_SMOLLM

    # Sanity: the vocabulary is the GGUF's token list in order, and the GGUF says "smollm".
    reader = gguf.GGUFReader(path)
    field = reader.fields["tokenizer.ggml.pre"]
    assert bytes(field.parts[field.data[0]]).decode() == "smollm"
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    vocab = backend.get_vocab(with_added_tokens=True)
    assert len(vocab) == len(tokens) and all(vocab[t] == i for i, t in enumerate(tokens))
    return hf, backend, unpatched


def main():
    files = shakespeare_files()
    os.makedirs(OUT, exist_ok=True)

    tiny = train_tiny(files)
    base = tiny.to_str()
    tiny_variants = {
        "tiny": tiny,
        "tiny_digits": variant(base, {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level_json(True)]}),
        "tiny_llama3": variant(base, {"type": "Sequence", "pretokenizers": [
            split_json(LLAMA3_REGEX), byte_level_json(False)]}, legacy_merges=True),
        "tiny_qwen2": variant(base, {"type": "Sequence", "pretokenizers": [
            split_json(QWEN2_REGEX), byte_level_json(False)]}),
        "tiny_gpt4o": variant(base, {"type": "Sequence", "pretokenizers": [
            split_json(GPT4O_REGEX), byte_level_json(False)]}),
    }
    for name, tok in tiny_variants.items():
        os.makedirs(os.path.join(OUT, name), exist_ok=True)
        # The variants are written compact (one line) to keep the fixtures small.
        tok.save(os.path.join(OUT, name, "tokenizer.json"), pretty=(name == "tiny"))

    hf, smollm2, unpatched = load_smollm2()
    # Special tokens written in the text are matched whole (default settings).
    assert smollm2.encode("<|im_start|>", add_special_tokens=False).ids == [1]
    assert tiny.encode("a<|endoftext|>b", add_special_tokens=False).ids[1] == 0

    cases = make_cases(files)
    digit_differences = 0
    default_adds = 0
    lossy = 0
    with open(os.path.join(OUT, "cases.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for text in cases:
            ids = {"smollm2": smollm2.encode(text, add_special_tokens=False).ids}
            if hf(text)["input_ids"] != ids["smollm2"]:
                default_adds += 1
            if unpatched.encode(text, add_special_tokens=False).ids != ids["smollm2"]:
                digit_differences += 1
            t = tiny.encode(text, add_special_tokens=False).ids
            ids["tiny"] = t
            for name in ("tiny_digits", "tiny_llama3", "tiny_qwen2", "tiny_gpt4o"):
                v = tiny_variants[name].encode(text, add_special_tokens=False).ids
                if v != t:
                    ids[name] = v
            case = {"text": text, "ids": ids}
            # decode(ids) is the text again, except where the text has a byte the vocabulary
            # lacks (SmolLM2 has no token for bytes 0x04 0x06 0x13 0x14 0x16 0x1D): BPE without an
            # unk token drops it. Then "decoded" holds what `tokenizers` decodes.
            for name, tok in [("smollm2", smollm2), ("tiny", tiny)]:
                decoded = tok.decode(ids[name], skip_special_tokens=False)
                if decoded != text:
                    case.setdefault("decoded", {})[name] = decoded
                    lossy += 1
            f.write(json.dumps(case, ensure_ascii=False, separators=(",", ":")) + "\n")

    print(f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}")
    print(f"{len(cases)} cases; transformers' default call adds special tokens to {default_adds}; "
          f"plain GPT-2 ByteLevel (transformers' GGUF pre-tokenizer) differs on {digit_differences}; "
          f"{lossy} decodes drop bytes")
    total = 0
    for root, _, names in os.walk(OUT):
        for n in names:
            total += os.path.getsize(os.path.join(root, n))
    print(f"Tests/Fixtures/tokenizer: {total / 1024:.0f} KB")


if __name__ == "__main__":
    main()
