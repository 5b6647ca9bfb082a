"""Legacy (ProgramDesc, ``model.pdmodel``) export on Paddle 3.3.1: the old op builders it lacks.

Why this exists (measured on paddle 3.3.1, CPU): Paddle Inference runs a PIR ``model.json``
with oneDNN only after the oneDNN placement pass is deleted, because every interpolate carries
an ``array<double>`` attribute the oneDNN instruction cannot convert
(``ConvertPirAttribute2RuntimeAttribute not support [pir::ArrayAttribute<pir::DoubleAttribute>]``);
the legacy ``model.pdmodel`` runs with every op on oneDNN and is the fastest CPU format (see
deploy/README.md). But in 3.3.1 a group of functions is generated as thin ``_C_ops`` wrappers
that only accept dygraph tensors and PIR values, so ``paddle.jit.save`` under
``paddle.pir_utils.OldIrGuard()`` fails with ``sigmoid(): argument (position 1) must be Value,
but got Variable`` (also ``sum``, ``matmul``, ``gelu``, ``roll``, ...).

``legacy_ops()`` is an explicit context manager, used only around the legacy export: while it is
open, those functions build the classic operator (``sigmoid``, ``reduce_sum``, ``matmul_v2``,
``gelu``, ``roll``) when they receive a legacy ``Variable``, and call the original otherwise. The
exported program is then reloaded by Paddle Inference and compared with the dynamic model
(deploy/exporter.py), which is what proves the substitution.
"""
from __future__ import annotations

import contextlib

import paddle
import paddle.nn.functional as F
from paddle.base import framework
from paddle.base.layer_helper import LayerHelper


def _is_legacy(x) -> bool:
    return isinstance(x, framework.Variable) and not isinstance(x, paddle.Tensor)


def _append(op_type: str, inputs: dict, attrs: dict, dtype):
    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(dtype)
    helper.append_op(type=op_type, inputs=inputs, outputs={"Out": out}, attrs=attrs)
    return out


def _axes(axis, ndim: int) -> tuple[list, bool]:
    if axis is None:
        return list(range(ndim)), True
    axes = [axis] if isinstance(axis, int) else list(axis)
    return axes, len(axes) == ndim


def _shims(original: dict) -> dict:
    def sigmoid(x, name=None):
        if not _is_legacy(x):
            return original["sigmoid"](x, name=name)
        return _append("sigmoid", {"X": x}, {}, x.dtype)

    def gelu(x, approximate=False, name=None):
        if not _is_legacy(x):
            return original["gelu"](x, approximate=approximate, name=name)
        return _append("gelu", {"X": x}, {"approximate": bool(approximate)}, x.dtype)

    def reduce_sum(x, axis=None, dtype=None, keepdim=False, name=None):
        if not _is_legacy(x) or dtype is not None:
            return original["sum"](x, axis=axis, dtype=dtype, keepdim=keepdim, name=name)
        axes, reduce_all = _axes(axis, len(x.shape))
        return _append("reduce_sum", {"X": x}, {"dim": axes, "keep_dim": keepdim, "reduce_all": reduce_all}, x.dtype)

    def matmul(x, y, transpose_x=False, transpose_y=False, name=None):
        if not (_is_legacy(x) or _is_legacy(y)):
            return original["matmul"](x, y, transpose_x=transpose_x, transpose_y=transpose_y, name=name)
        return _append("matmul_v2", {"X": x, "Y": y}, {"trans_x": transpose_x, "trans_y": transpose_y}, x.dtype)

    def roll(x, shifts, axis=None, name=None):
        if not _is_legacy(x) or axis is None or _is_legacy(shifts):
            return original["roll"](x, shifts, axis=axis, name=name)
        shifts = [shifts] if isinstance(shifts, int) else list(shifts)
        axis = [axis] if isinstance(axis, int) else list(axis)
        return _append("roll", {"X": x}, {"shifts": shifts, "axis": axis}, x.dtype)

    return {"sigmoid": sigmoid, "gelu": gelu, "sum": reduce_sum, "matmul": matmul, "roll": roll}


# (namespace, attribute, shim key): every place the models reach these functions through.
_TARGETS = (
    (F, "sigmoid", "sigmoid"), (paddle, "sigmoid", "sigmoid"), (paddle.Tensor, "sigmoid", "sigmoid"),
    (F, "gelu", "gelu"),
    (paddle, "sum", "sum"), (paddle.Tensor, "sum", "sum"), (framework.Variable, "sum", "sum"),
    (paddle, "matmul", "matmul"), (paddle.Tensor, "matmul", "matmul"), (framework.Variable, "matmul", "matmul"),
    (paddle, "roll", "roll"),  # swin_t_upernet's shifted windows
)


@contextlib.contextmanager
def legacy_ops():
    """Open: the functions above also build legacy ops; closed: everything is restored."""
    saved = [(owner, attr, owner.__dict__.get(attr, getattr(owner, attr, None))) for owner, attr, _ in _TARGETS]
    original = {"sigmoid": F.sigmoid, "gelu": F.gelu, "sum": paddle.sum, "matmul": paddle.matmul, "roll": paddle.roll}
    shims = _shims(original)
    try:
        for owner, attr, key in _TARGETS:
            setattr(owner, attr, shims[key])
        yield
    finally:
        for owner, attr, value in saved:
            setattr(owner, attr, value)
