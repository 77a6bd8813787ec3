#!/usr/bin/env python3
"""Writes SmolLM2's tokenizer.json beside its GGUF ($LORA_DIST_MODELS/SmolLM2-135M-Instruct/,
fetched by tools/fetch-smollm2.sh), built as tools/make_tokenizer_fixtures.py builds it
(transformers' GGUF loader, then SmolLM2's trained pre-tokenizer). `lora-dist bench tokenizer`
times our BPE and Hugging Face `tokenizers` on this one file. Prints the path."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as m  # noqa: E402

_, backend, _ = m.load_smollm2()
out = os.path.join(os.path.dirname(m.gguf_path()), "tokenizer.json")
backend.save(out)
print(out)
