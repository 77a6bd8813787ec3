#!/usr/bin/env python3
"""Generate the model-family reference fixtures in Tests/Fixtures/families/ for lora-dist.

Five tiny random models of the architectures transformers implements, in the same layout and
style as tools/make_fixtures.py (read that first):

  llama3_scaled   LlamaConfig, tied, rope_theta 500000, "llama3" RoPE scaling (all three regimes),
                  config.json rewritten to the transformers-4 Hub form (rope_theta + rope_scaling)
  llama_linear    LlamaConfig, untied, "linear" RoPE scaling factor 2 (transformers-5 rope_parameters)
  mistral_window  MistralConfig, untied, sliding_window 4 (active at SEQ 8)
  qwen2_bias      Qwen2Config, tied, random q/k/v biases (no o bias)
  qwen3_qknorm    Qwen3Config, untied, head_dim 16 != hidden/heads, noisy q_norm/k_norm

Each fixture directory holds:
  config.json, generation_config.json, model.safetensors   (HF save_pretrained)
  adapter/adapter_config.json, adapter/adapter_model.safetensors (PEFT save_pretrained)
  reference.safetensors   (input_ids, logits, losses, gradients, greedy generations)

Deterministic (fixed seeds, float32, eager attention, 1 CPU thread): byte-identical output.
Regenerate with:
  pip install -r tools/requirements-fixtures.txt && python3 tools/make_family_fixtures.py
See Tests/Fixtures/families/README.md for the file/key layout.
"""

import json
import math
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
from transformers import (
    AutoConfig,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

OUT_ROOT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "families")

BATCH, SEQ = 2, 8
NORM_NOISE_STD = 0.1
BIAS_STD = 0.2
# Larger than the HF default (0.02) so activations, attention patterns and logits
# are far from uniform and numerical mismatches are visible in the references.
INIT_RANGE = 0.2
# Greedy generation references.
GEN_PROMPT_LEN = 5
GEN_NEW_TOKENS = 12

# llama3_scaled: with head_dim 16 and theta 500000 the wavelengths 2*pi*theta^(2k/16) are
# 6.28, 32.4, 167.1, 861.6, 4443, ... With original_max_position_embeddings 512 the llama3
# thresholds are high_freq_wavelen = 512/4 = 128 and low_freq_wavelen = 512/1 = 512, so
# k = 0,1 are kept, k = 2 is smoothed (smooth factor (512/167.1 - 1)/3 = 0.688), k >= 3 are
# divided by 8. The script recomputes and asserts this split.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 512,
}

MISTRAL_WINDOW = 4

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

FIXTURES = [
    {
        "name": "llama3_scaled",
        "seed": 3104,
        "seq": 16,  # positions must matter: the smoothed frequency (k=2) turns 0.41 rad by position 15 (0.56 unscaled)
        "cls": LlamaForCausalLM,
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
    },
    {
        "name": "llama_linear",
        "seed": 3202,
        "seq": SEQ,
        "cls": LlamaForCausalLM,
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
    },
    {
        "name": "mistral_window",
        "seed": 3303,
        "seq": SEQ,
        "cls": MistralForCausalLM,
        "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
    },
    {
        "name": "qwen2_bias",
        "seed": 3406,
        "seq": SEQ,
        "cls": Qwen2ForCausalLM,
        "targets": ["q_proj", "v_proj", "o_proj", "down_proj"],
    },
    {
        "name": "qwen3_qknorm",
        "seed": 3502,
        "seq": SEQ,
        "cls": Qwen3ForCausalLM,
        "targets": list(ALL7),
    },
]

COMMON = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    initializer_range=INIT_RANGE,
    attn_implementation="eager",
)


