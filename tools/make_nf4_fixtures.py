#!/usr/bin/env python3
"""Generate the NF4 (bitsandbytes QLoRA 4-bit) fixtures in Tests/Fixtures/nf4/.

Writes Tests/Fixtures/nf4/nf4.safetensors: for w1 [64, 96], w2 [7, 45] and w3 [130, 128] the
input weight and what bitsandbytes.functional.quantize_4bit(quant_type="nf4", blocksize=64,
compress_statistics=True) makes of it on the CPU, plus the dequantized result. It also writes
the NF4 and 8-bit dynamic code books. Every tensor is checked against the independent numpy
reference below (the exact CPU algorithm of bitsandbytes 0.50.2). See Tests/Fixtures/nf4/README.md.

Deterministic: fixed seed, float32, one torch thread.
  pip install -r tools/requirements-fixtures.txt && python3 tools/make_nf4_fixtures.py
"""

import sys
from pathlib import Path

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "Tests" / "Fixtures" / "nf4"
f32 = np.float32
BS, BS2 = 64, 256  # first-level (NF4) and second-level (double quantization) block sizes


def inputs():
    g = torch.Generator().manual_seed(4242)
    w1 = torch.randn(64, 96, generator=g) * 0.02
    w1.view(-1)[[5, 777, 3000, 4095]] = 0.0  # a few exact zeros
    w1[10, 17] = 0.75  # one large outlier (flat index 977, block 15)
    # Last block (row 63, cols 32..95 = flat 6080..6143): absmax 2^-4, so x * (1/absmax) is exact
    # and the normalised values are exactly the NF4 midpoints, their float32 neighbours and the codes.
    code = F.get_4bit_type("nf4", device="cpu").numpy()
    mids = (code[:-1] + code[1:]) / f32(2)
    tie = np.concatenate([mids, np.nextafter(mids, f32(2)), np.nextafter(mids, f32(-2)), code, np.zeros(3, f32)])
    w1.view(-1)[-BS:] = torch.from_numpy(tie * f32(0.0625))
    w2 = torch.randn(7, 45, generator=g) * 0.02  # 315 elements: 4 full blocks + a 59-element tail
    w3 = torch.randn(130, 128, generator=g) * 0.02  # 260 blocks: second level 256 + 4
    w3.view(-1)[200 * BS : 201 * BS] = 0.0  # one all-zero block (block 200)
    return {"w1": w1, "w2": w2, "w3": w3}


# ---------- independent numpy reference of the bitsandbytes 0.50.2 CPU path ----------

