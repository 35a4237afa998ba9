"""FLOPs and stored weights of a network, counted on its ONNX graph (and on torch models).

Ours for ONNX: no maintained library counts FLOPs of an ONNX graph without pulling in
another framework, and counting on the graph is what lets ``meddx bench`` measure a
bundle (fp32 or int8) with no torch. Convention (the same as
``torch.utils.flop_counter.FlopCounterMode``, which ``torch_flops`` uses and the tests
compare against): a multiply-accumulate of a convolution or matrix product is 2 FLOPs;
bias additions, normalisation, activations and pooling are not counted (they are a few
per cent of a CNN's work). QDQ int8 graphs keep their Conv/Gemm nodes, so they count the
same as their fp32 source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _shapes(model) -> dict[str, list[int]]:
    import onnx
    from onnx import shape_inference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:  # symbolic batch -> 1, so shapes are concrete per image
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param") or d.dim_value == 0:
                d.Clear()
                d.dim_value = 1
    m = shape_inference.infer_shapes(m, data_prop=True)  # data_prop: Reshape targets built from Shape ops
    out: dict[str, list[int]] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = [int(d.dim_value) for d in dims]
    for init in m.graph.initializer:
        out[init.name] = [int(d) for d in init.dims]
    return out


def onnx_flops(model_or_path) -> dict:
    """FLOPs per image (batch 1) and stored weights of an ONNX model.

    Returns:
        ``{"flops": int, "by_op": {op: flops}, "params": int}``; ``params`` counts the
        elements of weight and bias initializers (int8 ones included; quantisation scales,
        zero points and int64 shape constants excluded).
    """
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    shapes = _shapes(model)
    by_op: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in COUNTED:
            continue
        try:
            a = shapes.get(node.input[0])
            b = shapes[node.input[1]]
            y = shapes[node.output[0]]
        except KeyError:
            raise ValueError(f"cannot infer the shapes around {node.op_type} node {node.name!r}") from None
        attrs = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
        if node.op_type == "Conv":  # W (Cout, Cin/g, *k), Y (N, Cout, *out)
            macs = int(np.prod(y)) * int(np.prod(b[1:]))
        elif node.op_type == "ConvTranspose":  # W (Cin, Cout/g, *k): every input voxel scatters a kernel
            if a is None:
                raise ValueError(f"cannot infer the input shape of ConvTranspose node {node.name!r}")
            macs = int(np.prod(a)) * int(np.prod(b[1:]))
        elif node.op_type == "Gemm":  # B (K, N), or (N, K) with transB
            k = b[1] if attrs.get("transB", 0) else b[0]
            macs = int(np.prod(y)) * int(k)
        else:  # MatMul with numpy broadcasting: every output element is a length-K dot product
            if a is None:
                raise ValueError(f"cannot infer the input shape of MatMul node {node.name!r}")
            macs = int(np.prod(y)) * int(a[-1])
        by_op[node.op_type] = by_op.get(node.op_type, 0) + 2 * macs
    scale_inputs = {n.input[i] for n in model.graph.node if n.op_type in _QDQ for i in (1, 2) if i < len(n.input)}
    params = 0
    for init in model.graph.initializer:
        if init.name in scale_inputs or init.data_type == onnx.TensorProto.INT64 or len(init.dims) == 0:
            continue
        params += int(np.prod(init.dims))
    return {"flops": int(sum(by_op.values())), "by_op": by_op, "params": params}


def torch_flops(model, example) -> int:
    """FLOPs of one forward pass of ``model`` on ``example`` (PyTorch's own counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(example)
    return int(fc.get_total_flops())
