#!/usr/bin/env python3
"""Export a PyTorch model for blindspot as a plain .npz: weights, layer list and a reference batch.

`export_npz(model, inputs, path)` takes any nn.Sequential (or a module whose children() are its
layers, in order) of Linear, Conv2d, MaxPool2d, BatchNorm1d/2d, ReLU, Sigmoid, Tanh, Flatten,
Dropout, Identity and input normalisation (a module with `mean` and `std` tensors computing
(x - mean) / std), and writes its state_dict under the usual names, the layer list as the u8
text array `blindspot_layers`, and `reference_inputs` with PyTorch's `reference_logits` on them.
`blindspot::import::torch::load(path)` rebuilds the network from the file alone and checks it
against the reference batch; a layer of another kind is a typed error naming it.

Run as a script, it trains the fixed MLP below (issue 14's model) and exports it that way:

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


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def layer_line(name, m):
    """One line of the layer list for child module `m` called `name`."""
    nn = torch.nn
    if isinstance(m, nn.Linear):
        return f"{name} Linear"
    if isinstance(m, nn.Conv2d):
        k, s, p, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)
        if k[0] != k[1] or s[0] != s[1] or p[0] != p[1] or d[0] != d[1] or isinstance(m.padding, str):
            return f"{name} Conv2d(non-square:kernel={k},stride={s},padding={m.padding})"
        return f"{name} Conv2d stride={s[0]} padding={p[0]} dilation={d[0]} groups={m.groups}"
    if isinstance(m, nn.MaxPool2d):
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if k[0] != k[1] or s[0] != s[1] or p[0] != p[1] or _pair(m.dilation) != (1, 1) or m.ceil_mode:
            return f"{name} MaxPool2d(non-square-or-ceil)"
        return f"{name} MaxPool2d kernel={k[0]} stride={s[0]} padding={p[0]}"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return f"{name} {type(m).__name__} eps={m.eps}"
    if isinstance(m, nn.Flatten):
        return f"{name} Flatten" if m.start_dim == 1 and m.end_dim == -1 else f"{name} Flatten(partial)"
    plain = {nn.ReLU: "ReLU", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.Dropout: "Dropout", nn.Identity: "Identity"}
    for cls, kind in plain.items():
        if type(m) is cls:
            return f"{name} {kind}"
    if torch.is_tensor(getattr(m, "mean", None)) and torch.is_tensor(getattr(m, "std", None)):
        return f"{name} Normalize"
    return f"{name} {type(m).__name__}"


def export_npz(model, inputs, path):
    """Writes `model` (evaluated on `inputs`, a reference batch of N x C x H x W or N x D) to `path`."""
    model = model.eval()
    with torch.no_grad():
        logits = model(inputs)
    lines = ["input " + ",".join(str(d) for d in inputs.shape[1:])]
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    for name, m in model.named_children():
        line = layer_line(name, m)
        lines.append(line)
        if line.endswith(" Normalize"):
            for attr in ("mean", "std"):
                arrays[f"{name}.{attr}"] = getattr(m, attr).detach().cpu().numpy().astype(np.float32)
    arrays["blindspot_layers"] = np.frombuffer(("\n".join(lines) + "\n").encode(), dtype=np.uint8)
    arrays["reference_inputs"] = inputs.detach().cpu().numpy().astype(np.float32)
    arrays["reference_logits"] = logits.detach().cpu().numpy().astype(np.float32)
    np.savez(path, **arrays)
    return logits


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
    export_npz(net, x[:100], a.out)
    print(f"wrote {a.out}; import with blindspot::import::torch::load, or naming the layers:")
    print(f"  cargo run --release --example import_torch -- --npz {a.out} "
          "--arch FC100-100-10 --layers 0,2,4 --activation sigmoid "
          f"--expect-test-error {err:.6f}")


if __name__ == "__main__":
    main()
