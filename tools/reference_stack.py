"""What the scripts that build tiny transformers/peft reference models share.

Used by tools/make_fixtures.py, make_family_fixtures.py, make_export_fixtures.py,
make_adapter_fixtures.py and check_family_exports.py (each imports it first, from its own folder: importing it sets the offline
environment before transformers loads). Every helper does its steps in the order the scripts did
them inline, so the fixtures they write are byte-identical.
"""

import json
import os
import random
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
from safetensors.torch import load_file  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The fixtures' adapters: rank 4, alpha 8, lora_B drawn (std 0.05) so that they change the logits.
LORA_R, LORA_ALPHA = 4, 8
LORA_B_STD = 0.05

VERSIONS = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "peft": peft.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
    "python": sys.version.split()[0],
}


# ------------------------------------------------------------------------------ files
def read_header(path):
    """A safetensors file's JSON header, in file order."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def drop_generation_config(d):
    """save_pretrained's generation_config.json, which lora-dist neither reads nor writes."""
    p = os.path.join(d, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)


def tree_bytes(root):
    """The size of every file below root."""
    total = 0
    for folder, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def print_keys_and_size(first, out_root):
    """The key list (header order) of one reference file, and the size of the fixture folder."""
    hdr = read_header(first)
    print(f"keys of {os.path.relpath(first, REPO_ROOT)} (header order):")
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        print(f"   {k}  {v['dtype']}  {v['shape']}")
    print(f"total size of {os.path.relpath(out_root, REPO_ROOT)}: {tree_bytes(out_root) / 1024:.1f} KiB")


# The training text of the export checks: whole lines of seeded English-like sentences.
SUBJECTS = ["the model", "a gradient", "the optimizer", "each rank", "the adapter", "a small batch",
            "the loss", "every layer", "the corpus", "a checkpoint"]
VERBS = ["updates", "reads", "shrinks", "follows", "measures", "writes", "averages", "learns", "keeps", "moves"]
OBJECTS = ["the weights", "a low rank matrix", "the learning rate", "its shard", "the next token",
           "a few bytes", "the frozen base", "the residual stream", "the attention heads", "the log"]


def write_sentences(path, seed, size, tails=None):
    """Sentences "Subject verb object[ tail]." drawn with random.Random(seed), a line each, until
    they hold `size` bytes."""
    rng = random.Random(seed)
    parts = [SUBJECTS, VERBS, OBJECTS] + ([tails] if tails else [])
    lines, n = [], 0
    while n < size:
        s = " ".join(rng.choice(p) for p in parts) + "."
        s = s[0].upper() + s[1:]
        lines.append(s)
        n += len(s) + 1
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def lora_dist_env():
    """The environment for a lora-dist child process: without the MPI variables of this process
    (a singleton's OMPI_/PMIX_ variables make the child's MPI_Init fail)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "OPAL_"))}


# ----------------------------------------------------------------------------- models
def model_loss(logits, ids):
    """Independent re-computation of HF's causal-LM loss (shift by one, mean CE)."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1, :].reshape(-1, v), ids[:, 1:].reshape(-1), reduction="mean")


def logits_of(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.detach().float().contiguous()


def full_reference(model, input_ids, ref):
    """Full fine-tuning: logits, loss and every parameter's gradient into ref (full.logits,
    full.loss, full.grad.NAME). Returns the parameter names."""
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
    names = []
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        ref[f"full.grad.{pname}"] = p.grad.detach().clone().contiguous()
        names.append(pname)
    return names


def load_saved_base(out, model, names):
    """out/model.safetensors, checked to hold exactly `names`, in fp32, equal to the model's."""
    saved = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(saved) == sorted(names), (sorted(saved), sorted(names))
    for k, v in saved.items():
        assert v.dtype == torch.float32
        assert torch.equal(v, dict(model.named_parameters())[k].detach()), k
    return saved


# ---------------------------------------------------------------------------- adapters
def add_random_adapter(base, targets, seed):
    """A PEFT LoRA adapter on `targets` of `base`: lora_A as PEFT initialises it under
    torch.manual_seed(seed + 2), lora_B drawn from seed + 3 (a fresh adapter's B is zero).
    Returns the PeftModel (eval mode) and its LoRA parameters by the names save_pretrained gives them."""
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
            lora_params[pname.replace(".default.", ".")] = p
    return pm, lora_params


def save_adapter(pm, adir, base_name):
    """pm.save_pretrained(adir), made independent of the checkout and byte-stable."""
    # PEFT would record the absolute load path; store a repo-relative one so the
    # output does not depend on where the repo is checked out.
    pm.peft_config["default"].base_model_name_or_path = base_name
    pm.save_pretrained(adir)
    tidy_saved_adapter(adir)


def tidy_saved_adapter(adir):
    """What PEFT's save_pretrained leaves in adir, made byte-stable and fixture-only."""
    # PEFT also writes a boilerplate model card (README.md); the fixtures are documented
    # in their README.md instead, so drop it.
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


def lora_reference(pm, input_ids, lora_params, ref):
    """The adapter's pass: logits, loss, scaling and each LoRA gradient into ref (lora.logits,
    lora.loss, lora.scaling, lora.grad.NAME); the frozen base gets no gradient."""
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
    for pname, p in pm.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, pname


def load_saved_adapter(adir, lora_params, modules):
    """adir/adapter_model.safetensors, checked to hold exactly the adapter's tensors (A and B of
    `modules` modules), in fp32, equal to them."""
    saved = load_file(os.path.join(adir, "adapter_model.safetensors"))
    assert sorted(saved) == sorted(lora_params), (sorted(saved), sorted(lora_params))
    for k, v in saved.items():
        assert v.dtype == torch.float32
        assert torch.equal(v, lora_params[k].detach()), k
    assert len(saved) == 2 * modules
    return saved


def merged_logits(plain, saved_base, saved_adapter, input_ids):
    """The logits of `plain` (a fresh model of the base's class) holding W + scaling · B @ A for every
    adapted weight (biases unchanged), and the keys it did not get (a tied head only)."""
    scaling = LORA_ALPHA / LORA_R
    merged = {k: v.clone() for k, v in saved_base.items()}
    for k in saved_adapter:
        if ".lora_A." in k:
            stem = k[len("base_model.model."):].replace(".lora_A.weight", "")
            A = saved_adapter[k]
            B = saved_adapter[k.replace(".lora_A.", ".lora_B.")]
            merged[stem + ".weight"] += scaling * (B @ A)
    missing, unexpected = plain.load_state_dict(merged, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    with torch.no_grad():
        return plain(input_ids=input_ids).logits, missing
