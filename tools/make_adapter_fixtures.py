#!/usr/bin/env python3
"""Generate Tests/Fixtures/adapters/: several PEFT adapters on one tiny base, peft's own
add_weighted_adapter combinations of them, and the logits peft computes with each.

1. base/: a tiny random LlamaForCausalLM (vocab 258, so lora-dist's byte tokenizer fits and
   the CLI can evaluate and generate with it).
2. legal/, medical/, code/, rs/, brief/: PEFT LoRA adapters on it (lora_B randomised, not
   zero): two of equal rank and targets (different alpha), one of another rank and targets,
   one with use_rslora, one of legal's rank on other targets. foreign/: an adapter made for another base (hidden 48), whose
   adapter_config.json names this base: the bad input the shape checks must catch.
3. combined/NAME/: peft's add_weighted_adapter(adapters, weights, NAME, combination_type)
   for each entry of COMBINATIONS, saved with save_pretrained.
4. reference.safetensors: input_ids and the logits of the base with each adapter
   (adapter.NAME), with each combination active (combined.NAME), and of the base with
   W + sum_i w_i * get_delta_weight(adapter_i) folded in (merged.logits, MERGE's weights).
5. combinations.json: what was combined and merged, for the Swift tests.

Deterministic (seeded, eager attention, one CPU thread): running it twice gives
byte-identical files.

    pip install -r tools/requirements-fixtures.txt
    python3 tools/make_adapter_fixtures.py                 # writes the fixtures
    python3 tools/make_adapter_fixtures.py --check BINARY  # also checks lora-dist against peft

--check runs `lora-dist adapters combine` for every combination and `lora-dist export
--format merged` for MERGE, loads each combination with peft.PeftModel.from_pretrained and
the merged model with LlamaForCausalLM.from_pretrained, and compares the tensors peft
loaded and the logits with peft's own (1e-5).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

# First: sets the offline environment before transformers loads (tools/reference_stack.py).
from reference_stack import VERSIONS, lora_dist_env, save_adapter, tidy_saved_adapter

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = "Tests/Fixtures/adapters"
OUT = os.path.join(REPO_ROOT, REL)
SEED = 3141
BATCH, SEQ = 2, 8
INIT_RANGE = 0.2
NORM_NOISE_STD = 0.1
LORA_B_STD = 0.1
PEFT_PREFIX = "base_model.model."
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]

ADAPTERS = [
    {"name": "legal", "r": 4, "alpha": 8, "targets": ATTN, "rslora": False},
    {"name": "medical", "r": 4, "alpha": 16, "targets": ATTN, "rslora": False},
    {"name": "code", "r": 2, "alpha": 4, "targets": ["q_proj", "v_proj", "gate_proj", "down_proj"], "rslora": False},
    {"name": "rs", "r": 4, "alpha": 8, "targets": ATTN, "rslora": True},
    # rank 4 like legal, other targets: linear refuses it with legal (lora-dist is stricter than peft there)
    {"name": "brief", "r": 4, "alpha": 4, "targets": ["q_proj", "v_proj", "up_proj"], "rslora": False},
]
FOREIGN = {"name": "foreign", "r": 4, "alpha": 8, "targets": ATTN, "rslora": False, "hidden": 48}

COMBINATIONS = [
    {"name": "linear", "method": "linear", "adapters": ["legal", "medical"], "weights": [0.7, 0.3]},
    {"name": "linear_negative", "method": "linear", "adapters": ["legal", "medical"], "weights": [1.0, -0.5]},
    {"name": "linear_rslora", "method": "linear", "adapters": ["rs", "legal"], "weights": [0.6, 0.4]},
    {"name": "cat", "method": "cat", "adapters": ["legal", "medical", "code"], "weights": [0.5, 0.3, 0.2]},
    {"name": "cat_rslora", "method": "cat", "adapters": ["code", "rs"], "weights": [1.0, -0.25]},
    # One adapter: peft turns any method into linear.
    {"name": "single", "method": "cat", "adapters": ["code"], "weights": [0.5]},
]
MERGE = {"adapters": ["legal", "code", "rs"], "weights": [0.5, 0.2, -0.3]}

def make_config(hidden=32):
    return LlamaConfig(
        vocab_size=258, hidden_size=hidden, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
        rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=INIT_RANGE,
        bos_token_id=256, eos_token_id=257, attn_implementation="eager",
    )


def random_base(seed, hidden=32):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(make_config(hidden)).to(torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1.0 + NORM_NOISE_STD * torch.randn_like(p))
    return model.eval()


def load_base():
    return LlamaForCausalLM.from_pretrained(os.path.join(OUT, "base"), dtype=torch.float32,
                                            attn_implementation="eager").eval()


def make_adapter(base, spec, seed):
    cfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=0.0, target_modules=list(spec["targets"]),
                     bias="none", task_type="CAUSAL_LM", use_rslora=spec["rslora"])
    torch.manual_seed(seed)  # lora_A (kaiming-uniform) draws from the global RNG
    pm = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in pm.named_parameters():
            if "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * LORA_B_STD)
    adir = os.path.join(OUT, spec["name"])
    save_adapter(pm, adir, REL + "/base")
    return adir


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.detach().float().contiguous()


def merged_state(pm, adapters, weights):
    """W + sum_i w_i * get_delta_weight(adapter_i) for every LoRA layer: peft's own per-adapter merge, weighted."""
    state = {k: v.detach().clone() for k, v in load_base().state_dict().items()}
    for key, module in pm.base_model.model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        delta = None
        for a, w in zip(adapters, weights):
            if a in module.lora_A:
                d = w * module.get_delta_weight(a)
                delta = d if delta is None else delta + d
        if delta is not None:
            state[key + ".weight"] = state[key + ".weight"] + delta
    return state


