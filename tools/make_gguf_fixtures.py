#!/usr/bin/env python3
"""Generate the GGUF fixtures in Tests/Fixtures/gguf/ for lora-dist.

Writes, with gguf-py's GGUFWriter and gguf.quants:
  tiny_f32.gguf, tiny_f16_q8_0.gguf, tiny_q4.gguf
      one tiny random LlamaForCausalLM (untied, grouped-query attention), converted
      the way llama.cpp's convert_hf_to_gguf.py does it (tensor names, q/k rows
      permuted for llama.cpp's RoPE layout), with different tensor types per file
  quants.gguf
      one [3, 256] tensor per ggml type lora-dist dequantizes (alignment 64)
  reference.safetensors
      input ids, and for each tiny file the logits and un-permuted q/k weights that
      transformers' own GGUF loader (from_pretrained(..., gguf_file=...)) produces;
      each quants.gguf tensor dequantized by gguf-py
  qwen2_f32.gguf, qwen2_q8_0.gguf, qwen3_f32.gguf, qwen3_q8_0.gguf
      tiny random Qwen2ForCausalLM (tied, random q/k/v biases) and Qwen3ForCausalLM
      (untied, head_dim != hidden/heads, random q_norm/k_norm), converted as
      convert_hf_to_gguf.py's Qwen2Model / Qwen3Model do: tensor names from gguf-py's
      TensorNameMap, q/k NOT permuted, the <arch>.* keys TextModel.set_gguf_parameters
      writes; every matrix F32, or every matrix Q8_0 (--outtype q8_0; 1-D tensors F32)
  families_reference.safetensors
      input ids per architecture, and for each file the logits (and a few weights) of
      transformers' GGUF loader on it
  tiny_bpe.gguf
      a tiny random Llama (tied, Q8_0 matrices) carrying a gpt2-style byte-level BPE tokenizer
      in its metadata (Tests/Fixtures/tokenizer/tiny/tokenizer.json's 600 tokens and merges,
      pre-tokenizer "smollm", bos/eos 2/3), the shape of SmolLM2's GGUF at test size, for the
      commands that take a GGUF base (compare --continual writes its tokenizer.json).
      Only this file: python3 tools/make_gguf_fixtures.py tiny_bpe
  smollm2_reference.json
      SmolLM2-135M-Instruct Q4_1 (fetched by tools/fetch-smollm2.sh, kept outside
      git) through transformers' GGUF loader, model and tokenizer: token ids of 3
      sentences, and for the first 8 positions logsumexp, argmax and the logits of
      64 fixed token ids

Deterministic (fixed seeds, float32, eager attention, one CPU thread).
  pip install -r tools/requirements-fixtures.txt && python3 tools/make_gguf_fixtures.py
See Tests/Fixtures/gguf/README.md.
"""

import hashlib
import json
import os
import re
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config,  # noqa: E402
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO_ROOT, "Tests", "Fixtures", "gguf")
MODELS = os.environ.get("LORA_DIST_MODELS", os.path.expanduser("~/.cache/lora-dist/models"))
SMOL_DIR = os.path.join(MODELS, "SmolLM2-135M-Instruct")
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

SEED = 4321
BATCH, SEQ = 2, 8
INIT_RANGE = 0.2
NORM_NOISE_STD = 0.1
TINY = dict(vocab_size=80, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
            rope_theta=50000.0, max_position_embeddings=64)

# ggml type per tensor kind, per file (norms stay F32, as convert_hf_to_gguf keeps 1-D tensors)
FILES = {
    "tiny_f32": dict(embd=Q.F32, output=Q.F32, attn=Q.F32, ffn=Q.F32),
    "tiny_f16_q8_0": dict(embd=Q.BF16, output=Q.Q8_0, attn=Q.F16, ffn=Q.Q8_0),
    "tiny_q4": dict(embd=Q.Q8_0, output=Q.Q4_1, attn=Q.Q4_0, ffn=Q.Q4_1),
}

