#!/usr/bin/env python3
"""Dequantizes a GGUF model to an fp32 Hugging Face directory (config.json +
model.safetensors) for the PyTorch side of tools/bench-vs-pytorch.sh.

    python3 tools/gguf_to_hf.py MODEL.gguf OUT_DIR

transformers' own GGUF loader does the work (`from_pretrained(dir, gguf_file=...)`:
dequantizes every tensor to fp32 and undoes llama.cpp's q/k row permutation), the
same weights `lora-dist --model MODEL.gguf` dequantizes for itself. Converting once
keeps the loader's temporary copies out of the benchmark's peak memory. Idempotent:
an existing OUT_DIR with a `.complete` marker is left alone; the directory is
written beside and renamed into place.
"""
import os
import shutil
import sys
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    gguf, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2].rstrip("/"))
    if os.path.exists(os.path.join(out, ".complete")):
        print(out)
        return
    import torch
    from transformers import AutoModelForCausalLM
    loaded = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                                  dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained (its config says "quantized with gguf"):
    # the same architecture without that note, holding the dequantized weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".gguf_to_hf-", dir=parent)
    try:
        model.save_pretrained(tmp)
        open(os.path.join(tmp, ".complete"), "w").close()
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(out)


if __name__ == "__main__":
    main()