def ref_nf4(x, code):
    """backends/default/ops.py quantize_4bit: per-64-block absmax, bucketize on midpoints, pack."""
    n, nb = x.size, -(-x.size // BS)
    absmax, s = np.empty(nb, f32), np.empty(n, f32)
    for b in range(nb):
        blk = x[b * BS : (b + 1) * BS]
        a = np.abs(blk).max()
        if blk.size == BS:  # full block: multiply by float32 reciprocal (absmax clamped only here)
            s[b * BS : b * BS + blk.size] = blk * (f32(1) / max(a, f32(1e-38)))
        else:  # tail block: true division, and the *stored* absmax is clamped to 1e-38
            a = max(a, f32(1e-38))
            s[b * BS :] = blk / a
        absmax[b] = a
    mids = (code[:-1] + code[1:]) / f32(2)
    q = np.searchsorted(mids, np.clip(s, -1, 1), side="left")  # mids[i-1] < s <= mids[i] -> i
    if n % 2:
        q = np.append(q, 7)  # odd count: padded with 0.0, which quantizes to code 7
    return (q[0::2] << 4 | q[1::2]).astype(np.uint8), absmax


def ref_mean(a):
    """torch.mean of a 1-D float32 CPU tensor, one thread: float32 cascade sum (8 lanes x 4) / n."""
    n, W = a.size, 8
    if n < W:  # scalar path: 4 interleaved partial sums
        p = [f32(0)] * 4
        for k in range(n):
            p[k % 4 if k < 4 * (n // 4) else 0] += a[k]
        return ((p[0] + p[1]) + p[2] + p[3]) / f32(n)
    vs = n // W
    V, size = a[: vs * W].reshape(vs, W), vs // 4
    lp = max(4, max(size - 1, 0).bit_length() // 4)  # level power; levels only matter for n >= 512
    acc, i = np.zeros((4, 4, W), f32), 0
    while i + (1 << lp) <= size:
        for _ in range(1 << lp):
            acc[0] += V[4 * i : 4 * i + 4]
            i += 1
        for j in range(1, 4):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0
            if i & (((1 << lp) - 1) << (j * lp)):
                break
    for i in range(i, size):
        acc[0] += V[4 * i : 4 * i + 4]
    p0 = acc[0] + acc[1] + acc[2] + acc[3]  # [ilp accumulator, lane]
    for r in range(4 * size, vs):
        p0[0] += V[r]
    lane = p0[0] + p0[1] + p0[2] + p0[3]
    s = f32(0)
    for v in a[vs * W :]:
        s += v  # scalar tail first, then the 8 lanes in order
    for v in lane:
        s += v
    return s / f32(n)


def ref_blockwise8(y, code):
    """csrc/cpu_ops.cpp quantize_cpu_impl<float> (scalar path): 65536-entry LUT, not exact nearest."""
    mids = (code[:-1] + code[1:]) * f32(0.5)
    grid = (f32(2) * np.arange(65536, dtype=f32)) / f32(65535) - f32(1)
    lut = np.searchsorted(mids, grid, side="left")  # first midpoint >= grid value
    q, scales = np.zeros(y.size, np.uint8), []
    for b in range(0, y.size, BS2):
        blk = y[b : b + BS2]
        a = np.abs(blk).max()
        scales.append(a)
        if a == 0:
            continue  # all-zero block -> index 0
        t = (np.clip(blk * (f32(1) / a), -1, 1) + f32(1)) * f32(0.5)
        idx = (t.astype(np.float64) * 65535 + 0.5).astype(f32).astype(np.int64)  # fmaf then truncate
        q[b : b + BS2] = lut[idx]
    return q, np.array(scales, f32)


def ref_case(x, nf4, dq):
    packed, absmax = ref_nf4(x, nf4)
    offset = ref_mean(absmax)
    absmax_q, absmax2 = ref_blockwise8(absmax - offset, dq)
    absmax_dq = dq[absmax_q] * np.repeat(absmax2, BS2)[: absmax.size] + offset  # two float32 roundings
    nib = np.stack([packed >> 4, packed & 15], 1).reshape(-1)[: x.size]
    return dict(codes=packed, absmax=absmax, offset=np.array([offset], f32), absmax_q=absmax_q,
                absmax2=absmax2, absmax_dq=absmax_dq, dequant=nf4[nib] * np.repeat(absmax_dq, BS)[: x.size])


# ---------- bitsandbytes ----------

def bnb_case(w):
    packed, st = F.quantize_4bit(w, blocksize=BS, compress_statistics=True, quant_type="nf4")
    raw = torch.ops.bitsandbytes.quantize_4bit.default(w, BS, "nf4", torch.uint8)[1]  # pre-double-quant absmax
    absmax_dq = F.dequantize_blockwise(st.absmax, st.state2) + st.offset  # as dequantize_4bit does
    # bnb's portable dequant kernel (backends/default). The native CPU kernel is wrong on AVX-512
    # machines when the last dim is a multiple of 16 but not of 64 (w1, see README), so not used here.
    deq_fn = getattr(_dequantize_4bit_compute, "__wrapped__", _dequantize_4bit_compute)
    deq = deq_fn(packed.view(-1), absmax_dq, st.code, BS, w.shape, torch.float32)
    native = F.dequantize_4bit(packed, st)
    print(f"  native CPU dequantize_4bit differs in {int((native != deq).sum())} of {w.numel()} elements",
          file=sys.stderr)
    return st, dict(codes=packed.view(-1), absmax=raw, offset=st.offset.reshape(1), absmax_q=st.absmax,
                    absmax2=st.state2.absmax, absmax_dq=absmax_dq, dequant=deq.reshape(-1))


def main():
    torch.set_num_threads(1)  # torch.mean (the offset) is thread-count dependent for large inputs
    tensors = {}
    for name, w in inputs().items():
        print(f"{name} {list(w.shape)}", file=sys.stderr)
        st, got = bnb_case(w)
        nf4, dq = st.code.numpy(), st.state2.code.numpy()
        ref = ref_case(w.numpy().reshape(-1), nf4, dq)
        for k, v in got.items():
            assert np.array_equal(v.numpy(), ref[k]), f"{name}.{k}: numpy reference disagrees with bnb"
        tensors[f"{name}.weight"] = w.contiguous()
        tensors.update({f"{name}.{k}": v.contiguous() for k, v in got.items()})
        tensors["nf4_code"], tensors["dq_code"] = st.code.contiguous(), st.state2.code.contiguous()
    assert np.array_equal(tensors["dq_code"].numpy(), F.create_dynamic_map(signed=True).numpy())
    OUT.mkdir(parents=True, exist_ok=True)
    # one metadata entry only: safetensors keeps metadata in a hash map (random order otherwise)
    meta = {"generator": f"tools/make_nf4_fixtures.py, bitsandbytes {bnb.__version__}, torch {torch.__version__}"}
    save_file({k: v.clone() for k, v in sorted(tensors.items())}, str(OUT / "nf4.safetensors"), metadata=meta)
    print(f"wrote {OUT / 'nf4.safetensors'}", file=sys.stderr)


if __name__ == "__main__":
    main()
