"""Paddle ops whose float64 numerics differ from torch's, made exact.

Measured on paddle 3.3.1 (CPU): ``F.interpolate(mode='bilinear', align_corners=True)`` computes
source coordinates in float32 even for float64 tensors, (in-1)/(out-1) is then off by ~1e-8
relative and an x2 upsample differs from torch's float64 result by ~3e-6. That hides real
porting bugs (a BN epsilon bug is ~1e-5) from the float64 proof. In float32 this module calls
the native kernel unchanged (what users run and export); in float64 it interpolates explicitly
with float64 coordinates, following torch's formula: src = dst * (in-1)/(out-1).
The same holds for ``align_corners=False`` (``align_mode=0``) whenever in/out is not exact in
float32: resizing 7 -> 13 differs from torch by 1.9e-6, 16 -> 62 by 3.9e-6 (power-of-two ratios
are exact). In float64 that case follows torch's half-pixel formula: src = max(0, (dst + 0.5) *
scale - 0.5) with scale = in/out for a given ``size`` and 1/scale_factor otherwise.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def _axis_weights(size_in, size_out, align_corners, scale_factor=None):
    pos = np.arange(size_out, dtype=np.float64)
    if align_corners:
        pos = pos * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    else:
        scale = 1.0 / scale_factor if scale_factor else size_in / size_out
        pos = np.maximum((pos + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(pos).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    return paddle.to_tensor(lo), paddle.to_tensor(hi), pos - lo


def _lerp_axis(x, axis, size_out, align_corners, scale_factor=None):
    lo, hi, frac = _axis_weights(x.shape[axis], size_out, align_corners, scale_factor)
    shape = [1] * x.ndim
    shape[axis] = size_out
    frac = paddle.to_tensor(frac.reshape(shape), dtype=x.dtype)
    return paddle.index_select(x, lo, axis=axis) * (1 - frac) + paddle.index_select(x, hi, axis=axis) * frac


def interpolate(x, scale_factor=None, mode="nearest", align_corners=False, size=None):
    """``F.interpolate`` (NCHW, ``align_mode=0``) with float64-exact bilinear coordinates; give
    ``size`` ([H, W]) or ``scale_factor``, as in torch."""
    if mode == "bilinear" and x.dtype == paddle.float64:
        if size is None:
            height, width = (int(np.floor(s * scale_factor)) for s in x.shape[2:])
        else:
            height, width = size
        step = None if size is not None or align_corners else scale_factor
        return _lerp_axis(_lerp_axis(x, 2, height, align_corners, step), 3, width, align_corners, step)
    return F.interpolate(x, size=size, scale_factor=None if size is not None else scale_factor, mode=mode,
                         align_corners=align_corners, align_mode=0)


class Upsample(nn.Layer):
    """``nn.Upsample`` through ``interpolate`` above."""

    def __init__(self, scale_factor, mode, align_corners):
        super().__init__()
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x):
        return interpolate(x, self.scale_factor, self.mode, self.align_corners)


class BatchNorm2D(nn.BatchNorm2D):
    """``nn.BatchNorm2D`` whose running statistics follow torch's update exactly.

    Measured on paddle 3.3.1 (CPU), train mode: the running variance is updated with the BIASED
    batch variance (torch: unbiased, a factor n/(n-1)), and the update runs with a float32
    momentum even for float64 tensors (running mean off by ~1e-8 in float64). Normalisation
    itself (batch statistics in training, running ones in eval) is paddle's own kernel; only the
    running-statistics update is recomputed here, as torch does it:
    ``running = (1 - m) * running + m * batch`` with m = 1 - paddle momentum (torch's 0.1).
    """

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        running_mean, running_var = self._mean.clone(), self._variance.clone()
        out = super().forward(x)
        with paddle.no_grad():
            axes = [0] + list(range(2, x.ndim))
            count = math.prod(x.shape) // x.shape[1]
            mean = x.mean(axis=axes, keepdim=True)
            var = ((x - mean) ** 2).sum(axis=axes) / (count - 1)  # paddle.var promotes to float32
            m = 1.0 - self._momentum
            self._mean.set_value((1 - m) * running_mean + m * mean.reshape([-1]))
            self._variance.set_value((1 - m) * running_var + m * var)
        return out


def clip_grad_norm_(params, max_norm):
    """torch.nn.utils.clip_grad_norm_ in paddle: scale every gradient by
    min(1, max_norm / (global L2 norm + 1e-6)). paddle.nn.ClipGradByGlobalNorm divides by
    max(norm, max_norm) instead (no 1e-6), which differs by ~1e-8 relative in float64.
    Returns the global norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    with paddle.no_grad():
        total = paddle.linalg.norm(paddle.stack([paddle.linalg.norm(g.flatten()) for g in grads]))
        coef = paddle.clip(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.multiply_(coef)
    return total
