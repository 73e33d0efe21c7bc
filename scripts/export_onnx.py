#!/usr/bin/env python3
"""Export a PyTorch classifier to ONNX with a reference batch for blindspot's importer.

    from export_onnx import export_onnx
    export_onnx(model, reference_inputs, "model.onnx")

writes `model.onnx` (batch size left dynamic) and adds two initializers the graph does not
use, `reference_inputs` (the batch, NCHW or N x D) and `reference_logits` (what PyTorch
computes on it), so `blindspot::import::onnx::load` can check that the imported network
computes the same function. Run as a script to export a saved whole-model `.pt`:

    python3 scripts/export_onnx.py model.pt model.onnx --shape 1,28,28
"""
import argparse
import io

import numpy as np
import onnx
import torch
from onnx import numpy_helper


def export_onnx(model, inputs, path, opset=17, fold=True):
    """`fold=False` keeps BatchNorm nodes (the exporter otherwise folds them into convolutions)."""
    model = model.eval()
    with torch.no_grad():
        logits = model(inputs)
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (inputs,),
        buf,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=opset,
        do_constant_folding=fold,
        dynamo=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    for name, value in (("reference_inputs", inputs), ("reference_logits", logits)):
        proto.graph.initializer.append(
            numpy_helper.from_array(value.detach().numpy().astype(np.float32), name)
        )
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return logits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a whole model saved with torch.save(model, path)")
    ap.add_argument("out")
    ap.add_argument("--shape", default="1,28,28", help="one input's shape (C,H,W or D)")
    ap.add_argument("--batch", type=int, default=16, help="reference batch size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model = torch.load(args.model, weights_only=False)
    shape = [int(v) for v in args.shape.split(",")]
    export_onnx(model, torch.rand(args.batch, *shape), args.out)


if __name__ == "__main__":
    main()
