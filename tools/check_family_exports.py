#!/usr/bin/env python3
"""Check lora-dist's exports against transformers and peft, family by family.

For each family lora-dist implements (Llama with llama3 and linear RoPE scaling and with attention
and MLP biases, Mistral with a sliding window, Qwen2 with q/k/v biases, Qwen3 with q/k norms and an
explicit head_dim):

1. builds a tiny random model with the family's own transformers class (vocab 258, the byte
   tokenizer's; bos 256, eos 257; noisy norms, random biases) and saves it with save_pretrained;
2. runs the lora-dist binary: `train --mode lora --targets all-linear` a few steps, then
   `export --format peft` and `export --format merged`; also `--mode full` and `--mode qlora`
   runs, each exported merged;
3. loads the PEFT export with `PeftModel.from_pretrained` on the family's own class
   (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) and asserts every
   adapter tensor was taken unchanged; loads the merged export with
   `AutoModelForCausalLM.from_pretrained` and asserts it resolves to that class with no missing,
   unexpected or mismatched keys, that config.json says the family's model_type and
   architectures, and that the config transformers reads back equals the base's on every field
   that changes the math (RoPE parameters, head_dim, window, ties, biases, eps);
4. compares the logits of the two on a fixed batch: max |Δ| / max |ref| <= 1e-4 (and lora-dist's
   merge against peft's merge_and_unload, max |ΔW|);
5. greedy-decodes 12 tokens with transformers on each merged export and with `lora-dist generate
   --checkpoint` on the run it came from: lora-dist's own forward on the checkpoint and
   transformers on the export must pick the same tokens (the smallest top-2 logit gap along the
   way is reported, so a near-tie would be visible);
6. for full fine-tuning and QLoRA, asserts the merged export loads the same way (QLoRA's carries
   its `lora_dist` note) and that its weights moved away from the base.

Prints a table; exits non-zero if any check fails.

    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -r tools/requirements-fixtures.txt
    swift build
    HF_HUB_OFFLINE=1 python3 tools/check_family_exports.py [--binary .build/debug/lora-dist] [--keep DIR]

Takes about 20 s with a debug build (one BLAS thread, one CPU thread for torch). Deterministic: the
same binary gives the same table.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

# First: sets the offline environment before transformers loads (tools/reference_stack.py).
from reference_stack import REPO_ROOT, drop_generation_config, logits_of, lora_dist_env, write_sentences

import peft
import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

TOLERANCE = 1e-4          # logits: max |Δ| / max |ref|
WEIGHT_TOLERANCE = 1e-6   # lora-dist's merge against peft's merge_and_unload, max |ΔW|
BATCH, SEQ = 2, 16
GEN_PROMPT = "The adapter moves"
GEN_NEW_TOKENS = 12
BOS, EOS = 256, 257
LAYERS = 2
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# lora-dist runs: one rank, one BLAS thread, tiny steps.
COMMON_TRAIN = ["--steps", "6", "--batch", "4", "--seq", "16", "--warmup", "0", "--seed", "11",
                "--threads", "1", "--eval-seqs", "4", "--quiet"]
LORA_TRAIN = ["--targets", "all-linear", "--rank", "4", "--alpha", "8", "--lr", "0.05"]
FULL_TRAIN = ["--lr", "0.01"]

COMMON = dict(vocab_size=258, hidden_size=32, intermediate_size=48, num_hidden_layers=LAYERS,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, hidden_act="silu",
              initializer_range=0.2, bos_token_id=BOS, eos_token_id=EOS, attn_implementation="eager")

FAMILIES = [
    # name, class, config, what it exercises
    ("llama3_scaled", LlamaForCausalLM, lambda: LlamaConfig(
        **COMMON, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 512}),
     "llama3 RoPE, tied"),
    ("llama_linear", LlamaForCausalLM, lambda: LlamaConfig(
        **COMMON, head_dim=8, max_position_embeddings=64, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
     "linear RoPE, untied"),
    ("llama_biases", LlamaForCausalLM, lambda: LlamaConfig(
        **COMMON, head_dim=8, max_position_embeddings=64, tie_word_embeddings=False, attention_bias=True,
        mlp_bias=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     "attention + MLP biases"),
    ("mistral_window", MistralForCausalLM, lambda: MistralConfig(
        **COMMON, head_dim=8, max_position_embeddings=64, tie_word_embeddings=False, sliding_window=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     "sliding window 4"),
    ("qwen2_bias", Qwen2ForCausalLM, lambda: Qwen2Config(
        **COMMON, max_position_embeddings=64, tie_word_embeddings=True, use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
     "q/k/v biases, tied"),
    ("qwen3_qknorm", Qwen3ForCausalLM, lambda: Qwen3Config(
        **COMMON, head_dim=16, max_position_embeddings=64, tie_word_embeddings=False, attention_bias=False,
        use_sliding_window=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
     "q/k norm, head_dim 16"),
]

FAMILY_OF = {LlamaForCausalLM: "llama", MistralForCausalLM: "mistral", Qwen2ForCausalLM: "qwen2",
             Qwen3ForCausalLM: "qwen3"}

# Config fields that change what the model computes: the merged export must give transformers
# the same values as the base it came from.
MATH_FIELDS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "rope_parameters", "tie_word_embeddings", "attention_bias",
               "mlp_bias", "sliding_window", "use_sliding_window", "layer_types", "hidden_act",
               "max_window_layers", "rms_norm_eps"]


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def make_base(name, cls, make_config, seed, out):
    torch.manual_seed(seed)
    model = cls(make_config()).to(torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    drop_generation_config(out)
    return model


def lora_dist(binary, args, expect=0):
    r = subprocess.run([binary] + args, cwd=REPO_ROOT, env=lora_dist_env(), capture_output=True, text=True)
    if r.returncode != expect:
        raise CheckFailed(f"lora-dist {' '.join(args)} exited {r.returncode}:\n{r.stderr.strip()}")
    return r.stdout


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def greedy(model, prompt, n):
    """No-cache greedy decode; stops after EOS like lora-dist. Returns (new ids, smallest top-2 gap)."""
    ids, gap = list(prompt), math.inf
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            last = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            top = torch.topk(last, 2)
            gap = min(gap, (top.values[0] - top.values[1]).item())
            ids.append(int(top.indices[0]))
            if ids[-1] == EOS:
                break
    return ids[len(prompt):], gap


def lora_dist_greedy(binary, run):
    out = lora_dist(binary, ["generate", "--checkpoint", run, "--prompt", GEN_PROMPT, "--max-new-tokens",
                             str(GEN_NEW_TOKENS), "--ids"])
    return [int(t) for t in out.split()]


def load_merged(d, cls, base_cfg):
    """The merged export through AutoModelForCausalLM: its class, keys, config.json and config fields."""
    with open(os.path.join(d, "config.json")) as f:
        cfg_json = json.load(f)
    family = FAMILY_OF[cls]
    check(cfg_json.get("model_type") == family, f"{d}/config.json model_type {cfg_json.get('model_type')} != {family}")
    check(cfg_json.get("architectures") == [cls.__name__],
          f"{d}/config.json architectures {cfg_json.get('architectures')} != {[cls.__name__]}")
    model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                       output_loading_info=True)
    check(type(model) is cls, f"AutoModelForCausalLM gave {type(model).__name__}, not {cls.__name__}")
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    check(not bad, f"{d}: loading info {bad}")
    cfg = AutoConfig.from_pretrained(d)
    for field in MATH_FIELDS:
        want, got = getattr(base_cfg, field, None), getattr(cfg, field, None)
        if field == "head_dim":  # Qwen2Config has no head_dim: its attention uses hidden / heads
            want, got = (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads for c in (base_cfg, cfg))
        if isinstance(want, float) and isinstance(got, float):
            ok = abs(want - got) <= 1e-6 * abs(want)
        else:
            ok = want == got
        check(ok, f"{d}/config.json: transformers reads {field} = {got!r}, the base has {want!r}")
    return model, cfg_json


def check_family(binary, tmp, corpus, index, name, cls, make_config):
    row = {"family": name, "class": cls.__name__}
    d = os.path.join(tmp, name)
    shutil.rmtree(d, ignore_errors=True)  # --keep DIR may hold an earlier run's
    base_dir = os.path.join(d, "base")
    make_base(name, cls, make_config, 4100 + index, base_dir)
    base_cfg = AutoConfig.from_pretrained(base_dir)
    saved_names = set(load_file(os.path.join(base_dir, "model.safetensors")))
    gen = torch.Generator().manual_seed(77 + index)
    ids = torch.randint(0, 258, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    prompt = [BOS] + list(GEN_PROMPT.encode())

    # LoRA: train, export both ways.
    run, peft_dir, merged_dir = (os.path.join(d, x) for x in ("lora-run", "peft", "merged"))
    lora_dist(binary, ["train", "--mode", "lora", "--model", base_dir, "--data", corpus, "--run-dir", run]
              + COMMON_TRAIN + LORA_TRAIN)
    lora_dist(binary, ["export", "--format", "peft", "--checkpoint", run, "--out", peft_dir, "--base-name", base_dir])
    lora_dist(binary, ["export", "--format", "merged", "--checkpoint", run, "--out", merged_dir])

    # PEFT on the family's own class.
    base = cls.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    check(type(base) is cls, f"{cls.__name__}.from_pretrained gave {type(base).__name__}")
    base_logits = logits_of(base, ids)
    pm = PeftModel.from_pretrained(base, peft_dir)
    pm.eval()
    pc = pm.peft_config["default"]
    check(pc.r == 4 and pc.lora_alpha == 8 and set(pc.target_modules) == set(ALL7), f"peft config {pc}")
    on_disk = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    loaded = {n.replace(".default.", "."): p.detach() for n, p in pm.named_parameters() if ".lora_" in n}
    check(sorted(loaded) == sorted(on_disk), f"peft loaded {sorted(set(loaded) ^ set(on_disk))} differently")
    check(len(loaded) == LAYERS * len(ALL7) * 2, f"{len(loaded)} adapter tensors")
    check(all(torch.equal(loaded[k], on_disk[k]) for k in loaded), "peft changed an adapter tensor")
    check(all(v.abs().max() > 0 for k, v in loaded.items() if ".lora_B." in k), "a lora_B is still zero")
    row["adapters"] = len(loaded)
    peft_logits = logits_of(pm, ids)

    # Merged, through AutoModelForCausalLM.
    mm, _ = load_merged(merged_dir, cls, base_cfg)
    row["model_type"] = FAMILY_OF[cls]
    merged_logits = logits_of(mm, ids)
    row["logits_rel"] = rel(merged_logits, peft_logits)
    row["adapter_effect"] = rel(peft_logits, base_logits)
    check(row["logits_rel"] <= TOLERANCE, f"merged vs PEFT logits: relative error {row['logits_rel']:.3e}")
    check(row["adapter_effect"] > 100 * TOLERANCE, f"the adapter barely changes the logits ({row['adapter_effect']:.3e})")
    ours = load_file(os.path.join(merged_dir, "model.safetensors"))
    # The tensors save_pretrained writes (a tied head is not one of them), merged by peft.
    theirs = {k: v for k, v in pm.merge_and_unload().state_dict().items() if k in saved_names}
    check(sorted(ours) == sorted(theirs), f"merged tensors {sorted(set(ours) ^ set(theirs))} differ from peft's merge")
    row["merge_dw"] = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    check(row["merge_dw"] <= WEIGHT_TOLERANCE, f"merged weights vs merge_and_unload: {row['merge_dw']:.3e}")

    # lora-dist's forward on the checkpoint against transformers on the export.
    ref, gap = greedy(mm, prompt, GEN_NEW_TOKENS)
    got = lora_dist_greedy(binary, run)
    check(got == ref, f"greedy: lora-dist --checkpoint {got}, transformers on the merged export {ref}")
    row["greedy_lora"] = (len(ref), gap)

    # Full fine-tuning and QLoRA: the merged export loads and is the trained model.
    base_sd = {k: v for k, v in base.state_dict().items()}
    for mode, extra in (("full", FULL_TRAIN), ("qlora", LORA_TRAIN)):
        run, out = os.path.join(d, f"{mode}-run"), os.path.join(d, f"{mode}-merged")
        lora_dist(binary, ["train", "--mode", mode, "--model", base_dir, "--data", corpus, "--run-dir", run]
                  + COMMON_TRAIN + extra)
        lora_dist(binary, ["export", "--format", "merged", "--checkpoint", run, "--out", out])
        m, cfg_json = load_merged(out, cls, base_cfg)
        if mode == "qlora":
            check(cfg_json.get("lora_dist", {}).get("merged_from") == "qlora", f"{out}: no lora_dist note")
        sd = m.state_dict()
        moved = max((sd[k] - base_sd[k]).abs().max().item() for k in sd if k in base_sd)
        check(moved > 1e-3, f"{mode}: the merged weights did not move from the base ({moved:.3e})")
        ref, g = greedy(m, prompt, GEN_NEW_TOKENS)
        got = lora_dist_greedy(binary, run)
        check(got == ref, f"{mode} greedy: lora-dist --checkpoint {got}, transformers on the merged export {ref}")
        row[f"greedy_{mode}"] = (len(ref), g)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.environ.get("LORA_DIST_BIN", os.path.join(REPO_ROOT, ".build", "debug", "lora-dist")),
                    help="lora-dist executable (default: $LORA_DIST_BIN or .build/debug/lora-dist)")
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temporary one, removed)")
    opts = ap.parse_args()
    binary = os.path.abspath(opts.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no lora-dist executable at {binary}: run `swift build` or pass --binary")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"lora-dist {os.path.relpath(binary, REPO_ROOT) if binary.startswith(REPO_ROOT) else binary}")

    tmp = opts.keep or tempfile.mkdtemp(prefix="lora-dist-family-exports-")
    os.makedirs(tmp, exist_ok=True)
    corpus = os.path.join(tmp, "corpus.txt")
    write_sentences(corpus, seed=2025, size=8000)
    rows, failures = [], []
    start = time.time()
    try:
        for i, (name, cls, make_config, what) in enumerate(FAMILIES):
            t = time.time()
            try:
                row = check_family(binary, tmp, corpus, i, name, cls, make_config)
                row["what"], row["seconds"] = what, time.time() - t
                rows.append(row)
            except CheckFailed as e:
                failures.append((name, str(e)))
                rows.append({"family": name, "class": cls.__name__, "what": what, "failed": str(e).splitlines()[0]})
    finally:
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def greedy_cell(r, key):
        n, gap = r[key]
        return f"= ({n}, gap {gap:.2g})"

    header = ["family", "exercises", "PEFT on", "adapter tensors", "merged model_type / class",
              "merged vs PEFT logits", "adapter's effect", "merge vs peft max \\|ΔW\\|",
              "greedy LoRA", "greedy full (merged)", "greedy QLoRA (merged)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['family']} | {r['what']} | {r['class']} | FAILED: {r['failed']} |" + " |" * (len(header) - 4))
            continue
        lines.append("| " + " | ".join([
            r["family"], r["what"], r["class"], str(r["adapters"]), f"{r['model_type']} / {r['class']}",
            f"{r['logits_rel']:.1e}", f"{r['adapter_effect']:.2f}", f"{r['merge_dw']:.1e}",
            greedy_cell(r, "greedy_lora"), greedy_cell(r, "greedy_full"), greedy_cell(r, "greedy_qlora")]) + " |")
    print()
    print("\n".join(lines))
    print()
    print(f"logits: max |Δ| / max |ref| on a fixed [{BATCH}, {SEQ}] batch, tolerance {TOLERANCE:g}; "
          f"adapter's effect: the same measure between the PEFT model and its base. "
          f"greedy: {GEN_NEW_TOKENS} tokens after \"{GEN_PROMPT}\", `lora-dist generate --checkpoint` equal to "
          f"transformers on the merged export (tokens compared, smallest top-2 logit gap). "
          f"{time.time() - start:.0f} s.")
    for name, e in failures:
        print(f"\nFAILED {name}: {e}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