LAYER_NAMES = {
    "input_layernorm": ("attn_norm", None), "self_attn.q_proj": ("attn_q", "attn"),
    "self_attn.k_proj": ("attn_k", "attn"), "self_attn.v_proj": ("attn_v", "attn"),
    "self_attn.o_proj": ("attn_output", "attn"), "post_attention_layernorm": ("ffn_norm", None),
    "mlp.gate_proj": ("ffn_gate", "ffn"), "mlp.up_proj": ("ffn_up", "ffn"), "mlp.down_proj": ("ffn_down", "ffn"),
}

VERSIONS = {
    "torch": torch.__version__, "transformers": transformers.__version__,
    "gguf": getattr(gguf, "__version__", None) or __import__("importlib.metadata").metadata.version("gguf"),
    "numpy": np.__version__, "python": sys.version.split()[0],
}


def permute(w, n_head, n_head_kv):
    """convert_hf_to_gguf.py LlamaModel.permute, verbatim (numpy)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def unpermute(w, n_head):
    """Independent inverse: HF row h*D + i*(D/2) + j comes from GGUF row h*D + 2j + i."""
    d = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(2):
            for j in range(d // 2):
                out[h * d + i * (d // 2) + j] = w[h * d + 2 * j + i]
    return out


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight", "embd"
    if hf == "model.norm.weight":
        return "output_norm.weight", None
    if hf == "lm_head.weight":
        return "output.weight", "output"
    parts = hf.split(".")
    layer, module = parts[2], ".".join(parts[3:-1])
    name, kind = LAYER_NAMES[module]
    return f"blk.{layer}.{name}.weight", kind


def add_tensor(w, name, arr, qtype):
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == Q.F32:
        w.add_tensor(name, arr)
    elif qtype == Q.F16:
        w.add_tensor(name, arr.astype(np.float16))
    else:
        w.add_tensor(name, quantize(arr, qtype), raw_dtype=qtype)


def tiny_model():
    torch.manual_seed(SEED)
    cfg = LlamaConfig(**TINY, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                      hidden_act="silu", initializer_range=INIT_RANGE, attn_implementation="eager",
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + NORM_NOISE_STD * torch.randn_like(p))
    return model.eval(), cfg


def write_tiny(path, model, cfg, types, extra_keys):
    c = TINY
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("lora-dist tiny llama")
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_vocab_size(c["vocab_size"])
    w.add_rope_dimension_count(c["head_dim"])
    if extra_keys:
        w.add_key_length(c["head_dim"])
        w.add_value_length(c["head_dim"])
    # minimal tokenizer metadata (transformers' model loader does not need it)
    tokens = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, c["vocab_size"])]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([float(-i) for i in range(len(tokens))])
    w.add_token_types([2, 3, 3] + [1] * (len(tokens) - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    for hf, t in model.state_dict().items():
        arr = t.detach().numpy()
        name, kind = gguf_name(hf)
        if hf.endswith("q_proj.weight"):
            arr = permute(arr, nh, nh)
        elif hf.endswith("k_proj.weight"):
            arr = permute(arr, nh, nkv)
        add_tensor(w, name, arr, Q.F32 if kind is None else types[kind])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def add_value_type_keys(w):
    """One key of every GGUF value type, for the parser tests (nested arrays are legal GGUF,
    but transformers' metadata reader refuses them, so they live only in quants.gguf)."""
    w.add_uint8("lora_dist.test.u8", 200)
    w.add_int8("lora_dist.test.i8", -100)
    w.add_uint16("lora_dist.test.u16", 60000)
    w.add_int16("lora_dist.test.i16", -30000)
    w.add_uint32("lora_dist.test.u32", 4000000000)
    w.add_int32("lora_dist.test.i32", -2000000000)
    w.add_float32("lora_dist.test.f32", 0.25)
    w.add_uint64("lora_dist.test.u64", 2**63 + 5)
    w.add_int64("lora_dist.test.i64", -(2**40))
    w.add_float64("lora_dist.test.f64", 1.0 / 3.0)
    w.add_bool("lora_dist.test.bool", True)
    w.add_string("lora_dist.test.string", "héllo, wörld")
    w.add_array("lora_dist.test.ints", [1, -2, 3])
    w.add_array("lora_dist.test.nested", [[1, 2], [3]])


def write_quants(path, ref):
    """One [3, 256] tensor per type; K-quants are random blocks with sane scales."""
    rng = np.random.default_rng(SEED + 7)
    x = (rng.standard_normal((3, 256)) * 0.5 + np.array([[0.0], [0.3], [-1.0]])).astype(np.float32)
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_name("lora-dist quant fixture")
    add_value_type_keys(w)
    for qt in [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]:
        add_tensor(w, qt.name, x, qt)
        if qt == Q.F16:
            raw = x.astype(np.float16).view(np.uint8)
        elif qt == Q.F32:
            raw = x.view(np.uint8)
        else:
            raw = quantize(x, qt)
        ref[f"quants.{qt.name}"] = torch.from_numpy(dequantize(raw, qt).astype(np.float32).reshape(3, 256).copy())
    # (type, byte offsets of f16 scales in a block)
    for qt, scales in [(Q.Q2_K, [80, 82]), (Q.Q3_K, [108]), (Q.Q4_K, [0, 2]), (Q.Q5_K, [0, 2]), (Q.Q6_K, [208])]:
        _, nbytes = gguf.GGML_QUANT_SIZES[qt]
        raw = rng.integers(0, 256, size=(3, nbytes), dtype=np.uint8)
        for off in scales:
            d = rng.uniform(0.001, 0.05, size=3).astype(np.float16)
            raw[:, off:off + 2] = d.view(np.uint8).reshape(3, 2)
        w.add_tensor(qt.name, raw, raw_dtype=qt)
        ref[f"quants.{qt.name}"] = torch.from_numpy(dequantize(raw, qt).astype(np.float32).reshape(3, 256).copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_tiny(ref):
    model, cfg = tiny_model()
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, TINY["vocab_size"], (BATCH, SEQ), generator=gen, dtype=torch.int64)
    ref["input_ids"] = ids
    with torch.no_grad():
        original_logits = model(input_ids=ids).logits
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    nh, nkv = TINY["num_attention_heads"], TINY["num_key_value_heads"]
    for stem, types in FILES.items():
        path = os.path.join(OUT, stem + ".gguf")
        write_tiny(path, model, cfg, types, extra_keys=(stem == "tiny_f32"))
        loaded = LlamaForCausalLM.from_pretrained(OUT, gguf_file=stem + ".gguf", dtype=torch.float32,
                                                  attn_implementation="eager").eval()
        lc = loaded.config
        assert (lc.vocab_size, lc.hidden_size, lc.num_key_value_heads, lc.head_dim) == (80, 64, 2, 16)
        assert lc.rope_parameters["rope_theta"] == TINY["rope_theta"], lc.rope_parameters
        assert not lc.tie_word_embeddings
        sd = loaded.state_dict()
        # transformers' un-permutation agrees with an independent one on the dequantized tensors
        reader = gguf.GGUFReader(path)
        by_name = {t.name: t for t in reader.tensors}
        for hf, t in sd.items():
            gname, _ = gguf_name(hf)
            raw = dequantize(by_name[gname].data, by_name[gname].tensor_type).reshape(t.shape)
            if hf.endswith("q_proj.weight"):
                raw = unpermute(raw, nh)
            elif hf.endswith("k_proj.weight"):
                raw = unpermute(raw, nkv)
            assert np.array_equal(raw, t.numpy()), (stem, hf)
            if stem == "tiny_f32":  # the F32 round trip is exact
                assert torch.equal(t, original[hf]), hf
        with torch.no_grad():
            logits = loaded(input_ids=ids).logits.float().contiguous()
        if stem == "tiny_f32":
            assert torch.equal(logits, original_logits)
        diff = (logits - original_logits).abs().max().item()
        ref[f"{stem}.logits"] = logits
        ref[f"{stem}.model.layers.0.self_attn.q_proj.weight"] = sd["model.layers.0.self_attn.q_proj.weight"].contiguous()
        ref[f"{stem}.model.layers.1.self_attn.k_proj.weight"] = sd["model.layers.1.self_attn.k_proj.weight"].contiguous()
        print(f"== {stem}: {os.path.getsize(path)} bytes, max|logits - unquantized| = {diff:.3g}")


# ---------------------------------------------------------------------------------------------
# qwen2 / qwen3: llama.cpp architectures whose converter (Qwen2Model, Qwen3Model(Qwen2Model) in
# convert_hf_to_gguf.py) writes q and k as they are: only LlamaModel (and a few others) permute.
# transformers' GGUF loader agrees: its LlamaTensorProcessor (the un-permutation) is registered
# for general.architecture "llama" only.

FAMILY_BATCH, FAMILY_SEQ = 2, 8
BIAS_STD = 0.2
FAMILIES = {
    # Qwen2.5-0.5B-like: tied embeddings, q/k/v biases (always, in Qwen2Attention), no head_dim key
    "qwen2": dict(cls=Qwen2ForCausalLM, config=Qwen2Config, seed=4402, arch=gguf.MODEL_ARCH.QWEN2,
                  hf=dict(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                          rope_theta=1000000.0, max_position_embeddings=128, tie_word_embeddings=True,
                          use_sliding_window=False),
                  head_dim=8),
    # Qwen3-like: untied, explicit head_dim 16 while hidden/heads is 8, per-head q_norm/k_norm
    "qwen3": dict(cls=Qwen3ForCausalLM, config=Qwen3Config, seed=4503, arch=gguf.MODEL_ARCH.QWEN3,
                  hf=dict(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                          rope_theta=1000000.0, max_position_embeddings=128, tie_word_embeddings=False,
                          attention_bias=False, use_sliding_window=False),
                  head_dim=16),
}
# stem → (architecture, ggml type of every 2-D tensor, general.file_type)
FAMILY_FILES = {
    "qwen2_f32": ("qwen2", Q.F32, gguf.LlamaFileType.ALL_F32),
    "qwen2_q8_0": ("qwen2", Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "qwen3_f32": ("qwen3", Q.F32, gguf.LlamaFileType.ALL_F32),
    "qwen3_q8_0": ("qwen3", Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
# weights kept in the reference, per architecture (HF names)
FAMILY_WEIGHTS = {
    "qwen2": ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.bias",
              "model.layers.0.self_attn.k_proj.bias"],
    "qwen3": ["model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.q_norm.weight",
              "model.layers.1.self_attn.k_norm.weight"],
}


def family_model(arch):
    f = FAMILIES[arch]
    torch.manual_seed(f["seed"])
    cfg = f["config"](**f["hf"], hidden_act="silu", initializer_range=INIT_RANGE, attention_dropout=0.0,
                      bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "eager"
    model = f["cls"](cfg).to(torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + NORM_NOISE_STD * torch.randn_like(p))
            elif n.endswith(".bias"):  # HF initialises them to zero
                p.copy_(BIAS_STD * torch.randn_like(p))
    assert getattr(model.config, "head_dim", cfg.hidden_size // cfg.num_attention_heads) == f["head_dim"]
    return model.eval(), cfg


def write_family(path, arch, model, qtype, ftype):
    """What convert_hf_to_gguf.py writes for this model (Qwen2Model / Qwen3Model, --outtype f32 or q8_0)."""
    f = FAMILIES[arch]
    c = f["hf"]
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[f["arch"]])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"lora-dist tiny {arch}")
    # TextModel.set_gguf_parameters, in its order
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if "head_dim" in c:  # config.json has head_dim (Qwen3)
        w.add_key_length(c["head_dim"])
        w.add_value_length(c["head_dim"])
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # minimal gpt2-style tokenizer metadata (transformers' model loader does not need it)
    tokens = ["<unk>", "<|im_start|>", "<|endoftext|>"] + [f"t{i}" for i in range(3, c["vocab_size"])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    names = gguf.get_tensor_name_map(f["arch"], c["num_hidden_layers"])
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight" and c["tie_word_embeddings"]:
            continue  # tied: the converter writes no output.weight
        stem, suffix = hf.rsplit(".", 1)
        name = names.get_name(stem)
        assert name is not None, hf
        arr = np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)  # q and k as they are
        add_tensor(w, f"{name}.{suffix}", arr, qtype if arr.ndim == 2 else Q.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_families(ref):
    models = {}
    for arch in FAMILIES:
        model, cfg = family_model(arch)
        gen = torch.Generator().manual_seed(FAMILIES[arch]["seed"] + 1)
        ids = torch.randint(0, FAMILIES[arch]["hf"]["vocab_size"], (FAMILY_BATCH, FAMILY_SEQ), generator=gen,
                            dtype=torch.int64)
        ref[f"{arch}.input_ids"] = ids
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        models[arch] = (model, cfg, ids, logits, {k: v.detach().clone() for k, v in model.state_dict().items()})
    for stem, (arch, qtype, ftype) in FAMILY_FILES.items():
        model, cfg, ids, original_logits, original = models[arch]
        c = FAMILIES[arch]["hf"]
        path = os.path.join(OUT, stem + ".gguf")
        write_family(path, arch, model, qtype, ftype)
        # transformers' GGUF loader: config and weights from the file. Its config reader (5.24) maps
        # no attention.key_length for qwen3, so Qwen3Config keeps its default head_dim 128 (right for
        # the released Qwen3 models, wrong for this one): head_dim is set from the file's key, the only
        # config field not taken from transformers' reading of the GGUF. Tensors are all its loader's.
        hf_cfg = AutoConfig.from_pretrained(OUT, gguf_file=stem + ".gguf")
        key_length = gguf.GGUFReader(path).get_field(f"{arch}.attention.key_length")
        if key_length is not None and hf_cfg.head_dim != key_length.contents():
            print(f"   {stem}: transformers read head_dim {hf_cfg.head_dim}; set to {arch}.attention.key_length "
                  f"{key_length.contents()}")
            assert arch == "qwen3", arch
            hf_cfg.head_dim = key_length.contents()
        loaded = FAMILIES[arch]["cls"].from_pretrained(OUT, gguf_file=stem + ".gguf", config=hf_cfg,
                                                       dtype=torch.float32, attn_implementation="eager").eval()
        lc = loaded.config
        assert lc.model_type == arch, lc.model_type
        assert (lc.vocab_size, lc.hidden_size, lc.intermediate_size, lc.num_hidden_layers) == \
            (c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]), lc
        assert (lc.num_attention_heads, lc.num_key_value_heads) == (c["num_attention_heads"], c["num_key_value_heads"])
        assert lc.rope_parameters["rope_theta"] == c["rope_theta"], lc.rope_parameters
        assert lc.tie_word_embeddings == c["tie_word_embeddings"]
        assert abs(lc.rms_norm_eps - c["rms_norm_eps"]) < 1e-12
        assert getattr(lc, "head_dim", c["hidden_size"] // c["num_attention_heads"]) == FAMILIES[arch]["head_dim"], \
            f"{stem}: transformers read head_dim {getattr(lc, 'head_dim', None)}"
        sd = loaded.state_dict()
        assert sorted(sd) == sorted(original), (stem, sorted(set(sd) ^ set(original)))
        # transformers' weights are gguf-py's dequantization, with no un-permutation
        reader = gguf.GGUFReader(path)
        by_name = {t.name: t for t in reader.tensors}
        names = gguf.get_tensor_name_map(FAMILIES[arch]["arch"], c["num_hidden_layers"])
        consumed = set()
        for hf, t in sd.items():
            if hf == "lm_head.weight" and c["tie_word_embeddings"]:
                assert torch.equal(t, sd["model.embed_tokens.weight"])
                continue
            stem_, suffix = hf.rsplit(".", 1)
            gname = f"{names.get_name(stem_)}.{suffix}"
            consumed.add(gname)
            g = by_name[gname]
            raw = dequantize(g.data, g.tensor_type).reshape(t.shape)
            assert np.array_equal(raw, t.numpy()), (stem, hf)
            if qtype == Q.F32:
                assert torch.equal(t, original[hf]), (stem, hf)
        assert consumed == set(by_name), (stem, set(by_name) - consumed)
        with torch.no_grad():
            logits = loaded(input_ids=ids).logits.float().contiguous()
        if qtype == Q.F32:
            assert torch.equal(logits, original_logits), stem
        diff = (logits - original_logits).abs().max().item()
        ref[f"{stem}.logits"] = logits
        for hf in FAMILY_WEIGHTS[arch]:
            ref[f"{stem}.{hf}"] = sd[hf].contiguous()
        print(f"== {stem}: {os.path.getsize(path)} bytes, max|logits - unquantized| = {diff:.3g}")


SENTENCES = [
    "The capital of France is Paris, and the capital of Germany is",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Once upon a time, in a small village near the mountains, there lived",
]
NPOS, NIDS = 8, 64


def build_smollm2():
    path = os.path.join(SMOL_DIR, SMOL_FILE)
    if not os.path.exists(path):
        subprocess.run([os.path.join(REPO_ROOT, "tools", "fetch-smollm2.sh")], check=True)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    tok = AutoTokenizer.from_pretrained(SMOL_DIR, gguf_file=SMOL_FILE)
    model = LlamaForCausalLM.from_pretrained(SMOL_DIR, gguf_file=SMOL_FILE, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    c = model.config
    ids = [tok(s)["input_ids"] for s in SENTENCES]
    for s, i in zip(SENTENCES, ids):
        assert len(i) > NPOS, (s, len(i))
    batch = torch.tensor([i[:NPOS] for i in ids], dtype=torch.int64)
    with torch.no_grad():
        logits = model(input_ids=batch).logits.double()  # [3, 8, V]
    lse = torch.logsumexp(logits, dim=-1)
    top2 = logits.topk(2, dim=-1)
    argmax = top2.indices[..., 0]
    margin = top2.values[..., 0] - top2.values[..., 1]
    chosen = set(argmax.flatten().tolist()) | {i[p + 1] for i in ids for p in range(NPOS)}
    rng = np.random.default_rng(SEED + 11)
    while len(chosen) < NIDS:
        chosen.add(int(rng.integers(0, c.vocab_size)))
    chosen = sorted(chosen)
    assert len(chosen) == NIDS, len(chosen)

    def f32(x):  # 5 decimals: far below the tolerance, and a smaller file
        return round(float(np.float32(x)), 5)

    out = {
        "gguf": SMOL_FILE, "sha256": sha, "versions": VERSIONS,
        "config": {"vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
                   "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
                   "head_dim": c.head_dim, "intermediate_size": c.intermediate_size,
                   "rope_theta": c.rope_parameters["rope_theta"], "rms_norm_eps": c.rms_norm_eps,
                   "max_position_embeddings": c.max_position_embeddings,
                   "tie_word_embeddings": c.tie_word_embeddings, "bos_token_id": c.bos_token_id,
                   "eos_token_id": c.eos_token_id},
        "positions": NPOS, "token_ids": chosen, "sentences": [],
    }
    for b, (s, i) in enumerate(zip(SENTENCES, ids)):
        out["sentences"].append({
            "text": s, "ids": i,
            "argmax": argmax[b].tolist(),
            "top2_margin": [round(f32(m), 4) for m in margin[b].tolist()],
            "logsumexp": [f32(v) for v in lse[b].tolist()],
            "logits": [[f32(logits[b, p, t].item()) for t in chosen] for p in range(NPOS)],
        })
        print(f"== SmolLM2 '{s[:30]}…': argmax {tok.decode(argmax[b].tolist())!r}, "
              f"min top-2 margin {margin[b].min().item():.3f}")
    text = json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False)
    # one line per list of numbers, so the file stays small and readable
    text = re.sub(r"\[\s+([-+0-9.e,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    with open(os.path.join(OUT, "smollm2_reference.json"), "w") as f:
        f.write(text + "\n")
    json.loads(text)


# ---------------------------------------------------------------------------------------------
# tiny_bpe: SmolLM2's GGUF at test size. The weights only need to be a valid model; the point is
# the tokenizer metadata, as llama.cpp's converter writes a gpt2-style BPE (tokens by id, merges
# "a b", token types with 3 = control for the added tokens, bos/eos ids, pre-tokenizer name).

TINY_BPE = dict(hidden=32, intermediate=64, layers=2, heads=2, kv_heads=1, eps=1e-5, theta=10000.0, context=128)


def write_tiny_bpe(path):
    with open(os.path.join(REPO_ROOT, "Tests", "Fixtures", "tokenizer", "tiny", "tokenizer.json")) as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert None not in tokens
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    added = {a["id"] for a in tj["added_tokens"]}
    c = TINY_BPE
    rng = np.random.default_rng(SEED + 11)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("lora-dist tiny llama with a BPE tokenizer")
    w.add_context_length(c["context"])
    w.add_embedding_length(c["hidden"])
    w.add_block_count(c["layers"])
    w.add_feed_forward_length(c["intermediate"])
    w.add_head_count(c["heads"])
    w.add_head_count_kv(c["kv_heads"])
    w.add_rope_freq_base(c["theta"])
    w.add_layer_norm_rms_eps(c["eps"])
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(c["hidden"] // c["heads"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in added else 1 for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(2)  # <|im_start|>, as SmolLM2's bos
    w.add_eos_token_id(3)  # <|im_end|>
    hd = c["hidden"] // c["heads"]
    shapes = {"attn_q": (c["hidden"], c["hidden"]), "attn_k": (c["kv_heads"] * hd, c["hidden"]),
              "attn_v": (c["kv_heads"] * hd, c["hidden"]), "attn_output": (c["hidden"], c["hidden"]),
              "ffn_gate": (c["intermediate"], c["hidden"]), "ffn_up": (c["intermediate"], c["hidden"]),
              "ffn_down": (c["hidden"], c["intermediate"])}
    # tied embeddings: no output.weight, as convert_hf_to_gguf writes SmolLM2
    add_tensor(w, "token_embd.weight", rng.normal(0, 0.02, (len(tokens), c["hidden"])), Q.Q8_0)
    add_tensor(w, "output_norm.weight", np.ones(c["hidden"]), Q.F32)
    for layer in range(c["layers"]):
        add_tensor(w, f"blk.{layer}.attn_norm.weight", np.ones(c["hidden"]), Q.F32)
        add_tensor(w, f"blk.{layer}.ffn_norm.weight", np.ones(c["hidden"]), Q.F32)
        for name, shape in shapes.items():
            add_tensor(w, f"blk.{layer}.{name}.weight", rng.normal(0, 0.02, shape), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # transformers reads it: the tokenizer (vocabulary in id order) and the model
    tok = AutoTokenizer.from_pretrained(OUT, gguf_file=os.path.basename(path))
    assert [tok.convert_ids_to_tokens(i) for i in range(len(tokens))] == tokens
    lm = LlamaForCausalLM.from_pretrained(OUT, gguf_file=os.path.basename(path), dtype=torch.float32)
    assert lm.config.vocab_size == len(tokens) and lm.config.tie_word_embeddings
    print(f"== tiny_bpe: {os.path.getsize(path)} bytes, {len(tokens)} tokens, {len(merges)} merges")


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print("versions:", json.dumps(VERSIONS))
    os.makedirs(OUT, exist_ok=True)
    ref = {}
    build_tiny(ref)
    write_quants(os.path.join(OUT, "quants.gguf"), ref)
    ref_path = os.path.join(OUT, "reference.safetensors")
    save_file(ref, ref_path, metadata={"format": "pt"})
    back = load_file(ref_path)
    assert sorted(back) == sorted(ref) and all(torch.equal(back[k], ref[k]) for k in ref)
    fam = {}
    build_families(fam)
    fam_path = os.path.join(OUT, "families_reference.safetensors")
    save_file(fam, fam_path, metadata={"format": "pt"})
    back = load_file(fam_path)
    assert sorted(back) == sorted(fam) and all(torch.equal(back[k], fam[k]) for k in fam)
    build_smollm2()
    write_tiny_bpe(os.path.join(OUT, "tiny_bpe.gguf"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    for f in sorted(os.listdir(OUT)):
        print(f"   {f}: {os.path.getsize(os.path.join(OUT, f))} bytes")
    print(f"total size of {os.path.relpath(OUT, REPO_ROOT)}: {total / 1024:.1f} KiB")
    assert total < 1_000_000, total


if __name__ == "__main__":
    if sys.argv[1:] == ["tiny_bpe"]:
        write_tiny_bpe(os.path.join(OUT, "tiny_bpe.gguf"))
    else:
        main()
