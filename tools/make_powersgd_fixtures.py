#!/usr/bin/env python3
"""Generate Tests/Fixtures/powersgd/powersgd.safetensors: torch's own PowerSGD hook on fixed gradients.

torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook.powerSGD_hook runs inside DDP (gloo, one
process: world size 1, where torch's mean and lora-dist's sum coincide) on a module whose gradients
are chosen: the loss is sum(param * G), so each parameter's gradient is exactly G. Tensors:
  a [32, 48], b [64, 16], e [16, 3, 8] (compressed: 2 (rows + cols) r < rows cols at r = 2 and 4)
  c [8, 40] (uncompressed at r = 4, compressed at r = 2), d [32] (1-D: uncompressed)
For r = 2 (torch orthogonalises by Gram-Schmidt) and r = 4 (by Householder QR), after the vanilla
allreduce steps before start_powerSGD_iter, two PowerSGD rounds with gradients G1 then G2:
  r{R}.grad{k}.{t}       the input gradient of round k
  r{R}.q0.{t}            the random Q the hook draws before its first round (before orthogonalising)
  r{R}.round{k}.{t}.P    P after the allreduce and orthogonalisation (rows x r), compressed tensors
  r{R}.round{k}.{t}.Q    Q after the allreduce (cols x r), compressed tensors
  r{R}.round{k}.{t}.out  the decompressed gradient DDP hands back
  r{R}.round{k}.{t}.err  the error feedback the hook keeps after the round
Deterministic: fixed seeds, float32, one torch thread.
  pip install -r tools/requirements-fixtures.txt && python3 tools/make_powersgd_fixtures.py
"""

import copy
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
from torch.nn.parallel import DistributedDataParallel as DDP

SHAPES = {"a": [32, 48], "b": [64, 16], "c": [8, 40], "d": [32], "e": [16, 3, 8]}
START = 2  # torch requires start_powerSGD_iter > 1 with error feedback or warm start


class Fixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for name, shape in SHAPES.items():
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))

    def forward(self, grads):
        return sum((getattr(self, n) * grads[n]).sum() for n in SHAPES)


def run(rank, out):
    torch.manual_seed(1000 + rank)
    g1 = {n: torch.randn(s) for n, s in SHAPES.items()}
    # A second round that shares structure with the first, as consecutive gradients do.
    g2 = {n: 0.7 * g1[n] + 0.5 * torch.randn(s) for n, s in SHAPES.items()}
    model = Fixed()
    ddp = DDP(model, bucket_cap_mb=100)
    state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=rank, start_powerSGD_iter=START,
                               use_error_feedback=True, warm_start=True, random_seed=0)
    name_of = {id(p): n for n, p in model.named_parameters()}
    seen = {}

    def hook(st, bucket):
        if st.iter >= st.start_powerSGD_iter and "q0" not in seen:
            # The random Q the hook is about to draw (same RNG stream, same order: compressed
            # tensors grouped by matrix shape, in the bucket's order).
            rng = copy.deepcopy(st.rng)
            groups = defaultdict(list)
            for p, g in zip(bucket.parameters(), bucket.gradients()):
                n_, m_ = g.shape[0], g.numel() // g.shape[0]
                r_ = min(n_, m_, st.matrix_approximation_rank)
                if psgd._should_compress(n_, m_, r_, st.min_compression_rate)[0]:
                    groups[(n_, m_)].append((name_of[id(p)], m_, r_))
            q0 = {}
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(rng.randint(1_000_000_000))
                for members in groups.values():
                    for name, m_, r_ in members:
                        q0[name] = torch.randn(1, m_, r_, device="cpu", dtype=torch.float32)[0]
            seen["q0"] = q0
        seen["order"] = [name_of[id(p)] for p in bucket.parameters()]
        seen["shapes"] = [tuple(g.shape) for g in bucket.gradients()]
        return psgd.powerSGD_hook(st, bucket)

    ddp.register_comm_hook(state, hook)
    zero = {n: torch.zeros(s) for n, s in SHAPES.items()}
    for _ in range(START):
        ddp.zero_grad()
        ddp(zero).backward()
    for k, g in ((1, g1), (2, g2)):
        ddp.zero_grad()
        ddp(g).backward()
        for n in SHAPES:
            out[f"r{rank}.grad{k}.{n}"] = g[n].clone()
            out[f"r{rank}.round{k}.{n}.out"] = getattr(model, n).grad.detach().clone()
        # The hook's P and Q memory: compressed tensors grouped by shape (all shapes differ here).
        order = seen["order"]
        params = dict(model.named_parameters())
        p_at = q_at = 0
        err = state.error_dict[0]
        e_at = 0
        for n in order:
            t = params[n]
            rows, cols = t.shape[0], t.numel() // t.shape[0]
            r_ = min(rows, cols, rank)
            if psgd._should_compress(rows, cols, r_, state.min_compression_rate)[0]:
                out[f"r{rank}.round{k}.{n}.P"] = state.p_memory_dict[0][p_at:p_at + rows * r_].view(rows, r_).clone()
                out[f"r{rank}.round{k}.{n}.Q"] = state.q_memory_dict[0][q_at:q_at + cols * r_].view(cols, r_).clone()
                p_at += rows * r_
                q_at += cols * r_
            out[f"r{rank}.round{k}.{n}.err"] = err[e_at:e_at + t.numel()].view(t.shape).clone()
            e_at += t.numel()
        if k == 1:
            for n, q in seen["q0"].items():
                out[f"r{rank}.q0.{n}"] = q.clone()


def main():
    torch.set_num_threads(1)
    dest = Path(__file__).resolve().parent.parent / "Tests" / "Fixtures" / "powersgd"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        out = {}
        for rank in (2, 4):
            run(rank, out)
        dist.destroy_process_group()
    out = {k: v.contiguous().float() for k, v in sorted(out.items())}
    save_file(out, str(dest / "powersgd.safetensors"), metadata={"torch": torch.__version__})
    print(f"wrote {len(out)} tensors to {dest / 'powersgd.safetensors'} (torch {torch.__version__})")


if __name__ == "__main__":
    sys.exit(main())
