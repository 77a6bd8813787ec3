#!/usr/bin/env python3
"""PyTorch side of tools/bench-vs-pytorch.sh: one training benchmark process.

Times forward + backward + AdamW step of LlamaForCausalLM on the `bench` config
(hidden 512, 8 layers, 8 heads, intermediate 1376, byte vocabulary 258, untied head),
or on a Hugging Face model directory (--model DIR, e.g. SmolLM2 dequantized to fp32 by
tools/gguf_to_hf.py), fp32, random token ids, the same work `lora-dist bench step` does.
--mode qlora loads DIR's linear projections (all but lm_head) as bitsandbytes NF4 with
double quantization, blocks of 64, fp32 compute (lora-dist's NF4 layout), LoRA on all of
them. --checkpointing turns on transformers' gradient checkpointing per layer
(non-reentrant), the counterpart of lora-dist's --recompute.

    python3 tools/bench_torch.py --mode full --threads 2 --json
    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 tools/bench_torch.py --threads 1 --json
    python3 tools/bench_torch.py --model ~/.cache/lora-dist/models/SmolLM2-135M-Instruct/hf-fp32 \
        --mode lora-all --batch 4 --seq 512 --steps 1 --threads 2 --json

Under torchrun (WORLD_SIZE > 1) each rank trains batch/world sequences under
DistributedDataParallel over gloo; rank 0 prints tokens/s of the global batch and
peak RSS summed over ranks.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no loading bars in the logs
# transformers 5 and torch 2.13 deprecation notices (is_gradient_checkpointing via peft, ...)
warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

ATTN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = ATTN_TARGETS + ["gate_proj", "up_proj", "down_proj"]  # every projection but lm_head


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bench", help="bench (random weights) or a Hugging Face model directory")
    p.add_argument("--mode", choices=["full", "lora-attn", "lora-all", "qlora"], default="full")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing per layer")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--batch", type=int, default=8, help="global sequences per step (split over ranks)")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 2 × rank)")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="attention implementation")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    return p.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
        world, rank = dist.get_world_size(), dist.get_rank()
    if args.batch % world:
        sys.exit(f"--batch {args.batch} does not split over {world} ranks")
    local_batch = args.batch // world

    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    if args.model == "bench":
        if args.mode == "qlora":
            sys.exit("--mode qlora needs --model DIR (a pretrained model to quantize)")
        config = LlamaConfig(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                             intermediate_size=1376, vocab_size=258, max_position_embeddings=args.seq,
                             tie_word_embeddings=False, rms_norm_eps=1e-5, bos_token_id=256, eos_token_id=257,
                             pad_token_id=None, attn_implementation=args.attn)
        torch.manual_seed(0)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
        model = LlamaForCausalLM(config).to(torch.float32)
    else:
        extra = {}
        if args.mode == "qlora":
            from transformers import BitsAndBytesConfig
            extra["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
            extra["device_map"] = "cpu"
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn,
                                                     **extra)
        config = model.config
        if args.seq > config.max_position_embeddings:
            sys.exit(f"--seq {args.seq} is longer than the model's {config.max_position_embeddings} positions")
    model.config.use_cache = False
    attn_used = model.config._attn_implementation
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    if args.mode != "full":
        from peft import LoraConfig, get_peft_model
        targets = ATTN_TARGETS if args.mode == "lora-attn" else ALL_LINEAR
        model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                                 target_modules=targets, bias="none", task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # Frozen base weights have requires_grad=False and are not registered with the
        # reducer; every trainable parameter gets a gradient each step, so
        # find_unused_parameters stays False. The only buffer (RoPE inv_freq) is constant:
        # no per-forward broadcast (forward_sync_buffers replaces broadcast_buffers in 2.13).
        import inspect
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
                   else {"broadcast_buffers": False})
        model = DDP(model, **no_sync)

    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    g = torch.Generator().manual_seed(1 + rank)
    ids = torch.randint(0, config.vocab_size, (local_batch, args.seq), generator=g)
    labels = torch.randint(0, config.vocab_size, (local_batch, args.seq), generator=g)

    times = []
    for s in range(args.steps + 1):
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        if s > 0:  # step 0 warms up allocator, threads and caches
            times.append(t1 - t0)

    # The slowest rank sets the step time.
    t = torch.tensor(times, dtype=torch.float64)
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        dist.all_reduce(rss, op=dist.ReduceOp.SUM)

    if rank == 0:
        step_s = statistics.median(t.tolist())
        r = {"side": "pytorch", "mode": args.mode, "ranks": world, "threads": torch.get_num_threads(),
             "tokens_per_s": round(args.batch * args.seq / step_s, 1), "step_ms": round(step_s * 1000, 1),
             "peak_rss_bytes": int(rss.item()), "trainable": trainable, "total": total,
             "batch": args.batch, "seq": args.seq, "steps": args.steps, "attn": attn_used,
             "model": args.model, "checkpointing": args.checkpointing,
             "step_ms_all": [round(x * 1000, 1) for x in t.tolist()], "loss": round(loss.item(), 4),
             "torch": torch.__version__}
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"pytorch {args.mode}{' (gradient checkpointing)' if args.checkpointing else ''}: "
                  f"{world} rank(s) × {r['threads']} thread(s), attn {attn_used}, "
                  f"{trainable:,} of {total:,} parameters trainable\n"
                  f"step {r['step_ms']:.1f} ms (median of {args.steps}: {r['step_ms_all']}), "
                  f"{r['tokens_per_s']:.0f} tokens/s, peak RSS {r['peak_rss_bytes'] / 1e6:.0f} MB"
                  f"{' (sum over ranks)' if world > 1 else ''}, loss {r['loss']}")

    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
