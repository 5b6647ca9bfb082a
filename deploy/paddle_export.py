"""Paddle side of the export: export-ready layers, the two static formats, paddle2onnx.

Export-ready layers. Two things in the dynamic models cannot become one static graph that is
valid for every input size (the export input spec is ``[None, C, None, None]``):

* adaptive average pooling to 2, 3, 6 bins (the PPM of upernet_r50 and vit_s16_upernet):
  Paddle Inference runs it, but ONNX has no adaptive pooling, and paddle2onnx aborts the whole
  process with ``[OP: pd_op.pool2d] Adaptive only support static input shape``;
* vit_s16_upernet's ``PosEmbedResize`` returns the table unchanged when the patch grid equals the
  trained one: a Python branch on the input size.

``export_ready(model, onnx)`` swaps those layers (in place, by type) for numerically equivalent ones
written with size-generic ops; everything else is the model as trained. The exported artifacts
are compared with the original dynamic model, so the swap is checked on every export.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn

from paddle_impl.models.vit_upernet import PosEmbedResize
from paddle_impl.ops import AdaptiveAvgPool2D, interpolate

ONNX_OPSET = 17


def _bin_weights(size, bins: int, dtype):
    """[bins, size] averaging weights of torch's adaptive bins floor(i*size/bins) ..
    ceil((i+1)*size/bins), built from the runtime ``size`` (a 0-D int64 tensor)."""
    i = paddle.arange(bins, dtype="int64").unsqueeze(1)
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    j = paddle.arange(size, dtype="int64").unsqueeze(0)
    inside = (j >= start).astype(dtype) * (j < end).astype(dtype)
    return inside / (end - start).astype(dtype)


class SizeGenericAdaptiveAvgPool2D(nn.Layer):
    """Adaptive average pooling (torch's possibly overlapping bins) as two matmuls with bin
    weights computed from the input's runtime size: exact averaging, expressible in ONNX."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x):
        shape = paddle.shape(x)
        rows = _bin_weights(shape[2], self.output_size[0], x.dtype)
        cols = _bin_weights(shape[3], self.output_size[1], x.dtype)
        return paddle.matmul(paddle.matmul(rows, x), cols, transpose_y=True)


class AlwaysResample(PosEmbedResize):
    """``PosEmbedResize`` without the "same grid: return the table" shortcut, so one graph serves
    every input size. Resampling to the trained grid is the identity: bicubic with
    align_corners=False at scale 1 puts the weights (0, 1, 0, 0) on the taps."""

    def forward(self, pos_embed, grid):
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        dim = pos_embed.shape[2]
        patch_pos = patch_pos.reshape([1, self.grid[0], self.grid[1], dim]).transpose([0, 3, 1, 2])
        patch_pos = interpolate(patch_pos, mode=self.mode, align_corners=self.align_corners, size=grid)
        patch_pos = patch_pos.flatten(2).transpose([0, 2, 1])
        return paddle.concat([cls_pos, patch_pos], axis=1)


def _swap(layer, onnx: bool) -> nn.Layer | None:
    if onnx and isinstance(layer, AdaptiveAvgPool2D) and layer._output_size not in (1, [1, 1], (1, 1)):
        return SizeGenericAdaptiveAvgPool2D(layer._output_size)
    if isinstance(layer, PosEmbedResize) and not isinstance(layer, AlwaysResample):
        return AlwaysResample(layer.grid, layer.mode, layer.align_corners)
    return None


def export_ready(model, onnx: bool) -> list[str]:
    """Swap, in place, what no static graph can hold (``PosEmbedResize``) and, with ``onnx``, also
    what ONNX cannot express (adaptive pooling to several bins). Returns what changed.

    Paddle Inference keeps its native adaptive pooling: the size-generic matmul form is exact in
    plain kernels but measured wrong with oneDNN's IR passes on a legacy program (upernet_r50
    tiny: 1.6e-2, correct with ``switch_ir_optim(False)``), a fusion bug this avoids."""
    changed = []
    for name, parent in list(model.named_sublayers(include_self=True)):
        for child_name, child in list(parent.named_children()):
            new = _swap(child, onnx)
            if new is not None:
                setattr(parent, child_name, new)
                changed.append(f"{name + '.' if name else ''}{child_name}: {type(child).__name__} -> {type(new).__name__}")
    model.eval()
    return changed


def input_spec(spec):
    return [paddle.static.InputSpec(shape=spec.export_input_spec(), dtype="float32", name="x")]


def save_pir(model, spec, prefix: Path) -> list[str]:
    """Paddle 3's default format: ``prefix.json`` + ``prefix.pdiparams``."""
    static = paddle.jit.to_static(model, input_spec=input_spec(spec), full_graph=True)
    paddle.jit.save(static, str(prefix), input_spec=input_spec(spec))
    return [prefix.name + ".json", prefix.name + ".pdiparams"]


def save_legacy(model, spec, prefix: Path) -> list[str]:
    """The legacy format: ``prefix.pdmodel`` + ``prefix.pdiparams`` (+ ``.pdiparams.info``)."""
    from deploy.legacy import legacy_ops

    with paddle.pir_utils.OldIrGuard(), legacy_ops():
        static = paddle.jit.to_static(model, input_spec=input_spec(spec), full_graph=True)
        paddle.jit.save(static, str(prefix), input_spec=input_spec(spec))
    return [prefix.name + suffix for suffix in (".pdmodel", ".pdiparams", ".pdiparams.info")
            if Path(str(prefix) + suffix).is_file()]


def retype_double_scales(src: Path, dst: Path) -> int:
    """Copy a PIR ``.json`` with the double-typed attributes paddle2onnx misreads retyped to float:
    the interpolate ``scale`` values and the ``pad_value`` of ``pad3d``.

    paddle2onnx 2.1.0 rejects the double-typed ``scale`` Paddle 3.3.1 writes (``the 0th
    elementwise MUST be ir::FloatAttribute``), and it reads a double-typed ``pad3d`` ``pad_value``
    as a float without complaint, writing garbage as the ONNX Pad constant (measured: 6.7e-43,
    -1.2e-26 instead of 0.0; swin_t_upernet's window padding). The values are exact in float32
    (scales 2.0, 4.0, ...; pad value 0.0), which is checked. Paddle itself rejects the copy, which
    is only paddle2onnx's input and is deleted afterwards. Returns the number of values retyped."""
    program = json.loads(src.read_text())
    count = 0

    def retype(value, what):
        nonlocal count
        if value.get("#") == "0.a_f64":
            if float(np.float32(value["D"])) != float(value["D"]):
                raise ValueError(f"{what} {value['D']} is not exact in float32")
            value["#"] = "0.a_f32"
            count += 1

    def walk(node):
        if isinstance(node, dict):
            op = str(node.get("#", ""))
            for attr in node.get("A", []) if op.endswith(("interp", "pad3d")) else []:
                if op.endswith("interp") and attr.get("N") == "scale":
                    for value in attr["AT"]["D"]:
                        retype(value, "interpolate scale")
                elif op.endswith("pad3d") and attr.get("N") == "pad_value":
                    retype(attr["AT"], "pad3d pad_value")
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(program)
    dst.write_text(json.dumps(program))
    return count


def paddle2onnx(model_json: Path, params: Path, out: Path, opset: int = ONNX_OPSET) -> None:
    """Run paddle2onnx in a child process (it aborts the process on unsupported ops) with
    ``optimize_tool='None'``: its default, polygraphy, pip-installs packages at run time."""
    code = ("import sys, paddle2onnx\n"
            "paddle2onnx.export(sys.argv[1], sys.argv[2], sys.argv[3], opset_version=int(sys.argv[4]),\n"
            "                   enable_onnx_checker=True, optimize_tool='None')\n")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", code, str(model_json), str(params), str(out), str(opset)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not out.is_file():
        lines = [line for line in (proc.stderr + proc.stdout).splitlines()
                 if "ERROR" in line or "Error" in line or "error" in line]
        raise RuntimeError("paddle2onnx failed: " + (lines[0].strip() if lines else f"exit {proc.returncode}"))
