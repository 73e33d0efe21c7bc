#!/usr/bin/env python3
"""Side-by-side speed of the targeted box-constrained L-BFGS attack (issue 5).

Python side: SciPy's fmin_l_bfgs_b (m=15, maxiter=150, as Foolbox did) on a NumPy forward and
backward pass of the same float32 weights, with c searched exactly as blindspot's BoxLbfgs does
(start at c=1, factors of 10 until success and failure are bracketed, then bisection in log space,
each solve started from the best adversarial point so far, or while there is none from where the
previous solve ended). Rust side: the attack_compare example on the same images and model, in the
same run, with the crate's defaults (memory 5 carried across the solves, relative-reduction
tolerance 3e-6 instead of SciPy's 2.2e-9: see BoxLbfgs). On both sides an image the model already
labels as the target is not searched: it is counted (already_misclassified) and left out of the
success rate, mean distortion and evaluations per image, as blindspot's attack_batch does; the
timings are over all images.

    python3 scripts/compare_attack.py --model path/to/FC100-100-10.npz --images 200

A convolutional model file (arrays K0, c0, … before W0, b0, …: the zoo's CONV models) is run on
the Python side by PyTorch instead (its autograd gives the input gradient; one thread, float32),
since a NumPy convolution would not be a fair peer:

    python3 scripts/compare_attack.py --model path/to/CONV16-32-FC128-10.npz --images 100

`--rust-memory 15` runs blindspot with SciPy's memory instead of its default 5 (a smaller mean
distortion for more work per iteration). `--rust-bin target/release/examples/attack_compare` runs
a binary built beforehand instead of `cargo run` (the source tree may then change during the run).

Needs numpy and scipy, and torch for convolutional models (not used by CI).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
from scipy.optimize import fmin_l_bfgs_b

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_mnist_train(n):
    d = os.environ.get("BLINDSPOT_MNIST", os.path.join(ROOT, "data", "mnist"))
    with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:n]
    with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return (x.astype(np.float32) / 255.0), y.astype(int)


def load_model(path):
    z = np.load(path)
    meta = bytes(z["meta"]).decode()
    act = dict(l.split("=", 1) for l in meta.splitlines() if l)["activation"]
    assert act == "sigmoid", act
    layers = []
    i = 0
    while f"W{i}" in z:
        layers.append((z[f"W{i}"].astype(np.float32), z[f"b{i}"][0].astype(np.float32)))
        i += 1
    return layers


class TorchConv:
    """The crate's convnet in PyTorch from the same weights. blindspot stores feature maps
    channels-last (HWC) and kernels as (k*k*C) x D matrices with rows ordered (row, col, channel);
    PyTorch wants (D, C, k, k) kernels and flattens CHW, so the first dense layer's rows are
    permuted from HWC to CHW order."""

    def __init__(self, path):
        import torch
        torch.set_num_threads(1)
        self.torch = torch
        z = np.load(path)
        meta = dict(l.split("=", 1) for l in bytes(z["meta"]).decode().splitlines() if l)
        name = meta["name"]
        stages = name[len("CONV"):].split("-FC")[0].split("-")
        assert all(s.isdigit() for s in stages), "only default 5x5/pad 2/pool 2 stages: " + name
        assert meta["activation"] == "relu", meta["activation"]
        side = int(round(int(meta["input"]) ** 0.5))
        self.convs = []
        c, hw = 1, side
        for j, _ in enumerate(stages):
            k2c, d = z[f"K{j}"].shape
            k = int(round((k2c / c) ** 0.5))
            w = torch.from_numpy(z[f"K{j}"].reshape(k, k, c, d).transpose(3, 2, 0, 1).copy())
            b = torch.from_numpy(z[f"c{j}"][0].copy())
            self.convs.append((w, b, k // 2))
            c, hw = d, hw // 2
        self.dense = []
        i = 0
        while f"W{i}" in z:
            w = z[f"W{i}"]
            if i == 0:  # rows HWC -> CHW
                w = w.reshape(hw, hw, c, -1).transpose(2, 0, 1, 3).reshape(hw * hw * c, -1)
            self.dense.append((torch.from_numpy(np.ascontiguousarray(w.T)),
                               torch.from_numpy(z[f"b{i}"][0].copy())))
            i += 1
        self.side = side

    def logits(self, xt):
        F = self.torch.nn.functional
        a = xt.reshape(1, 1, self.side, self.side)
        for w, b, p in self.convs:
            a = F.max_pool2d(F.relu(F.conv2d(a, w, b, padding=p)), 2)
        a = a.reshape(1, -1)
        for k, (w, b) in enumerate(self.dense):
            a = F.linear(a, w, b)
            if k < len(self.dense) - 1:
                a = F.relu(a)
        return a[0]

    def predict(self, z):
        with self.torch.no_grad():
            return int(self.logits(self.torch.from_numpy(z.astype(np.float32))).argmax())

    def loss_grad(self, z, t):
        xt = self.torch.from_numpy(z.astype(np.float32)).requires_grad_(True)
        logits = self.logits(xt)
        loss = self.torch.logsumexp(logits, 0) - logits[t]
        loss.backward()
        return float(loss), xt.grad.numpy()


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


class Model:
    def __init__(self, layers):
        self.layers = layers

    def predict(self, z):
        a = z.astype(np.float32)
        for k, (w, b) in enumerate(self.layers):
            a = a @ w + b
            if k < len(self.layers) - 1:
                a = sigmoid(a)
        return int(np.argmax(a))

    def loss_grad(self, z, t):
        acts = [z.astype(np.float32)]
        a = acts[0]
        for k, (w, b) in enumerate(self.layers):
            a = a @ w + b
            if k < len(self.layers) - 1:
                a = sigmoid(a)
            acts.append(a)
        logits = acts[-1]
        m = logits.max()
        e = np.exp(logits - m)
        s = e.sum()
        loss = np.log(s) + m - logits[t]
        delta = e / s
        delta[t] -= 1.0
        for k in range(len(self.layers) - 1, -1, -1):
            w, _ = self.layers[k]
            delta = w @ delta
            if k > 0:
                a = acts[k]
                delta = delta * a * (1.0 - a)
        return float(loss), delta


def attack(model, x, t, m=15, maxiter=150, c0=1.0, bracket_steps=8, search_steps=5):
    x64 = x.astype(np.float64)
    evals = [0]
    bounds = [(0.0, 1.0)] * x.size

    def f(z, c):
        evals[0] += 1
        loss, g = model.loss_grad(z, t)
        r = z - x64
        return c * float(r @ r) + loss, 2.0 * c * r + g.astype(np.float64)

    best = None  # (d2, adv, c)
    last_end = None

    def solve(c):
        nonlocal last_end
        if best is not None:
            start = best[1].astype(np.float64)
        elif last_end is not None:
            start = last_end.astype(np.float64)
        else:
            start = x64.copy()
        z, _, _ = fmin_l_bfgs_b(f, start, args=(c,), bounds=bounds, m=m, maxiter=maxiter)
        adv = np.clip(z, 0.0, 1.0).astype(np.float32)
        last_end = adv
        evals[0] += 1
        return adv, model.predict(adv) == t

    def record(adv, c, ok):
        nonlocal best
        if ok:
            d2 = float(((adv.astype(np.float64) - x64) ** 2).sum())
            if best is None or d2 < best[0]:
                best = (d2, adv, c)

    c = c0
    adv, ok = solve(c)
    record(adv, c, ok)
    lo, hi = (c, None) if ok else (None, c)
    for _ in range(bracket_steps):
        if ok:
            if hi is not None:
                break
            c *= 10.0
        else:
            if lo is not None:
                break
            c /= 10.0
        adv, ok_now = solve(c)
        record(adv, c, ok_now)
        if ok_now:
            lo = c
        else:
            hi = c
        if lo is not None and hi is not None:
            break
    if lo is not None and hi is not None:
        l, h = lo, hi
        for _ in range(search_steps):
            mid = (l * h) ** 0.5
            adv, ok_now = solve(mid)
            record(adv, mid, ok_now)
            if ok_now:
                l = mid
            else:
                h = mid
    if best is None:
        return False, 0.0, evals[0]
    d = float(np.sqrt(best[0] / x.size))
    return True, d, evals[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--memory", type=int, default=15)
    ap.add_argument("--max-iters", type=int, default=150)
    ap.add_argument("--rust-memory", type=int, default=None,
                    help="blindspot's L-BFGS-B memory (default: the crate's, 5); 15 matches SciPy's")
    ap.add_argument("--rust-bin", default=None,
                    help="a built attack_compare binary to run instead of `cargo run` (so that the "
                         "source tree may change while SciPy runs)")
    args = ap.parse_args()

    x, y = load_mnist_train(args.images)
    if "K0" in np.load(args.model):
        model = TorchConv(args.model)
        peer = "SciPy fmin_l_bfgs_b + PyTorch"
    else:
        model = Model(load_model(args.model))
        peer = "SciPy fmin_l_bfgs_b + NumPy"
    times, evals, succ, dist, already = [], 0, 0, 0.0, 0
    for i in range(args.images):
        t0 = time.perf_counter()
        t = (y[i] + 1) % 10
        if model.predict(x[i]) == t:
            already += 1  # already adversarial: nothing to search (one forward pass)
            times.append(time.perf_counter() - t0)
            continue
        ok, d, e = attack(model, x[i], t, m=args.memory, maxiter=args.max_iters)
        times.append(time.perf_counter() - t0)
        evals += e
        if ok:
            succ += 1
            dist += d
    searched = max(args.images - already, 1)
    py = {
        "images": args.images,
        "already_misclassified": already,
        "success_rate": succ / searched,
        "mean_distortion": dist / max(succ, 1),
        "evaluations_per_image": evals / searched,
        "ms_per_image_mean": 1e3 * sum(times) / args.images,
        "ms_per_image_median": 1e3 * sorted(times)[args.images // 2],
    }
    rust = (["cargo", "run", "--release", "--quiet", "--example", "attack_compare", "--"]
            if args.rust_bin is None else [os.path.abspath(args.rust_bin)])
    out = subprocess.run(
        rust + ["--model", args.model, "--images", str(args.images), "--max-iters", str(args.max_iters)]
        + ([] if args.rust_memory is None else ["--memory", str(args.rust_memory)]),
        cwd=ROOT, check=True, capture_output=True, text=True)
    rs = json.loads(out.stdout)
    print(f"| | {peer} | blindspot BoxLbfgs |")
    print(f"|---|---|---|")
    for k in ["images", "already_misclassified", "success_rate", "mean_distortion",
              "evaluations_per_image", "ms_per_image_mean", "ms_per_image_median"]:
        print(f"| {k} | {py[k]:.6g} | {rs[k]:.6g} |")
    print(f"| ms_per_image_batch_all_cores | - | {rs['ms_per_image_batch_all_cores']:.4g} ({rs['threads']} threads) |")
    if "ms_per_image_batch" in rs:  # the one-thread batched run (attack_batch on --batch rows)
        print(f"| ms_per_image_batch (one thread, {rs['batch']} rows per attack_batch) | - | {rs['ms_per_image_batch']:.4g} |")
        print(f"| model_calls_per_image (one at a time / batched) | - | {rs['model_calls_per_image']:.4g} / {rs['model_calls_per_image_batch']:.4g} |")
    print(f"\nspeed-up (median ms per image, one thread each): {py['ms_per_image_median'] / rs['ms_per_image_median']:.1f}x")
    print(f"speed-up (mean ms per image, one thread each): {py['ms_per_image_mean'] / rs['ms_per_image_mean']:.1f}x")
    if "ms_per_image_batch" in rs:
        print(f"speed-up (mean ms per image, one thread each, blindspot batched): {py['ms_per_image_mean'] / rs['ms_per_image_batch']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
