#!/usr/bin/env python3
"""Make the small ONNX fixtures of tests/import_onnx.rs (committed; CI needs no Python).

    python3 scripts/make_onnx_fixtures.py tests/fixtures

- mlp_norm.onnx: input normalisation ((x - mean) / std, inside forward), Flatten, Linear,
  ReLU, Linear: a 1 x 28 x 28 input.
- conv_bn.onnx: per-channel normalisation of a 3 x 12 x 12 image, Conv + BatchNorm + ReLU +
  MaxPool, a strided Conv + BatchNorm + MaxPool (before its ReLU), Flatten, Linear +
  BatchNorm1d + ReLU + Dropout, Linear; the BatchNorms have non-trivial running statistics.
- mlp_sigmoid.onnx: Linear, Sigmoid, Linear, Sigmoid, Linear on 20-value vectors (the
  activation is read from the file, never assumed).
- unsupported.onnx: Linear, GELU, Linear (GELU is not importable: a typed error).
- torch_conv_bn.npz, torch_unsupported.npz: conv_bn's model and a GELU model through the
  .npz road of scripts/export_torch.py.
- hostile_*.onnx: hand-built graphs that must be refused with a typed error: an initializer
  claiming 2^40 x 2^40 values over 4 bytes (huge_dims), a node reading its own output
  (cyclic), a node reading a value nothing produces (dangling), a residual connection
  (branching), and a ReLU MLP followed by a Sigmoid layer (mixed activations).
Random weights under a fixed seed; each file carries a reference batch (see export_onnx.py).
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_onnx import export_onnx  # noqa: E402
from export_torch import export_npz  # noqa: E402


class Normalise(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n) * 0.3)
            m.running_var.copy_(torch.rand(n) + 0.5)
            m.weight.data.copy_(torch.rand(n) + 0.5)
            m.bias.data.copy_(torch.randn(n) * 0.2)


def hostile(out):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(name, nodes, inits, dims=(None, 4), extra=()):
        g = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
            initializer=inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        with open(os.path.join(out, f"hostile_{name}.onnx"), "wb") as f:
            f.write(m.SerializeToString())

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w3")
    huge = TensorProto()
    huge.name, huge.data_type = "w", TensorProto.FLOAT
    huge.dims.extend([1 << 40, 1 << 40])
    huge.raw_data = b"\0\0\0\0"
    gemm = dict(transB=1)
    save("huge_dims", [helper.make_node("Gemm", ["x", "w"], ["y"], **gemm)], [huge])
    save("cyclic", [helper.make_node("Relu", ["h"], ["h"]), helper.make_node("Gemm", ["h", "w"], ["y"], **gemm)], [w])
    save("dangling", [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Gemm", ["g", "w"], ["y"], **gemm)], [w])
    save(
        "branching",
        [
            helper.make_node("Gemm", ["x", "w2"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Add", ["r", "x"], ["s"]),
            helper.make_node("Gemm", ["s", "w"], ["y"], **gemm),
        ],
        [w, w2],
    )
    save(
        "mixed_activations",
        [
            helper.make_node("Gemm", ["x", "w2"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "w2"], ["h2"], transB=1),
            helper.make_node("Sigmoid", ["h2"], ["s"]),
            helper.make_node("Gemm", ["s", "w"], ["y"], **gemm),
        ],
        [w, w2],
    )
    save("shapes", [helper.make_node("Gemm", ["x", "w3"], ["h"], transB=1),
                    helper.make_node("Relu", ["h"], ["r"]),
                    helper.make_node("Gemm", ["r", "w"], ["y"], **gemm)], [w, w3], dims=(None, 5))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(21)
    mlp = nn.Sequential(
        Normalise([0.1307], [0.3081]), nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)
    )
    export_onnx(mlp, torch.rand(8, 1, 28, 28), os.path.join(out, "mlp_norm.onnx"))

    conv = nn.Sequential(
        Normalise([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]),
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.MaxPool2d(1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(12, 5),
    )
    randomise_bn(conv)
    x = torch.rand(8, 3, 12, 12)
    export_onnx(conv, x, os.path.join(out, "conv_bn.onnx"), fold=False)
    # The same model through the .npz road (BatchNorm's int64 num_batches_tracked included).
    export_npz(conv, x, os.path.join(out, "torch_conv_bn.npz"))
    gelu_npz = nn.Sequential(nn.Flatten(), nn.Linear(20, 3), nn.GELU(), nn.Linear(3, 3))
    export_npz(gelu_npz, torch.rand(4, 20), os.path.join(out, "torch_unsupported.npz"))

    sig = nn.Sequential(nn.Linear(20, 12), nn.Sigmoid(), nn.Linear(12, 8), nn.Sigmoid(), nn.Linear(8, 3))
    export_onnx(sig, torch.rand(8, 20), os.path.join(out, "mlp_sigmoid.onnx"))

    gelu = nn.Sequential(nn.Linear(20, 12), nn.GELU(), nn.Linear(12, 3))
    export_onnx(gelu, torch.rand(4, 20), os.path.join(out, "unsupported.onnx"))
    hostile(out)
    for f in sorted(os.listdir(out)):
        if f.endswith(".onnx") or f.endswith(".npz"):
            print(f, os.path.getsize(os.path.join(out, f)), "bytes")


if __name__ == "__main__":
    main()