def make_config(name):
    if name == "llama3_scaled":
        return LlamaConfig(
            **COMMON,
            head_dim=16,
            max_position_embeddings=4096,  # > original_max_position_embeddings, as in Llama 3.x
            rope_parameters=dict(LLAMA3_ROPE),
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
        )
    if name == "llama_linear":
        return LlamaConfig(
            **COMMON,
            head_dim=8,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
        )
    if name == "mistral_window":
        return MistralConfig(
            **COMMON,
            head_dim=8,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            sliding_window=MISTRAL_WINDOW,
            tie_word_embeddings=False,
        )
    if name == "qwen2_bias":
        # Qwen2Config has no head_dim field (derived: 32 / 4 = 8). use_sliding_window is False,
        # so __post_init__ sets sliding_window to None and every layer is full attention.
        return Qwen2Config(
            **COMMON,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
            max_window_layers=1,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
        )
    if name == "qwen3_qknorm":
        return Qwen3Config(
            **COMMON,
            head_dim=16,  # != hidden_size / num_attention_heads = 8
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            attention_bias=False,
            use_sliding_window=False,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        )
    raise KeyError(name)


def head_dim_of(config):
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def write_json(path, obj):
    # Same layout as PretrainedConfig.to_json_string (indent 2, sorted keys, trailing newline).
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- llama3 regimes
def llama3_regimes(rope, head_dim):
    """Independent recomputation of the llama3 frequency split. Returns (inv_freq, regimes)."""
    theta, factor = rope["rope_theta"], rope["factor"]
    lo, hi, old = rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
    low_wl, high_wl = old / lo, old / hi
    inv, regimes = [], []
    for k in range(head_dim // 2):
        f = 1.0 / (theta ** (2 * k / head_dim))
        wl = 2 * math.pi / f
        if wl < high_wl:
            regimes.append(f"kept (wavelen {wl:.1f} < {high_wl:g})")
            inv.append(f)
        elif wl > low_wl:
            regimes.append(f"divided by factor (wavelen {wl:.1f} > {low_wl:g})")
            inv.append(f / factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            regimes.append(f"smoothed (wavelen {wl:.1f} in [{high_wl:g}, {low_wl:g}], smooth factor {s:.4f})")
            inv.append((1 - s) * f / factor + s * f)
    return torch.tensor(inv, dtype=torch.float64), regimes


def check_llama3(model, config, input_ids, full_logits):
    hd = head_dim_of(config)
    want, regimes = llama3_regimes(config.rope_parameters, hd)
    kinds = {r.split(" ")[0] for r in regimes}
    assert kinds == {"kept", "smoothed", "divided"}, regimes
    got = model.model.rotary_emb.inv_freq.double()
    assert torch.allclose(got, want, rtol=1e-6, atol=0), (got, want)
    # How strongly the fixture discriminates: logits under wrong inv_freq variants.
    plain = torch.tensor([1.0 / (config.rope_parameters["rope_theta"] ** (2 * k / hd)) for k in range(hd // 2)])
    factor = config.rope_parameters["factor"]
    variants = {
        "unscaled": plain,
        "smoothed->kept": torch.where(torch.tensor([r.startswith("smoothed") for r in regimes]), plain, got.float()),
        "smoothed->divided": torch.where(
            torch.tensor([r.startswith("smoothed") for r in regimes]), plain / factor, got.float()
        ),
    }
    rot = model.model.rotary_emb
    saved = rot.inv_freq.clone()
    sens = {}
    with torch.no_grad():
        for vname, inv in variants.items():
            rot.inv_freq.copy_(inv.float())
            d = (model(input_ids=input_ids).logits - full_logits).abs().max().item()
            sens[vname] = d
            assert d > 1e-3, (vname, d)
        rot.inv_freq.copy_(saved)
        assert torch.equal(model(input_ids=input_ids).logits, full_logits)
    return {"inv_freq": [float(x) for x in got.float()], "regimes": regimes, "sensitivity": sens}


def rewrite_llama3_config_v4(out, config):
    """Rewrite config.json in the transformers-4 Hub form (top-level rope_theta + rope_scaling)."""
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cj = json.load(f)
    rp = cj.pop("rope_parameters")
    assert rp == LLAMA3_ROPE, rp
    cj["rope_theta"] = rp.pop("rope_theta")
    cj["rope_scaling"] = rp  # factor, high/low_freq_factor, original_max_position_embeddings, rope_type
    # transformers 4 wrote torch_dtype, not dtype.
    cj["torch_dtype"] = cj.pop("dtype")
    write_json(path, cj)
    loaded = AutoConfig.from_pretrained(out)
    assert type(loaded) is LlamaConfig
    assert loaded.rope_parameters == config.rope_parameters, (loaded.rope_parameters, config.rope_parameters)
    assert dict(loaded.rope_parameters) == LLAMA3_ROPE
    assert loaded.head_dim == config.head_dim and loaded.tie_word_embeddings


def rewrite_qwen2_config_window_trap(out):
    """Like real Qwen2/2.5 Hub configs, record a sliding_window value next to use_sliding_window=false.

    transformers ignores it (Qwen2Config.__post_init__ sets sliding_window = None when
    use_sliding_window is false), so every layer is full attention. Value 4 < SEQ so a loader that
    wrongly applies it produces different logits.
    """
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cj = json.load(f)
    assert cj["use_sliding_window"] is False and cj["sliding_window"] is None, cj
    assert cj["layer_types"] == ["full_attention"] * cj["num_hidden_layers"], cj["layer_types"]
    cj["sliding_window"] = 4
    write_json(path, cj)
    loaded = AutoConfig.from_pretrained(out)
    assert loaded.sliding_window is None and loaded.use_sliding_window is False
    assert loaded.layer_types == ["full_attention"] * loaded.num_hidden_layers


# ------------------------------------------------------------------------- sliding window
def check_sliding_window(model, config, input_ids):
    """Empirically determine which keys a query at position i sees (eager, sliding_window W)."""
    W = config.sliding_window
    T = input_ids.shape[1]
    with torch.no_grad():
        out = model(input_ids=input_ids, output_attentions=True)
    assert len(out.attentions) == config.num_hidden_layers
    expected = torch.tensor([[(i - W < j <= i) for j in range(T)] for i in range(T)])
    for a in out.attentions:
        visible = a > 0  # masked scores get finfo.min added; their softmax is exactly 0
        assert torch.equal(visible, expected.expand_as(visible)), visible[0, 0].int()

    # Perturb only the key (then only the value) of one position j in layer 0 and see which
    # layer-0 attention outputs move. A value perturbation moves exactly the queries that see j.
    # A key perturbation moves them too, except a query that sees a single key (i = 0), whose
    # softmax is 1 whatever the score.
    attn = model.model.layers[0].self_attn
    captured = {}

    def grab(_m, _inp, outp):
        captured["o"] = outp[0].detach().clone()

    def perturb(j):
        def hook(_m, _inp, outp):
            outp = outp.clone()
            outp[:, j, :] += 1.0
            return outp

        return hook

    h = attn.register_forward_hook(grab)
    with torch.no_grad():
        model(input_ids=input_ids)
        ref = captured["o"]
        for proj in (attn.k_proj, attn.v_proj):
            seen = torch.zeros(T, T, dtype=torch.bool)
            for j in range(T):
                hk = proj.register_forward_hook(perturb(j))
                model(input_ids=input_ids)
                hk.remove()
                seen[:, j] = (captured["o"] - ref).abs().amax(dim=(0, 2)) > 0
            want = expected.clone()
            if proj is attn.k_proj:
                want[0, 0] = False
            assert torch.equal(seen, want), (proj, seen.int())
    h.remove()
    # The window is really active: some query does not see key 0.
    assert not expected[T - 1, 0]
    return expected


# ----------------------------------------------------------------------------- generation
def greedy_reference(m, prompt, n):
    """Independent greedy decode: full forward (no cache) and argmax, n times."""
    ids = prompt[None, :].clone()
    with torch.no_grad():
        for _ in range(n):
            logits = m(input_ids=ids, use_cache=False).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            assert (top2[0] - top2[1]).item() > 1e-4, "near-tie in greedy decode"
            ids = torch.cat([ids, logits.argmax().reshape(1, 1)], dim=1)
    return ids[0, prompt.shape[0]:]


def generate_new(m, prompt):
    gcfg = GenerationConfig(
        do_sample=False,
        max_new_tokens=GEN_NEW_TOKENS,
        min_new_tokens=None,
        eos_token_id=None,
        pad_token_id=0,
        bos_token_id=None,
        use_cache=True,
        num_beams=1,
    )
    with torch.no_grad():
        out = m.generate(
            input_ids=prompt[None, :],
            attention_mask=torch.ones(1, prompt.shape[0], dtype=torch.int64),
            generation_config=gcfg,
        )
    new = out[0, prompt.shape[0]:].clone().contiguous()
    assert torch.equal(out[0, : prompt.shape[0]], prompt)
    assert new.shape == (GEN_NEW_TOKENS,), new.shape
    assert torch.equal(new, greedy_reference(m, prompt, GEN_NEW_TOKENS)), "cached generate != no-cache greedy"
    return new.to(torch.int64)


# --------------------------------------------------------------------------------- build
def build_fixture(spec):
    name, seed, seq, cls, targets = spec["name"], spec["seed"], spec["seq"], spec["cls"], spec["targets"]
    out = os.path.join(OUT_ROOT, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    info = {"name": name, "seq": seq}

    # ---------------------------------------------------------------- base model
    torch.manual_seed(seed)
    config = make_config(name)
    tie = config.tie_word_embeddings
    model = cls(config).to(torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):  # input/post_attention/final norms, q_norm/k_norm
                p.copy_(1.0 + NORM_NOISE_STD * torch.randn_like(p))
            elif pname.endswith(".bias"):  # HF initialises biases to zero
                p.copy_(BIAS_STD * torch.randn_like(p))
    model.eval()
    assert model.config._attn_implementation == "eager"
    if tie:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "tie failed"
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    model.save_pretrained(out, safe_serialization=True)
    if name == "llama3_scaled":
        rewrite_llama3_config_v4(out, config)
    if name == "qwen2_bias":
        rewrite_qwen2_config_window_trap(out)

    gen = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, config.vocab_size, (BATCH, seq), generator=gen, dtype=torch.int64)

    ref = {"input_ids": input_ids.clone()}

    # ------------------------------------------------ full fine-tuning reference
    base_param_names = full_reference(model, input_ids, ref)
    for p in model.parameters():
        p.grad = None
    saved_base = load_saved_base(out, model, base_param_names)

    # ------------------------------------------------------- family-specific checks
    if name == "llama3_scaled":
        info["llama3"] = check_llama3(model, config, input_ids, ref["full.logits"])
    if name == "llama_linear":
        hd = head_dim_of(config)
        plain = torch.tensor([1.0 / (10000.0 ** (2 * k / hd)) for k in range(hd // 2)])
        assert torch.allclose(model.model.rotary_emb.inv_freq, plain / 2.0, rtol=1e-6, atol=0)
    if name == "mistral_window":
        info["window"] = check_sliding_window(model, config, input_ids)
    if name in ("qwen2_bias", "qwen3_qknorm"):
        assert all(lt == "full_attention" for lt in config.layer_types), config.layer_types
        assert config.sliding_window is None
    if name == "qwen2_bias":
        for i in range(config.num_hidden_layers):
            a = model.model.layers[i].self_attn
            assert a.q_proj.bias is not None and a.k_proj.bias is not None and a.v_proj.bias is not None
            assert a.o_proj.bias is None
            assert a.q_proj.bias.abs().sum() > 0
        # The sliding_window recorded in config.json (rewrite_qwen2_config_window_trap) would
        # matter if applied: the same weights with use_sliding_window=True give other logits.
        wcfg = make_config(name)
        wcfg.use_sliding_window, wcfg.sliding_window = True, 4
        wcfg.layer_types = ["full_attention", "sliding_attention"]  # layer i >= max_window_layers=1
        mw = cls(wcfg).to(torch.float32).eval()
        mw.load_state_dict(saved_base, strict=False)
        with torch.no_grad():
            dw = (mw(input_ids=input_ids).logits - ref["full.logits"]).abs().max().item()
        assert dw > 1e-3, dw
        info["window_trap_dlogits"] = dw
    if name == "qwen3_qknorm":
        assert config.head_dim == 16 and config.hidden_size // config.num_attention_heads == 8
        assert model.model.layers[0].self_attn.q_proj.bias is None

    # The base as reloaded from disk (through the possibly rewritten config.json) is the same model.
    reloaded = cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        rl = reloaded(input_ids=input_ids).logits
    assert torch.equal(rl, ref["full.logits"]), (rl - ref["full.logits"]).abs().max()
    if name == "llama3_scaled":
        assert torch.equal(reloaded.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)

    # -------------------------------------------------------------- generation
    prompt = input_ids[0, :GEN_PROMPT_LEN].clone().contiguous()
    ref["generate.prompt_ids"] = prompt
    ref["generate.base_ids"] = generate_new(model, prompt)

    # --------------------------------------------------------------- LoRA pass
    # Reload the base from disk so the adapter sits on exactly the saved weights.
    base = reloaded
    pm, lora_params = add_random_adapter(base, targets, seed)
    biases = [p for pname, p in pm.named_parameters() if pname.endswith(".bias")]
    assert not any(p.requires_grad for p in biases)  # bias="none": base biases stay frozen
    if name == "qwen2_bias":
        assert len(biases) == 3 * config.num_hidden_layers, len(biases)
    adir = os.path.join(out, "adapter")
    save_adapter(pm, adir, f"Tests/Fixtures/families/{name}")
    lora_reference(pm, input_ids, lora_params, ref)  # frozen biases included: no gradient
    for p in pm.parameters():
        p.grad = None

    ref["generate.lora_ids"] = generate_new(pm, prompt)

    # Adapter keys on disk must equal the names we used for lora.grad.*
    saved_adapter = load_saved_adapter(adir, lora_params, config.num_hidden_layers * len(targets))

    # Cross-check: merging W' = W + scaling * B @ A (biases unchanged) reproduces lora.logits
    # and the LoRA greedy generation.
    m2 = cls(make_config(name)).to(torch.float32).eval()
    ml, missing = merged_logits(m2, saved_base, saved_adapter, input_ids)
    assert bool(missing) == tie
    maxdiff = (ml - ref["lora.logits"]).abs().max().item()
    assert maxdiff < 1e-4, maxdiff
    assert torch.equal(greedy_reference(m2, prompt, GEN_NEW_TOKENS), ref["generate.lora_ids"])
    info["merge_maxdiff"] = maxdiff

    # ------------------------------------------------------------ write + verify
    ref_path = os.path.join(out, "reference.safetensors")
    # Single metadata entry only (safetensors stores metadata in a hash map).
    save_file(ref, ref_path, metadata={"format": "pt"})
    verify(out, ref, config, targets, seq)

    info["full.loss"] = ref["full.loss"].item()
    info["lora.loss"] = ref["lora.loss"].item()
    info["gen"] = (prompt.tolist(), ref["generate.base_ids"].tolist(), ref["generate.lora_ids"].tolist())
    info["nkeys"] = len(ref)
    print(f"== {name}: full.loss={info['full.loss']!r}  lora.loss={info['lora.loss']!r}  "
          f"merged-vs-lora max|dlogits|={maxdiff:.2e}")
    print(f"   reference keys ({len(ref)}): input_ids, full.logits, full.loss, "
          f"{len(base_param_names)} full.grad.*, lora.logits, lora.loss, lora.scaling, "
          f"{len(lora_params)} lora.grad.*, 3 generate.*")
    if "window_trap_dlogits" in info:
        print(f"   qwen2 sliding_window=4 if wrongly applied: max|dlogits|={info['window_trap_dlogits']:.3g}")
    print(f"   generate: prompt={info['gen'][0]} base={info['gen'][1]} lora={info['gen'][2]}")
    return info


def verify(out, ref, config, targets, seq):
    V, H, I = config.vocab_size, config.hidden_size, config.intermediate_size
    nh, nkv, hd = config.num_attention_heads, config.num_key_value_heads, head_dim_of(config)
    shapes = {
        "model.embed_tokens.weight": (V, H),
        "self_attn.q_proj.weight": (nh * hd, H),
        "self_attn.k_proj.weight": (nkv * hd, H),
        "self_attn.v_proj.weight": (nkv * hd, H),
        "self_attn.o_proj.weight": (H, nh * hd),
        "self_attn.q_proj.bias": (nh * hd,),
        "self_attn.k_proj.bias": (nkv * hd,),
        "self_attn.v_proj.bias": (nkv * hd,),
        "self_attn.q_norm.weight": (hd,),
        "self_attn.k_norm.weight": (hd,),
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

    per_layer = 9
    if config.model_type == "qwen2":
        per_layer += 3  # q/k/v biases
    if config.model_type == "qwen3":
        per_layer += 2  # q_norm, k_norm

    # Base weights.
    base = load_file(os.path.join(out, "model.safetensors"))
    hdr = read_header(os.path.join(out, "model.safetensors"))
    n_expected = 2 + config.num_hidden_layers * per_layer + (0 if config.tie_word_embeddings else 1)
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
        want = "I64" if (k == "input_ids" or k.startswith("generate.")) else "F32"
        assert hdr[k]["dtype"] == want, (k, hdr[k]["dtype"])
    assert tuple(loaded["input_ids"].shape) == (BATCH, seq)
    assert int(loaded["input_ids"].min()) >= 0 and int(loaded["input_ids"].max()) < V
    for tag in ("full", "lora"):
        assert tuple(loaded[f"{tag}.logits"].shape) == (BATCH, seq, V)
        assert hdr[f"{tag}.loss"]["shape"] == []
    assert hdr["lora.scaling"]["shape"] == [] and loaded["lora.scaling"].item() == 2.0
    assert hdr["generate.prompt_ids"]["shape"] == [GEN_PROMPT_LEN]
    assert hdr["generate.base_ids"]["shape"] == [GEN_NEW_TOKENS]
    assert hdr["generate.lora_ids"]["shape"] == [GEN_NEW_TOKENS]
    # Seeds were picked so the greedy continuations are not a single repeated token and the
    # adapter changes them (tiny random models, tied ones especially, tend to repeat a token).
    assert not torch.equal(loaded["generate.base_ids"], loaded["generate.lora_ids"]), "adapter changes nothing"
    assert len(set(loaded["generate.base_ids"].tolist())) >= 4 and len(set(loaded["generate.lora_ids"].tolist())) >= 4
    for k in base:
        assert tuple(loaded[f"full.grad.{k}"].shape) == tuple(base[k].shape), k
        assert loaded[f"full.grad.{k}"].abs().sum() > 0, k
    assert sum(k.startswith("full.grad.") for k in loaded) == len(base)
    assert sum(k.startswith("generate.") for k in loaded) == 3

    # Adapter.
    adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
    with open(os.path.join(out, "adapter", "adapter_config.json")) as f:
        acfg = json.load(f)
    assert acfg["r"] == LORA_R and acfg["lora_alpha"] == LORA_ALPHA and acfg["bias"] == "none"
    assert acfg["target_modules"] == sorted(targets)
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
    assert not os.path.exists(os.path.join(out, "adapter", "README.md"))

    # config.json form.
    with open(os.path.join(out, "config.json")) as f:
        cj = json.load(f)
    if config.model_type == "llama" and config.rope_parameters["rope_type"] == "llama3":
        assert "rope_parameters" not in cj and "rope_theta" in cj and cj["rope_scaling"]["rope_type"] == "llama3"
    else:
        assert "rope_parameters" in cj and "rope_scaling" not in cj and "rope_theta" not in cj


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print("versions:", json.dumps(VERSIONS))
    os.makedirs(OUT_ROOT, exist_ok=True)
    infos = [build_fixture(spec) for spec in FIXTURES]
    for info in infos:
        if "llama3" in info:
            l3 = info["llama3"]
            print("llama3_scaled inv_freq / regimes:")
            for k, (f, r) in enumerate(zip(l3["inv_freq"], l3["regimes"])):
                print(f"   k={k}  inv_freq={f!r}  {r}")
            print("   max|dlogits| with wrong frequencies:", {k: f"{v:.3g}" for k, v in l3["sensitivity"].items()})
        if "window" in info:
            w = info["window"]
            print("mistral_window: visible keys per query (rows i, cols j), verified from attention weights")
            print("   and by perturbing each key in layer 0:")
            for i in range(w.shape[0]):
                print("   i=%d  %s" % (i, "".join("x" if v else "." for v in w[i].tolist())))
    # Print the exact key list (header order) of the first fixture's reference file.
    print_keys_and_size(os.path.join(OUT_ROOT, FIXTURES[0]["name"], "reference.safetensors"), OUT_ROOT)


if __name__ == "__main__":
    main()
