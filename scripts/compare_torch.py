#!/usr/bin/env python3
"""Seconds per epoch of FC100-100-10 (784-100-100-10, sigmoid, softmax cross-entropy, SGD with
momentum, weight decay) on the full 60,000 MNIST training images at batch 128: PyTorch on CPU
against blindspot, in one run, with the same number of threads (issue 2).

    python3 scripts/compare_torch.py --epochs 5 --threads 2
    python3 scripts/compare_torch.py --arch conv --batch 64 --epochs 3 --threads 2

`--arch conv` compares the zoo's convnet CONV16-32-FC128-10 instead (two 5x5 convolutions with
padding 2, ReLU and 2x2 max-pooling, 16 and 32 channels, dense ReLU 128, softmax 10).

Needs torch and numpy (not used by CI). Reports the median epoch time of each side.
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_mnist_train():
    d = os.environ.get("BLINDSPOT_MNIST", os.path.join(ROOT, "data", "mnist"))
    with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


ARCH = {
    "fc": ("FC100-100-10", 0.5),
    "conv": ("CONV16-32-FC128-10", 0.05),
}


def torch_model(arch):
    nn = torch.nn
    if arch == "fc":
        return nn.Sequential(
            nn.Linear(784, 100), nn.Sigmoid(),
            nn.Linear(100, 100), nn.Sigmoid(),
            nn.Linear(100, 10))
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def torch_epochs(arch, epochs, batch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x, y = load_mnist_train()
    model = torch_model(arch)
    opt = torch.optim.SGD(model.parameters(), lr=ARCH[arch][1], momentum=0.9, weight_decay=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        t0 = time.perf_counter()
        for i in range(0, x.shape[0], batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def ours(arch, epochs, batch, threads):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        subprocess.run(
            ["cargo", "run", "--release", "--quiet", "--example", "train", "--",
             "--model", ARCH[arch][0], "--epochs", str(epochs), "--batch", str(batch),
             "--lr", str(ARCH[arch][1]), "--seed", "1", "--json", out],
            cwd=ROOT, check=True, env=env, capture_output=True)
        with open(out) as f:
            return json.load(f)["epoch_seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", choices=sorted(ARCH), default="fc")
    a = ap.parse_args()
    t = torch_epochs(a.arch, a.epochs, a.batch, a.threads)
    r = ours(a.arch, a.epochs, a.batch, a.threads)
    mt, mr = statistics.median(t), statistics.median(r)
    print(f"| {ARCH[a.arch][0]}, 60k images, batch {a.batch}, {a.threads} threads | median s/epoch | all epochs |")
    print("|---|---|---|")
    print(f"| PyTorch {torch.__version__} (CPU) | {mt:.3f} | {' '.join(f'{v:.3f}' for v in t)} |")
    print(f"| blindspot | {mr:.3f} | {' '.join(f'{v:.3f}' for v in r)} |")
    print(f"\nratio PyTorch / blindspot: {mt / mr:.2f} (>1 means blindspot is faster)")


if __name__ == "__main__":
    sys.exit(main())
