#!/usr/bin/env python3
"""Export a PyTorch MLP's weights for blindspot (issue 14): a plain .npz of the state_dict.

Trains FC100-100-10 (784-100-100-10, sigmoid, as nn.Sequential) on MNIST pixels in [0, 1] -- the
scaling blindspot's MNIST loader uses, with no mean/std normalisation -- or loads the state_dict
of such a model from --checkpoint, then writes every tensor with numpy.savez under its state_dict
name ("0.weight", "0.bias", "2.weight", ...; nn.Linear weights are out x in). Import it with

    python3 scripts/export_torch.py --out out/torch_fc100.npz --epochs 3
    cargo run --release --example import_torch -- --npz out/torch_fc100.npz \
        --arch FC100-100-10 --layers 0,2,4 --activation sigmoid

A model of your own exports the same way: whatever its module names, `np.savez(path,
**{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})`, then name the arrays of
each dense layer on the Rust side (blindspot::import::Dense). Use np.savez, not
np.savez_compressed (the importer reads uncompressed archives). A model trained on normalised
inputs needs the normalisation folded into its first layer (W' = W / std, b' = b - W' @ mean)
before export, since blindspot feeds raw [0, 1] pixels.

Needs torch and numpy (not used by CI).
"""
import argparse
import gzip
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_mnist(kind):
    d = os.environ.get("BLINDSPOT_MNIST", os.path.join(ROOT, "data", "mnist"))
    with gzip.open(os.path.join(d, f"{kind}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(d, f"{kind}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def model():
    return torch.nn.Sequential(
        torch.nn.Linear(784, 100), torch.nn.Sigmoid(),
        torch.nn.Linear(100, 100), torch.nn.Sigmoid(),
        torch.nn.Linear(100, 10))


def train(net, epochs, batch, seed):
    torch.manual_seed(seed)
    x, y = load_mnist("train")
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0])
        total = 0.0
        for i in range(0, x.shape[0], batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: mean training loss {total / x.shape[0]:.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "out", "torch_fc100.npz"))
    p.add_argument("--checkpoint", help="a saved state_dict (torch.save) to export instead of training")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    net = model()
    if a.checkpoint:
        net.load_state_dict(torch.load(a.checkpoint, map_location="cpu"))
    else:
        train(net, a.epochs, a.batch, a.seed)
    net.eval()
    x, y = load_mnist("t10k")
    with torch.no_grad():
        err = (net(x).argmax(1) != y).float().mean().item()
    print(f"test error (PyTorch): {100 * err:.2f}%")

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    np.savez(a.out, **arrays)
    for k, v in arrays.items():
        print(f"  {k}: {v.shape}")
    print(f"wrote {a.out}; import with:")
    print(f"  cargo run --release --example import_torch -- --npz {a.out} "
          "--arch FC100-100-10 --layers 0,2,4 --activation sigmoid "
          f"--expect-test-error {err:.6f}")


if __name__ == "__main__":
    main()
