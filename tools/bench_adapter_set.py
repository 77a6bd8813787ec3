#!/usr/bin/env python3
"""K adapters in one job against K separate jobs, side by side in one run.

For K = 1, 2, 4 (--ks) on the small model (--model; LoRA r 8, all linear projections), each adapter on
its own domain corpus (legal, medical, technical, general from tools/fetch-corpora.sh):

  set/K ranks   one job, `train --adapter-set` on K ranks: K groups of one rank, one base per node
  set/1 rank    one job, `train --adapter-set` on 1 rank: the rank trains the K adapters in turn
  separate      K one-rank `train` jobs started at once (what a trainer with one adapter per job does)

Every rank runs one thread (--threads 1), so "set/K ranks" and "separate" run the same ranks
and the same work; they differ by the base held once or K times, and by one launch or K.

Measured per side: node memory as the peak over the run of the sum of the PSS of the side's
lora-dist processes (the launchers' descendants, not other work on the machine; sampled every 0.2 s from /proc/PID/smaps_rollup; PSS splits a shared page
among the processes mapping it, so the sum is what the node holds), and tokens/s as every
adapter's tokens over the side's wall time (launch to the last exit: loading, evaluation and
checkpoints included). The sides alternate in each round (the machine is shared and noisy);
each side's best round (highest tokens/s) is printed, with ratios against "separate", as a
markdown table on stdout. Logs and run directories go to --logdir.

  python3 tools/bench_adapter_set.py                      # about 4 min on 2 quiet cores
  python3 tools/bench_adapter_set.py --ks 1 2 --rounds 1 --steps 10
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

DOMAINS = ["legal", "medical", "technical", "general"]


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def pss_of_jobs(roots):
    """Σ PSS (bytes) of the lora-dist processes descended from the launchers `roots` (other
    work on the machine, other lora-dist runs included, is not counted)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "lora-dist":
                    continue
            p = int(pid)
            while p > 1 and p not in roots:
                p = parent(p)
            if p not in roots:
                continue
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def run_side(commands, log):
    """Starts every command at once; returns (wall seconds, peak Σ PSS). Fails on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_")) or k.startswith("OMPI_ALLOW")}
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    t0 = time.monotonic()
    with open(log, "w") as out:
        procs = [subprocess.Popen(c, stdout=out, stderr=subprocess.STDOUT, env=env) for c in commands]
        peak = 0
        while any(p.poll() is None for p in procs):
            peak = max(peak, pss_of_jobs({p.pid for p in procs}))
            time.sleep(0.2)
    wall = time.monotonic() - t0
    for c, p in zip(commands, procs):
        if p.returncode != 0:
            sys.exit(f"bench_adapter_set: {' '.join(c)} exited {p.returncode}; see {log}")
    return wall, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lora-dist", default=".build/release/lora-dist")
    ap.add_argument("--corpora", default=os.path.expanduser("~/.cache/lora-dist/data/corpora"))
    ap.add_argument("--logdir", default=None)
    a = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    logdir = a.logdir or tempfile.mkdtemp(prefix="bench-adapter-set-")
    binary = os.path.abspath(a.lora_dist)
    mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
    common = ["train", "--model", a.model, "--mode", "lora", "--steps", str(a.steps), "--batch", str(a.batch),
              "--seq", str(a.seq), "--eval-every", str(a.steps), "--eval-seqs", "4", "--threads", "1", "--quiet"]
    rows = []
    for k in a.ks:
        names = DOMAINS[:k]
        data = [f"{a.corpora}/{n}/train" for n in names]
        adapter_set = ",".join(f"{n}={d}" for n, d in zip(names, data))
        tokens = k * a.steps * a.batch * a.seq
        best = {}
        for rnd in range(a.rounds):
            sides = {
                "set, K ranks": lambda d: [mpirun + ["-n", str(k), binary] + common + ["--adapter-set", adapter_set, "--run-dir", d]],
                "set, 1 rank": lambda d: [mpirun + ["-n", "1", binary] + common + ["--adapter-set", adapter_set, "--run-dir", d]],
                "separate": lambda d: [mpirun + ["-n", "1", binary] + common + ["--data", x, "--run-dir", f"{d}/{n}"]
                                       for n, x in zip(names, data)],
            }
            if k == 1:
                del sides["set, 1 rank"]  # the same job as "set, K ranks"
            order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
            for side in order:
                d = f"{logdir}/k{k}-r{rnd}-{side.replace(', ', '-').replace(' ', '-')}"
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
                wall, peak = run_side(sides[side](d), d + ".log")
                tps = tokens / wall
                print(f"K={k} round {rnd + 1} {side}: {wall:.1f} s, {tps:.0f} tokens/s, peak node PSS {peak / 1e6:.1f} MB",
                      file=sys.stderr)
                if side not in best or tps > best[side][0]:
                    best[side] = (tps, peak)
        for side in [s for s in ["set, K ranks", "set, 1 rank", "separate"] if s in best]:
            tps, peak = best[side]
            sep_tps, sep_peak = best["separate"]
            rows.append((k, side, tps, peak, tps / sep_tps, peak / sep_peak))
    print("| K | run | tokens/s | node memory (peak Σ PSS) | tokens/s vs separate | memory vs separate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, side, tps, peak, rt, rm in rows:
        print(f"| {k} | {side} | {tps:,.0f} | {peak / 1e6:.1f} MB | {rt:.2f} | {rm:.2f} |")
    print(f"\nlogs and run directories: {logdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
