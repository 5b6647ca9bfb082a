"""Static int8 quantization of an exported ONNX model (ONNX Runtime's quantization tool).

``quantize_int8(fp32_onnx, int8_onnx, windows)`` writes a QDQ model: every convolution and
matmul gets per-output-channel symmetric int8 weights and uint8 activations whose ranges are
calibrated by running the fp32 model on ``windows`` (normalized ``[C, h, w]`` float32 arrays,
e.g. the training split cut into the deploy window grid); everything else (resampling, the
softmax tail) stays fp32 between DequantizeLinear and QuantizeLinear nodes. uint8 activations
with int8 weights is the pair the x86 VNNI and AMX instructions multiply (``reduce_range`` off:
that is only for CPUs without VNNI, where ``vpmaddubsw`` can saturate).

The same file serves ONNX Runtime (it fuses the QDQ pairs into QLinearConv / MatMulInteger) and
OpenVINO (it turns them into FakeQuantize and runs low-precision convolutions). Whether the result
is good enough is not decided here: deploy/gate.py judges the class maps.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

OP_TYPES = ("Conv", "MatMul", "Gemm")
# Activation ranges: the 99.999th percentile of each tensor's histogram over the calibration set
# (measured on trained factseg50, deploy/README.md: MinMax 99.68% agreement with fp32 and mIoU
# +0.36 points, percentile 99.99 99.30%, percentile 99.999 99.73% and +0.03 points). ONNX Runtime's
# histogram collector needs inputs of one size: calibration windows are cut as fixed tiles.
METHOD = "Percentile"
PERCENTILE = 99.999
TILE = 256


def output_layers(model) -> list[str]:
    """Names of the convolutions / matmuls that produce the logits: walking back from the graph
    outputs, the first such node on every path. They stay fp32 (measured: on trained factseg50
    their int8 rounding alone moved class probabilities by up to 0.69; they are 1x1 convolutions
    to the classes, a negligible share of the FLOPs)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found, seen, stack = [], set(), [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:  # by identity: rewritten nodes may have no name
            continue
        seen.add(id(node))
        if node.op_type in OP_TYPES:
            found.append(node.name)
        else:
            stack.extend(node.input)
    return sorted(found)


def quantize_int8(src: Path, dst: Path, windows: Iterable[np.ndarray], *, divisor: int = 32,
                  op_types=OP_TYPES, method: str = METHOD, exclude=(),
                  percentile: float = PERCENTILE) -> dict:
    """Write the QDQ int8 model of ``src`` to ``dst``; returns what was done (for the report).

    Args:
        src: fp32 ONNX model (input ``x`` [N, C, H, W]).
        dst: the int8 ONNX model to write.
        windows: calibration inputs, normalized ``[C, h, w]`` float32, padded here to ``divisor``.
        op_types: ONNX op types to quantize.
        method: ``MinMax`` or ``Percentile`` (ONNX Runtime's calibration methods).
        exclude: name prefixes of ONNX nodes kept in fp32.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from rsport.sliding import pad_to_multiple

    batches = [pad_to_multiple(np.asarray(w, np.float32)[None], divisor)[0] for w in windows]
    if not batches:
        raise ValueError("int8 calibration needs at least one window")
    if method == "Percentile":  # one size for the histogram collector: zero-pad bottom/right, as inference does
        h, w = max(b.shape[2] for b in batches), max(b.shape[3] for b in batches)
        batches = [np.pad(b, ((0, 0), (0, 0), (0, h - b.shape[2]), (0, w - b.shape[3]))) for b in batches]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(batches)

        def get_next(self):
            x = next(self._items, None)
            return None if x is None else {"x": x}

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rsport-int8-", dir=Path(dst).parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and ONNX-level fusions (Conv+BN already folded by the exporters);
        # the symbolic pass is skipped: it cannot type the dynamic-size adaptive pooling matmuls
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "CalibTensorRangeSymmetric": False}
        if method == "Percentile":
            extra["CalibPercentile"] = percentile
        import onnx

        model = onnx.load(str(prepared))
        kept = sorted(set(output_layers(model)) | {n.name for n in model.graph.node
                                                  if any(n.name.startswith(p) for p in exclude)})
        del model
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        nodes_to_exclude=kept,
                        reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(op_types), calibrate_method=getattr(CalibrationMethod, method),
                        extra_options=extra)
    seconds = time.perf_counter() - start
    log.info("int8: %d calibration windows, %s, %.0f s", len(batches), method, seconds)
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8 per channel",
            "activations": "uint8 per tensor", "calibration": method, "calibration_windows": len(batches),
            "calibration_shapes": sorted({tuple(b.shape[2:]) for b in batches}), "op_types": list(op_types),
            "kept_fp32": kept,
            "seconds": round(seconds, 1)}