def build():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    os.chdir(REPO_ROOT)

    base = random_base(SEED)
    base.save_pretrained(os.path.join(OUT, "base"), safe_serialization=True)
    os.remove(os.path.join(OUT, "base", "generation_config.json"))
    for i, spec in enumerate(ADAPTERS):
        make_adapter(load_base(), spec, SEED + 10 * (i + 1))
    make_adapter(random_base(SEED + 99, FOREIGN["hidden"]), FOREIGN, SEED + 100)

    ids = torch.randint(0, 256, (BATCH, SEQ), generator=torch.Generator().manual_seed(SEED + 7), dtype=torch.int64)
    ref = {"input_ids": ids.clone(), "base.logits": logits(load_base(), ids)}

    # Every adapter on one PeftModel, as add_weighted_adapter needs them.
    pm = PeftModel.from_pretrained(load_base(), os.path.join(OUT, ADAPTERS[0]["name"]), adapter_name=ADAPTERS[0]["name"])
    for spec in ADAPTERS[1:]:
        pm.load_adapter(os.path.join(OUT, spec["name"]), adapter_name=spec["name"])
    pm.eval()
    for spec in ADAPTERS:
        pm.set_adapter(spec["name"])
        ref[f"adapter.{spec['name']}.logits"] = logits(pm, ids)
        # peft loaded the files unchanged
        saved = load_file(os.path.join(OUT, spec["name"], "adapter_model.safetensors"))
        for k, v in saved.items():
            stem = k[len(PEFT_PREFIX):].replace(".weight", "")
            mod, which = stem.rsplit(".", 1)
            layer = pm.base_model.model.get_submodule(mod)
            assert torch.equal(getattr(layer, which)[spec["name"]].weight.detach(), v), k

    tmp = tempfile.mkdtemp()
    for c in COMBINATIONS:
        pm.add_weighted_adapter(c["adapters"], c["weights"], c["name"], combination_type=c["method"])
        pm.set_adapter(c["name"])
        ref[f"combined.{c['name']}.logits"] = logits(pm, ids)
        pm.save_pretrained(tmp, selected_adapters=[c["name"]])
        dst = os.path.join(OUT, "combined", c["name"])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(os.path.join(tmp, c["name"]), dst)
        tidy_saved_adapter(dst)
        # the saved combination reloads in peft and gives the same logits
        again = PeftModel.from_pretrained(load_base(), dst).eval()
        assert torch.equal(logits(again, ids), ref[f"combined.{c['name']}.logits"]), c["name"]
    shutil.rmtree(tmp)

    merged = load_base()
    merged.load_state_dict(merged_state(pm, MERGE["adapters"], MERGE["weights"]))
    ref["merged.logits"] = logits(merged, ids)
    # cat is exact when its first adapter is plain LoRA (the combination's scaling is 1): the
    # weighted merge equals the cat combination of the same adapters, folded in.
    pm.add_weighted_adapter(MERGE["adapters"], MERGE["weights"], "merge_check", combination_type="cat")
    pm.set_adapter("merge_check")
    diff = (logits(pm, ids) - ref["merged.logits"]).abs().max().item()
    assert diff < 1e-5, diff

    save_file(ref, os.path.join(OUT, "reference.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "combinations.json"), "w") as f:
        f.write(json.dumps({"adapters": ADAPTERS, "foreign": FOREIGN, "combinations": COMBINATIONS, "merge": MERGE},
                           indent=2, sort_keys=True))
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(README.format(versions=", ".join(f"{k} {v}" for k, v in VERSIONS.items())))
    print(f"wrote {OUT}: {len(ADAPTERS)} adapters, {len(COMBINATIONS)} combinations, merged check {diff:.1e}")


def check(binary):
    """lora-dist's combinations load in peft and equal peft's; its weighted merge loads in transformers."""
    os.chdir(REPO_ROOT)
    ref = load_file(os.path.join(OUT, "reference.safetensors"))
    ids = ref["input_ids"]
    env = lora_dist_env()
    tmp = tempfile.mkdtemp()
    worst = 0.0

    def run(args):
        r = subprocess.run([binary] + args, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"lora-dist {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")

    def adapter_args(names):
        return sum((["--adapter", f"{n}={REL}/{n}"] for n in names), [])

    for c in COMBINATIONS:
        out = os.path.join(tmp, c["name"])
        run(["adapters", "combine", *adapter_args(c["adapters"]), "--weights", ",".join(map(str, c["weights"])),
             "--method", c["method"], "--out", out])
        ours = PeftModel.from_pretrained(load_base(), out).eval()
        theirs = load_file(os.path.join(OUT, "combined", c["name"], "adapter_model.safetensors"))
        for k, v in theirs.items():
            stem = k[len(PEFT_PREFIX):].replace(".weight", "")
            mod, which = stem.rsplit(".", 1)
            loaded = getattr(ours.base_model.model.get_submodule(mod), which)["default"].weight.detach()
            err = (loaded - v).abs().max().item() / max(v.abs().max().item(), 1e-12)
            assert loaded.shape == v.shape and err <= 1e-5, (c["name"], k, err)
            worst = max(worst, err)
        mine = json.load(open(os.path.join(out, "adapter_config.json")))
        peft_cfg = json.load(open(os.path.join(OUT, "combined", c["name"], "adapter_config.json")))
        for key in ["r", "lora_alpha", "use_rslora"]:
            assert mine[key] == peft_cfg[key], (c["name"], key, mine[key], peft_cfg[key])
        assert sorted(mine["target_modules"]) == sorted(peft_cfg["target_modules"]), c["name"]
        err = (logits(ours, ids) - ref[f"combined.{c['name']}.logits"]).abs().max().item()
        assert err <= 1e-5 * ref[f"combined.{c['name']}.logits"].abs().max().item(), (c["name"], err)
        print(f"  {c['name']}: loads in peft; tensors within {worst:.1e}, logits within {err:.1e}")

    out = os.path.join(tmp, "merged")
    run(["export", "--format", "merged", "--model", REL + "/base", *adapter_args(MERGE["adapters"]),
         "--weights", ",".join(map(str, MERGE["weights"])), "--out", out])
    model, info = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager",
                                                   output_loading_info=True)
    assert not any(info.values()), info
    err = (logits(model.eval(), ids) - ref["merged.logits"]).abs().max().item()
    assert err <= 1e-5 * ref["merged.logits"].abs().max().item(), err
    print(f"  merged export: loads in transformers; logits within {err:.1e}")
    shutil.rmtree(tmp)


README = """# Several adapters on one base (peft's add_weighted_adapter)

Generated by `tools/make_adapter_fixtures.py`; do not edit by hand. Checked by
`Tests/LoraDistTests/Formats/AdapterCombineTests.swift` and
`Tests/LoraDistTests/CLI/AdapterCLITests.swift`. Regenerate with

```sh
pip install -r tools/requirements-fixtures.txt
python3 tools/make_adapter_fixtures.py [--check .build/debug/lora-dist]
```

Versions: {versions}. Deterministic: running it twice gives byte-identical files.

- `base/`: a tiny random LlamaForCausalLM (vocab 258 for lora-dist's byte tokenizer, hidden 32,
  intermediate 48, 2 layers, 4 heads / 2 KV heads, head_dim 8, untied head, weights normal with
  std 0.2, norms 1 + 0.1·randn).
- `legal/` (r 4, alpha 8, q,k,v,o), `medical/` (r 4, alpha 16, q,k,v,o), `code/` (r 2, alpha 4,
  q,v,gate,down), `rs/` (r 4, alpha 8, q,k,v,o, use_rslora), `brief/` (r 4, alpha 4, q,v,up):
  PEFT adapters on `base/` (get_peft_model, lora_B randomised with std 0.1).
- `foreign/`: an adapter made for another base (hidden 48) whose adapter_config.json names
  this one: bad input.
- `combined/NAME/`: peft's `add_weighted_adapter` for each combination of `combinations.json`
  (linear of equal ranks, with a negative weight, with an rsLoRA first adapter; cat of three
  adapters of different ranks and targets, of a plain and an rsLoRA adapter; one adapter, which
  peft always combines as linear), saved by `save_pretrained`; each was reloaded in peft and
  gave the same logits.
- `reference.safetensors`: `input_ids` [2, 8]; `base.logits`; `adapter.NAME.logits` (the base
  with each adapter); `combined.NAME.logits` (each combination active); `merged.logits` (the
  base with W + Σ wᵢ·get_delta_weight(adapterᵢ) folded in, for `merge` in combinations.json;
  checked equal to the cat combination of the same adapters, within 1e-5).

peft 0.21's semantics, which lora-dist reproduces: the new adapter's config is the first
adapter's with r = new rank, lora_alpha = new rank (so its scaling is 1, or √r when the
first adapter uses rsLoRA) and target_modules the union. `linear` (equal ranks): per module,
A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ and B = Σ √|wᵢsᵢ|·Bᵢ over the adapters that target it
(sᵢ = alphaᵢ/rᵢ or alphaᵢ/√rᵢ). `cat`: r = Σ rᵢ; per module, the rows wᵢ·sᵢ·Aᵢ and the columns
Bᵢ of the adapters that target it are stacked from the first row/column on, the rest zero.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", metavar="BINARY", help="also check a lora-dist binary's combine and merged export against peft")
    opts = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    build()
    if opts.check:
        check(os.path.abspath(opts.check))


if __name__ == "__main__":
    main()
