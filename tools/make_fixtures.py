#!/usr/bin/env python3
"""Generate the reference fixtures in Tests/Fixtures/ for lora-dist.

Writes two tiny Llama fixtures (untied and tied word embeddings), each with:
  config.json, generation_config.json, model.safetensors   (HF save_pretrained)
  adapter/adapter_config.json, adapter/adapter_model.safetensors (PEFT save_pretrained)
  reference.safetensors   (input_ids, logits, losses and gradients from PyTorch)

Deterministic (fixed seeds, float32, eager attention, 1 CPU thread).
Regenerate with:
  pip install -r tools/requirements-fixtures.txt && python3 tools/make_fixtures.py
See Tests/Fixtures/README.md for the file/key layout.
"""

import json
import os
import shutil

# First: sets the offline environment before transformers loads (tools/reference_stack.py).
from reference_stack import (
    LORA_ALPHA,
    LORA_R,
    REPO_ROOT,
    VERSIONS,
    add_random_adapter,
    full_reference,
    load_saved_adapter,
    load_saved_base,
    lora_reference,
    merged_logits,
    print_keys_and_size,
    read_header,
    save_adapter,
)

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT_ROOT = os.path.join(REPO_ROOT, "Tests", "Fixtures")

BATCH, SEQ = 2, 8
NORM_NOISE_STD = 0.1
# Larger than the HF default (0.02) so activations, attention patterns and logits
# are far from uniform and numerical mismatches are visible in the references.
INIT_RANGE = 0.2

FIXTURES = [
    {
        "name": "llama_untied",
        "seed": 1234,
        "tie": False,
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
    },
    {
        "name": "llama_tied",
        "seed": 5678,
        "tie": True,
        "targets": ["q_proj", "v_proj", "up_proj"],
    },
]

def make_config(tie: bool) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=INIT_RANGE,
        attn_implementation="eager",
    )


def build_fixture(spec):
    name, seed, tie, targets = spec["name"], spec["seed"], spec["tie"], spec["targets"]
    out = os.path.join(OUT_ROOT, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)

    # ---------------------------------------------------------------- base model
    torch.manual_seed(seed)
    config = make_config(tie)
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1.0 + NORM_NOISE_STD * torch.randn_like(p))
    model.eval()
    if tie:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "tie failed"
    model.save_pretrained(out, safe_serialization=True)

    gen = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=gen, dtype=torch.int64)

    ref = {"input_ids": input_ids.clone()}

    # ------------------------------------------------ full fine-tuning reference
    base_param_names = full_reference(model, input_ids, ref)
    saved_base = load_saved_base(out, model, base_param_names)

    # --------------------------------------------------------------- LoRA pass
    # Reload the base from disk so the adapter sits on exactly the saved weights.
    base = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    base.eval()
    pm, lora_params = add_random_adapter(base, targets, seed)
    adir = os.path.join(out, "adapter")
    save_adapter(pm, adir, f"Tests/Fixtures/{name}")
    lora_reference(pm, input_ids, lora_params, ref)

    # Adapter keys on disk must equal the names we used for lora.grad.*
    saved_adapter = load_saved_adapter(adir, lora_params, config.num_hidden_layers * len(targets))

    # Cross-check: merging W' = W + scaling * B @ A into a plain model reproduces lora.logits.
    m2 = LlamaForCausalLM(make_config(tie)).to(torch.float32).eval()
    ml, _ = merged_logits(m2, saved_base, saved_adapter, input_ids)
    maxdiff = (ml - ref["lora.logits"]).abs().max().item()
    assert maxdiff < 1e-4, maxdiff

    # ------------------------------------------------------------ write + verify
    ref_path = os.path.join(out, "reference.safetensors")
    # Single metadata entry only: safetensors stores metadata in a hash map, so several
    # entries would be written in a random order (non byte-stable). Versions are in the README.
    save_file(ref, ref_path, metadata={"format": "pt"})
    verify(out, ref, config, targets)

    print(f"== {name}: full.loss={ref['full.loss'].item():.6f}  lora.loss={ref['lora.loss'].item():.6f}  "
          f"merged-vs-lora max|dlogits|={maxdiff:.2e}")
    print(f"   reference keys ({len(ref)}): input_ids, full.logits, full.loss, "
          f"{len(base_param_names)} full.grad.*, lora.logits, lora.loss, lora.scaling, "
          f"{len(lora_params)} lora.grad.*")
    return ref


