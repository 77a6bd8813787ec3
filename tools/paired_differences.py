#!/usr/bin/env python3
"""Per-seed differences B − A between rows of two compare reports (report.json), with 95 % intervals.

The compare reports pair LoRA with full fine-tuning seed by seed; this pairs what they do not: the same
method in two invocations (early stopping against --no-early-stopping) or two rows of one report
(r=4 against r=8). Seeds are matched by the run directory's seed-N, so only runs of the same seed are
subtracted; a figure a seed lacks is left out with its pair. Intervals: mean ± t(0.975, n−1)·s/√n, as
CompareStats.interval.

  tools/paired_differences.py A/report.json B/report.json [--size 5k] [--a-run full --b-run full]

Without --a-run/--b-run every run name both reports have is compared with itself.
"""
import argparse, json, math, re, sys

FIGURES = [("in_domain_perplexity", "in-domain ppl", 1), ("in_domain_accuracy", "in-domain acc (points)", 100),
           ("out_of_domain_mean", "out-of-domain ppl", 1), ("out_of_domain_accuracy_mean", "out-of-domain acc (points)", 100),
           ("general_perplexity", "general ppl", 1), ("forgetting", "forgetting (Δ ppl general)", 1),
           ("dev_perplexity", "dev ppl (of the weights measured)", 1)]
# Student's t, two-sided 95 %, by degrees of freedom (as CompareStats).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def rows(path, size):
    r = json.load(open(path))
    if "sizes" in r:
        sizes = [s for s in r["sizes"] if size is None or s["label"] == size]
        if len(sizes) != 1:
            sys.exit(f"{path}: give --size (one of {', '.join(s['label'] for s in r['sizes'])})")
        return sizes[0]["runs"]
    return r["runs"]


def per_seed(row):
    out = {}
    for s in row.get("per_seed") or [row]:
        m = re.search(r"seed-(\d+)", s["run_dir"])
        out[int(m.group(1)) if m else 0] = s
    return out


def interval(values):
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    h = T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return mean, mean - h, mean + h


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a"), p.add_argument("b")
    p.add_argument("--size", help="the size label of --data-sizes reports (5k, 50k, ...)")
    p.add_argument("--a-run"), p.add_argument("--b-run")
    o = p.parse_args()
    a = {r["run"]: r for r in rows(o.a, o.size)}
    b = {r["run"]: r for r in rows(o.b, o.size)}
    pairs = [(o.a_run, o.b_run)] if o.a_run or o.b_run else [(n, n) for n in a if n in b]
    for an, bn in pairs:
        if an not in a or bn not in b:
            sys.exit(f"no run {an!r} in {o.a} or {bn!r} in {o.b}")
        sa, sb = per_seed(a[an]), per_seed(b[bn])
        seeds = sorted(set(sa) & set(sb))
        print(f"\n{bn} ({o.b}) − {an} ({o.a}), seeds {', '.join(map(str, seeds))}")
        for label, s in (("A", sa), ("B", sb)):
            print(f"  {label} steps run (best): " + ", ".join(f"{s[k]['steps_done']} ({s[k].get('best_step')})" for k in seeds))
        print("| figure | A mean | B mean | B − A per seed | B − A mean [95 % interval] |\n| --- | --- | --- | --- | --- |")
        for key, name, scale in FIGURES:
            d = [(sb[k][key] - sa[k][key]) * scale for k in seeds if sa[k].get(key) is not None and sb[k].get(key) is not None]
            if not d:
                continue
            ma = scale * sum(sa[k][key] for k in seeds) / len(seeds)
            mb = scale * sum(sb[k][key] for k in seeds) / len(seeds)
            mean, lo, hi = interval(d)
            iv = f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo is not None else f"{mean:+.2f} (one seed)"
            verdict = "" if lo is None else (" (crosses 0)" if lo <= 0 <= hi else "")
            print(f"| {name} | {ma:.2f} | {mb:.2f} | {', '.join(f'{x:+.2f}' for x in d)} | {iv}{verdict} |")


if __name__ == "__main__":
    main()
