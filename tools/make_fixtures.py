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
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(REPO_ROOT, "Tests", "Fixtures")

BATCH, SEQ = 2, 8
LORA_R, LORA_ALPHA = 4, 8
LORA_B_STD = 0.05
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

VERSIONS = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "peft": peft.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
    "python": sys.version.split()[0],
}


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


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def model_loss(logits, ids):
    """Independent re-computation of HF's causal-LM loss (shift by one, mean CE)."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1, :].reshape(-1, v), ids[:, 1:].reshape(-1), reduction="mean")


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
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    outp = model(input_ids=input_ids, labels=input_ids)
    outp.loss.backward()
    full_loss = outp.loss.detach()
    check = model_loss(outp.logits.detach(), input_ids)
    assert torch.allclose(full_loss, check, rtol=1e-6, atol=1e-6), (full_loss, check)
    ref["full.logits"] = outp.logits.detach().float().contiguous()
    ref["full.loss"] = full_loss.float().reshape(())  # 0-dim scalar
    base_param_names = []
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        ref[f"full.grad.{pname}"] = p.grad.detach().clone().contiguous()
        base_param_names.append(pname)

    saved_base = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(saved_base) == sorted(base_param_names), (sorted(saved_base), sorted(base_param_names))
    for k, v in saved_base.items():
        assert v.dtype == torch.float32
        assert torch.equal(v, dict(model.named_parameters())[k].detach()), k

    # --------------------------------------------------------------- LoRA pass
    # Reload the base from disk so the adapter sits on exactly the saved weights.
    base = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    base.eval()
    lcfg = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed + 2)  # lora_A init (kaiming-uniform) draws from the global RNG
    pm = get_peft_model(base, lcfg)
    pm.eval()
    gen_b = torch.Generator().manual_seed(seed + 3)
    lora_params = {}
    with torch.no_grad():
        for pname, p in pm.named_parameters():
            if "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=gen_b) * LORA_B_STD)
    for pname, p in pm.named_parameters():
        is_lora = ".lora_A." in pname or ".lora_B." in pname
        assert p.requires_grad == is_lora, (pname, p.requires_grad)
        if is_lora:
            saved_name = pname.replace(".default.", ".")
            lora_params[saved_name] = p
    adir = os.path.join(out, "adapter")
    # PEFT would record the absolute load path; store a repo-relative one so the
    # output does not depend on where the repo is checked out.
    pm.peft_config["default"].base_model_name_or_path = f"Tests/Fixtures/{name}"
    pm.save_pretrained(adir)
    # PEFT also writes a boilerplate model card (README.md); the fixtures are documented
    # in Tests/Fixtures/README.md instead, so drop it.
    card = os.path.join(adir, "README.md")
    if os.path.exists(card):
        os.remove(card)
    # PEFT keeps target_modules as a Python set, so the saved list order depends on
    # PYTHONHASHSEED. Re-write it sorted (same json.dumps layout PEFT uses) for byte-stable output.
    acfg_path = os.path.join(adir, "adapter_config.json")
    with open(acfg_path) as f:
        acfg = json.load(f)
    acfg["target_modules"] = sorted(acfg["target_modules"])
    with open(acfg_path, "w") as f:
        f.write(json.dumps(acfg, indent=2, sort_keys=True))

    out_l = pm(input_ids=input_ids, labels=input_ids)
    out_l.loss.backward()
    lora_loss = out_l.loss.detach()
    check = model_loss(out_l.logits.detach(), input_ids)
    assert torch.allclose(lora_loss, check, rtol=1e-6, atol=1e-6)
    ref["lora.logits"] = out_l.logits.detach().float().contiguous()
    ref["lora.loss"] = lora_loss.float().reshape(())
    ref["lora.scaling"] = torch.tensor(LORA_ALPHA / LORA_R, dtype=torch.float32)
    for saved_name, p in lora_params.items():
        assert p.grad is not None, saved_name
        ref[f"lora.grad.{saved_name}"] = p.grad.detach().clone().contiguous()
    # Frozen base params must have no gradient.
    for pname, p in pm.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, pname

    # Adapter keys on disk must equal the names we used for lora.grad.*
    saved_adapter = load_file(os.path.join(adir, "adapter_model.safetensors"))
    assert sorted(saved_adapter) == sorted(lora_params), (sorted(saved_adapter), sorted(lora_params))
    for k, v in saved_adapter.items():
        assert v.dtype == torch.float32
        assert torch.equal(v, lora_params[k].detach()), k
    n_mods = config.num_hidden_layers * len(targets)
    assert len(saved_adapter) == 2 * n_mods

    # Cross-check: merging W' = W + scaling * B @ A into a plain model reproduces lora.logits.
    scaling = LORA_ALPHA / LORA_R
    merged = {k: v.clone() for k, v in saved_base.items()}
    for k in saved_adapter:
        if ".lora_A." in k:
            stem = k[len("base_model.model."):].replace(".lora_A.weight", "")
            A = saved_adapter[k]
            B = saved_adapter[k.replace(".lora_A.", ".lora_B.")]
            merged[stem + ".weight"] += scaling * (B @ A)
    m2 = LlamaForCausalLM(make_config(tie)).to(torch.float32).eval()
    missing, unexpected = m2.load_state_dict(merged, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    with torch.no_grad():
        ml = m2(input_ids=input_ids).logits
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
    first = os.path.join(OUT_ROOT, FIXTURES[0]["name"], "reference.safetensors")
    hdr = read_header(first)
    print(f"keys of {os.path.relpath(first, REPO_ROOT)} (header order):")
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        print(f"   {k}  {v['dtype']}  {v['shape']}")
    total = 0
    for root, _, files in os.walk(OUT_ROOT):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"total size of {os.path.relpath(OUT_ROOT, REPO_ROOT)}: {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