def verify(out, ref, config, targets):
    V, H, I = config.vocab_size, config.hidden_size, config.intermediate_size
    nh, nkv, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    shapes = {
        "model.embed_tokens.weight": (V, H),
        "self_attn.q_proj.weight": (nh * hd, H),
        "self_attn.k_proj.weight": (nkv * hd, H),
        "self_attn.v_proj.weight": (nkv * hd, H),
        "self_attn.o_proj.weight": (H, nh * hd),
        "mlp.gate_proj.weight": (I, H),
        "mlp.up_proj.weight": (I, H),
        "mlp.down_proj.weight": (H, I),
        "input_layernorm.weight": (H,),
        "post_attention_layernorm.weight": (H,),
        "model.norm.weight": (H,),
        "lm_head.weight": (V, H),
    }

    def expected_base_shape(k):
        for suffix, s in shapes.items():
            if k.endswith(suffix):
                return s
        raise KeyError(k)

    # Base weights.
    base = load_file(os.path.join(out, "model.safetensors"))
    hdr = read_header(os.path.join(out, "model.safetensors"))
    n_expected = 2 + config.num_hidden_layers * 9 + (0 if config.tie_word_embeddings else 1)
    assert len(base) == n_expected, (len(base), n_expected)
    assert ("lm_head.weight" in base) != config.tie_word_embeddings
    for k, v in base.items():
        assert tuple(v.shape) == expected_base_shape(k), (k, v.shape)
        assert hdr[k]["dtype"] == "F32"

    # Reference file.
    loaded = load_file(os.path.join(out, "reference.safetensors"))
    hdr = read_header(os.path.join(out, "reference.safetensors"))
    assert sorted(loaded) == sorted(ref)
    for k, v in loaded.items():
        assert torch.equal(v, ref[k]), k
        want = "I64" if k == "input_ids" else "F32"
        assert hdr[k]["dtype"] == want, (k, hdr[k]["dtype"])
    assert tuple(loaded["input_ids"].shape) == (BATCH, SEQ)
    assert int(loaded["input_ids"].min()) >= 0 and int(loaded["input_ids"].max()) < V
    for tag in ("full", "lora"):
        assert tuple(loaded[f"{tag}.logits"].shape) == (BATCH, SEQ, V)
        assert hdr[f"{tag}.loss"]["shape"] == []
    assert hdr["lora.scaling"]["shape"] == [] and loaded["lora.scaling"].item() == 2.0
    for k in base:
        assert tuple(loaded[f"full.grad.{k}"].shape) == tuple(base[k].shape), k
    assert sum(k.startswith("full.grad.") for k in loaded) == len(base)

    # Adapter.
    adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
    with open(os.path.join(out, "adapter", "adapter_config.json")) as f:
        acfg = json.load(f)
    assert acfg["r"] == LORA_R and acfg["lora_alpha"] == LORA_ALPHA
    assert sorted(acfg["target_modules"]) == sorted(targets)
    for k, v in adapter.items():
        assert k.startswith("base_model.model.model.layers.") and ".default" not in k, k
        stem = k[len("base_model.model."):]
        base_w = stem.replace(".lora_A.weight", ".weight").replace(".lora_B.weight", ".weight")
        out_f, in_f = base[base_w].shape
        want = (LORA_R, in_f) if ".lora_A." in k else (out_f, LORA_R)
        assert tuple(v.shape) == want, (k, v.shape, want)
        assert tuple(loaded[f"lora.grad.{k}"].shape) == want
        assert loaded[f"lora.grad.{k}"].abs().sum() > 0, k
    assert sum(k.startswith("lora.grad.") for k in loaded) == len(adapter)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print("versions:", json.dumps(VERSIONS))
    os.makedirs(OUT_ROOT, exist_ok=True)
    for spec in FIXTURES:
        build_fixture(spec)
    # Print the exact key list (header order) of the first fixture's reference file.
    print_keys_and_size(os.path.join(OUT_ROOT, FIXTURES[0]["name"], "reference.safetensors"), OUT_ROOT)


if __name__ == "__main__":
    main()
