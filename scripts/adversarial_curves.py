#!/usr/bin/env python3
"""Summarise `examples/adversarial_training --json` files (their rows pooled, settings from the
first): mean ± sd per method, and the learning curves (mean test error over the seeds after
chosen epochs), as Markdown tables.

    python3 scripts/adversarial_curves.py results/adversarial_training/methods_e20_s5.json
    python3 scripts/adversarial_curves.py results/adversarial_training/full/{methods,layerwise,mixed}_e60.json
"""
import json
import statistics
import sys


def mean_sd(v):
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def main(paths):
    docs = [json.load(open(p)) for p in paths]
    doc = docs[0]
    rows = [r for d in docs for r in d["rows"]]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    base = [r["seconds"] for r in rows if r["method"] == "weight_decay"]
    base_s = statistics.median(base) if base else None
    print("| method | seeds | test error, mean ± sd | per seed | mean minimal distortion | "
          "seconds (median) | × weight_decay |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        e, es = mean_sd([100 * r["test_error"] for r in rs])
        d, ds = mean_sd([r["mean_min_distortion"] for r in rs])
        t = statistics.median([r["seconds"] for r in rs])
        ratio = f"{t / base_s:.1f}" if base_s else "-"
        per = " / ".join(f"{100 * r['test_error']:.2f}" for r in rs)
        print(f"| {m} | {len(rs)} | {e:.2f} ± {es:.2f}% | {per} | {d:.4f} ± {ds:.4f} | "
              f"{t:.0f} | {ratio} |")
    epochs = doc["epochs"]
    marks = sorted({1, 2, 5, 10, 15, 20, 30, 40, epochs} & set(range(1, epochs + 1)))
    print()
    print("| method | " + " | ".join(f"epoch {k}" for k in marks) + " |")
    print("|---|" + "---|" * len(marks))
    for m in methods:
        curves = [r["test_error_per_epoch"] for r in rows if r["method"] == m]
        cells = []
        for k in marks:
            vals = [100 * c[k - 1] for c in curves if len(c) >= k]
            cells.append(f"{statistics.mean(vals):.2f}%" if vals else "-")
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
