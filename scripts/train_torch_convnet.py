#!/usr/bin/env python3
"""Train a PyTorch convnet on MNIST for one epoch and export it to ONNX for blindspot.

    python3 scripts/train_torch_convnet.py OUT.onnx [--mnist DIR] [--reference 1000]

The model is the zoo's CONV16-32-FC128-10 in PyTorch terms, plus what user models have and
the crate's own do not: input normalisation inside `forward` ((x - 0.1307) / 0.3081) and
BatchNorm after each convolution. Architecture: Normalise, Conv(1,16,5,p2), BatchNorm, ReLU,
MaxPool(2), Conv(16,32,5,p2), BatchNorm, ReLU, MaxPool(2), Flatten, Linear(1568,128), ReLU,
Linear(128,10). Adam (lr 1e-3), batch 64, one epoch, seed 0. The reference batch written
into the file is the first N MNIST test images (pixels in [0, 1]) with PyTorch's logits,
so `cargo run --release --example import_onnx -- --onnx OUT.onnx` checks agreement on them.
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_onnx import export_onnx  # noqa: E402


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Normalise(nn.Module):
    def forward(self, x):
        return (x - 0.1307) / 0.3081


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mnist", default=os.environ.get("BLINDSPOT_MNIST", "data/mnist"))
    ap.add_argument("--reference", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    load = lambda n: idx(os.path.join(args.mnist, n))
    xtr = torch.tensor(load("train-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    ytr = torch.tensor(load("train-labels-idx1-ubyte.gz"), dtype=torch.long)
    xte = torch.tensor(load("t10k-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    yte = torch.tensor(load("t10k-labels-idx1-ubyte.gz"), dtype=torch.long)
    model = nn.Sequential(
        Normalise(),
        nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.time()
    model.train()
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 64):
        b = perm[i : i + 64]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xtr[b]), ytr[b])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xte[i : i + 1000]).argmax(1) for i in range(0, len(xte), 1000)])
    err = (pred != yte).float().mean().item()
    print(f"trained 1 epoch in {time.time() - start:.0f} s; PyTorch test error {100 * err:.2f}%")
    export_onnx(model, xte[: args.reference], args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes) with {args.reference} reference images")


if __name__ == "__main__":
    main()
