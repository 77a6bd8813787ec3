#!/usr/bin/env python3
"""PyTorch side of tools/bench-attention-vs-pytorch.sh: attention alone, as transformers
trains a Llama-family model (SmolLM2) with attn_implementation="sdpa".

Each layer's q [B, T, H, D] and k, v [B, T, KV, D] are leaves that require grad, transposed
to [B, heads, T, D] as LlamaAttention does after its projections, and go through
transformers' own sdpa_attention_forward (transformers/integrations/sdpa_attention.py) with
the mask transformers' sdpa_mask builds for the shape: none for plain causal attention, so
SDPA runs is_causal=True with enable_gqa (or repeat_kv, where transformers picks that); a
boolean sliding-window mask with --window below the sequence. A step is the forward of
--layers layers, then the backward of each output (a random upstream gradient) in reverse
order: the work `lora-dist bench attention` times, with the same flags and JSON keys.

    python3 tools/bench_attention_torch.py --batch 1 --seq 2048 --threads 2 --json
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time
import types
import warnings

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)

try:
    import torch
    import transformers
    from transformers.integrations.sdpa_attention import sdpa_attention_forward, use_gqa_in_sdpa
    from transformers.masking_utils import causal_mask_function, sdpa_mask, sliding_window_causal_mask_function
except ImportError as e:
    sys.exit(f"bench_attention_torch.py needs torch and transformers (with transformers.integrations.sdpa_attention): {e}")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--window", type=int, default=None, help="sliding window (default: all earlier keys)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON line last")
    a = p.parse_args()
    for flag, v in [("--batch", a.batch), ("--seq", a.seq), ("--heads", a.heads), ("--kv-heads", a.kv_heads),
                    ("--head-dim", a.head_dim), ("--steps", a.steps), ("--layers", a.layers)]:
        if v < 1:
            sys.exit(f"{flag} must be at least 1, got {v}")
    if a.window is not None and a.window < 1:
        sys.exit(f"--window must be at least 1, got {a.window}")
    if a.heads % a.kv_heads:
        sys.exit(f"--heads {a.heads} must be a multiple of --kv-heads {a.kv_heads}")
    return a


def resident_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def useful_flops(a):
    """2·D FLOPs per (query, visible key) per product: 2 products forward, 4 backward."""
    pairs = sum(t + 1 - (max(0, t - a.window + 1) if a.window else 0) for t in range(a.seq)) * a.batch * a.heads
    per_product = 2 * a.head_dim * pairs
    return 2 * per_product, 4 * per_product


def main():
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(11)
    B, T, H, KV, D = a.batch, a.seq, a.heads, a.kv_heads, a.head_dim
    start_rss = resident_bytes()

    # What LlamaAttention hands the attention function: the module (its groups, is_causal) ...
    module = types.SimpleNamespace(num_key_value_groups=H // KV, is_causal=True, training=True)
    # ... and the mask create_causal_mask makes for sdpa (None: SDPA's is_causal does it).
    fn = sliding_window_causal_mask_function(a.window) if a.window else causal_mask_function
    mask = sdpa_mask(batch_size=B, q_length=T, kv_length=T, mask_function=fn, local_size=a.window,
                     allow_is_causal_skip=True, device="cpu")

    def leaf(heads):
        return (2 * torch.rand(B, T, heads, D) - 1).requires_grad_()

    layers = [(leaf(H), leaf(KV), leaf(KV)) for _ in range(a.layers)]
    upstream = torch.randn(B, T, H, D)
    gqa = "enable_gqa" if H != KV and use_gqa_in_sdpa(mask, layers[0][1], layers[0][2]) else ("repeat_kv" if H != KV else "none")

    def step():
        for q, k, v in layers:
            q.grad = k.grad = v.grad = None
        t0 = time.perf_counter()
        outs = []
        for q, k, v in layers:
            out, _ = sdpa_attention_forward(module, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask,
                                            dropout=0.0, scaling=D ** -0.5)
            outs.append(out)
        t1 = time.perf_counter()
        for out in reversed(outs):
            out.backward(upstream)
        t2 = time.perf_counter()
        return 1000 * (t1 - t0), 1000 * (t2 - t1)

    step()  # warm-up
    fw, bw = [], []
    for _ in range(a.steps):
        f, b = step()
        fw.append(f)
        bw.append(b)
    total = statistics.median(f + b for f, b in zip(fw, bw))
    uf, ub = useful_flops(a)
    r = {"side": "pytorch", "batch": B, "seq": T, "heads": H, "kv_heads": KV, "head_dim": D, "window": a.window,
         "threads": torch.get_num_threads(), "layers": a.layers, "steps": a.steps,
         "forward_ms": statistics.median(fw), "backward_ms": statistics.median(bw), "total_ms": total,
         "forward_ms_all": fw, "backward_ms_all": bw,
         "flops_useful_forward": uf, "flops_useful_backward": ub, "flops_useful": uf + ub,
         "gflops_useful": (uf + ub) / (total * 1e6),
         "mask": "none (is_causal)" if mask is None else "boolean", "gqa": gqa,
         "start_rss_bytes": start_rss, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
         "torch": torch.__version__, "transformers": transformers.__version__}
    print(f"pytorch attention {B} × {T}, {H} heads over {KV} key/value heads, head dim {D}"
          f"{f', sliding window {a.window}' if a.window else ''}, {a.layers} layer(s); {r['threads']} thread(s); "
          f"mask {r['mask']}, GQA {gqa}\n"
          f"forward {r['forward_ms']:.1f} ms, backward {r['backward_ms']:.1f} ms, total {total:.1f} ms "
          f"(median of {a.steps}), {r['gflops_useful']:.1f} useful GFLOP/s, "
          f"peak RSS {r['peak_rss_bytes'] / 1e6:.0f} MB ({start_rss / 1e6:.0f} MB before the tensors)", flush=True)
    if a.json:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
