"""Paddle ops whose float64 numerics differ from torch's, made exact.

Measured on paddle 3.3.1 (CPU): ``F.interpolate(mode='bilinear', align_corners=True)`` computes
source coordinates in float32 even for float64 tensors, (in-1)/(out-1) is then off by ~1e-8
relative and an x2 upsample differs from torch's float64 result by ~3e-6. That hides real
porting bugs (a BN epsilon bug is ~1e-5) from the float64 proof. In float32 this module calls
the native kernel unchanged (what users run and export); in float64 it interpolates explicitly
with float64 coordinates, following torch's formula: src = dst * (in-1)/(out-1).

The same holds for ``align_corners=False`` (half-pixel centres, paddle ``align_mode=0``) bilinear
and bicubic whenever in/out is not a dyadic fraction: paddle computes the ratio in float32 on
float64 tensors (paddle 3.3.1, float64: bilinear 5 -> 27 off by 1.1e-6, 3 -> 5 by 2.4e-7; bicubic
16 -> 14 by 3.5e-6). In float64 ``interpolate`` follows torch: bilinear src = max(0, (dst + 0.5) *
scale - 0.5) with scale = in/out (``size``) or 1/scale_factor; bicubic through float64 weight
matrices with torch's non-antialiased coefficient A = -0.75 and border-clamped taps.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def _axis_weights(size_in, size_out, align_corners, scale_factor=None):
    dst = np.arange(size_out, dtype=np.float64)
    if align_corners:
        pos = dst * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    else:
        scale = 1.0 / scale_factor if scale_factor else size_in / size_out
        pos = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(pos).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    return paddle.to_tensor(lo), paddle.to_tensor(hi), pos - lo


def _lerp_axis(x, axis, size_out, align_corners, scale_factor=None):
    lo, hi, frac = _axis_weights(x.shape[axis], size_out, align_corners, scale_factor)
    shape = [1] * x.ndim
    shape[axis] = size_out
    frac = paddle.to_tensor(frac.reshape(shape), dtype=x.dtype)
    return paddle.index_select(x, lo, axis=axis) * (1 - frac) + paddle.index_select(x, hi, axis=axis) * frac


CUBIC_A = -0.75  # torch's upsample_bicubic2d without antialias


def _cubic_weights(t):
    """Weights of the taps at floor(src) - 1 .. floor(src) + 2 for fractional offsets ``t``."""
    a = CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _bicubic_matrix(size_in, size_out, scale):
    """[size_out, size_in] float64 weights of torch's align_corners=False bicubic."""
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5
    rows = np.arange(size_out)
    mat = np.zeros((size_out, size_in))
    lo = np.floor(src).astype(np.int64)
    for k, weight in enumerate(_cubic_weights(src - lo)):
        np.add.at(mat, (rows, np.clip(lo - 1 + k, 0, size_in - 1)), weight)
    return mat


def _bicubic(x, size, scale_factor):
    """NCHW bicubic resampling through two float64 weight matrices (H, then W)."""
    (height, width), (size_h, size_w) = x.shape[2:], size
    scale_h, scale_w = ((1.0 / scale_factor,) * 2 if scale_factor is not None
                        else (height / size_h, width / size_w))
    rows = paddle.to_tensor(_bicubic_matrix(height, size_h, scale_h), dtype=x.dtype)
    cols = paddle.to_tensor(_bicubic_matrix(width, size_w, scale_w).T, dtype=x.dtype)
    return paddle.matmul(paddle.matmul(rows, x), cols)


def interpolate(x, scale_factor=None, mode="nearest", align_corners=False, size=None):
    """``F.interpolate`` (NCHW, ``size`` or ``scale_factor``), float64-exact for bilinear (both
    ``align_corners``) and bicubic (align_corners=False); float32 and the other modes call the
    native kernel with torch's half-pixel convention (``align_mode=0``)."""
    if x.dtype == paddle.float64 and (mode == "bilinear" or (mode == "bicubic" and not align_corners)):
        out_size = list(size) if size is not None else [int(np.floor(s * scale_factor)) for s in x.shape[2:]]
        step = None if size is not None else scale_factor
        if mode == "bicubic":
            return _bicubic(x, out_size, step)
        return _lerp_axis(_lerp_axis(x, 2, out_size[0], align_corners, step), 3, out_size[1], align_corners, step)
    if size is not None:
        return F.interpolate(x, size=list(size), mode=mode, align_corners=align_corners, align_mode=0)
    return F.interpolate(x, scale_factor=scale_factor, mode=mode, align_corners=align_corners, align_mode=0)


class Upsample(nn.Layer):
    """``nn.Upsample`` through ``interpolate`` above."""

    def __init__(self, scale_factor, mode, align_corners):
        super().__init__()
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x):
        return interpolate(x, self.scale_factor, self.mode, self.align_corners)


def _pool_matrix(size_in, size_out, dtype):
    """[size_out, size_in] averaging weights of torch's adaptive bins
    floor(i * in / out) .. ceil((i + 1) * in / out), which may overlap."""
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-(i + 1) * size_in // size_out)
        weights[i, start:end] = 1.0 / (end - start)
    return paddle.to_tensor(weights, dtype=dtype)


class AdaptiveAvgPool2D(nn.AdaptiveAvgPool2D):
    """``nn.AdaptiveAvgPool2D`` whose float64 BACKWARD is exact.

    Measured on paddle 3.3.1 (CPU): the forward uses torch's bins and agrees to 1e-16, but the
    backward scales by 1/(bin area) in float32 on float64 tensors: a 7x6 map pooled to 3x3 gets
    gradients off by 2e-8 (UperNet's PPM; every backbone gradient inherits ~1e-8 relative). In
    float64 the pooling is two matmuls with float64 bin weights (exact backward); float32 runs
    the native kernel."""

    def forward(self, x):
        if x.dtype != paddle.float64:
            return super().forward(x)
        size = self._output_size
        out_h, out_w = (size, size) if isinstance(size, int) else size
        rows = _pool_matrix(x.shape[2], out_h, x.dtype)
        cols = _pool_matrix(x.shape[3], out_w, x.dtype)
        return paddle.matmul(paddle.matmul(rows, x), cols, transpose_y=True)


def _channel_shape(x, axis=1):
    return [1] * axis + [x.shape[axis]] + [1] * (x.ndim - axis - 1)


class BatchNorm2D(nn.BatchNorm2D):
    """``nn.BatchNorm2D`` that computes what torch computes, in float64 too.

    Measured on paddle 3.3.1 (CPU):
    - the kernel applies ``epsilon`` as a float32 attribute even to float64 tensors, so 1e-5
      becomes 9.99999974738e-06: float64 outputs move by ~1e-10 where a channel's variance is
      small (FactSeg 1.6e-10, FarSeg 5.2e-9 against the original). In float64 the normalisation
      is computed here as torch's CPU kernel does, ``x * alpha + (bias - mean * alpha)`` with
      ``alpha = weight / sqrt(var + eps)`` and the exact epsilon
      (batch statistics, biased variance, in training; running statistics in eval); float32
      runs paddle's kernel, where the float32 epsilon is what torch's float32 kernel uses too;
    - in training the running variance is updated with the BIASED batch variance (torch:
      unbiased, a factor n/(n-1)), with a float32 momentum even for float64 tensors (running
      mean off by ~1e-8 in float64). The update is recomputed here as torch does it:
      ``running = (1 - m) * running + m * batch`` with m = 1 - paddle momentum (torch's 0.1).
    """

    def forward(self, x):
        if not self.training and x.dtype != paddle.float64:
            return super().forward(x)
        axes = [0] + list(range(2, x.ndim))
        running_mean, running_var = self._mean.clone(), self._variance.clone()
        if x.dtype == paddle.float64:
            shape = _channel_shape(x)
            if self.training:
                mean = x.mean(axis=axes, keepdim=True)
                var = ((x - mean) ** 2).mean(axis=axes, keepdim=True)
            else:
                mean, var = self._mean.reshape(shape), self._variance.reshape(shape)
            # torch's CPU kernel: x * alpha + beta, alpha = weight / sqrt(var + eps), beta = bias - mean * alpha
            alpha = self.weight.reshape(shape) / paddle.sqrt(var + self._epsilon)
            out = x * alpha + (self.bias.reshape(shape) - mean * alpha)
            if not self.training:
                return out
        else:
            out = super().forward(x)
        with paddle.no_grad():
            count = math.prod(x.shape) // x.shape[1]
            mean = x.mean(axis=axes, keepdim=True)
            var = ((x - mean) ** 2).sum(axis=axes) / (count - 1)  # paddle.var promotes to float32
            m = 1.0 - self._momentum
            self._mean.set_value((1 - m) * running_mean + m * mean.reshape([-1]))
            self._variance.set_value((1 - m) * running_var + m * var)
        return out


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` with the exact epsilon in float64.

    Measured on paddle 3.3.1 (CPU): like BatchNorm, the kernel applies ``epsilon`` in float32 to
    float64 tensors (1e-6 becomes 9.99999997e-07). In float64 the normalisation over the last
    ``len(normalized_shape)`` axes is computed here with the exact epsilon (biased variance, as
    torch); float32 runs paddle's kernel unchanged."""

    def forward(self, x):
        if x.dtype != paddle.float64:
            return super().forward(x)
        axes = list(range(x.ndim - len(self._normalized_shape), x.ndim))
        mean = x.mean(axis=axes, keepdim=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdim=True)
        out = (x - mean) / paddle.sqrt(var + self._epsilon)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


def clip_grad_norm_(params, max_norm):
    """torch.nn.utils.clip_grad_norm_ in paddle: scale every gradient by
    min(1, max_norm / (global L2 norm + 1e-6)). paddle.nn.ClipGradByGlobalNorm divides by
    max(norm, max_norm) instead (no 1e-6), which differs by ~1e-8 relative in float64.
    Each tensor's norm is accumulated in float64: paddle 3.3.1's float32 ``linalg.norm`` sums
    naively and loses 0.78% on an 11M-element tensor and 2% on a 19M-element one (torch: 0.04% and
    0.1%), which moved clipped updates of vit_s16_upernet and upernet_r50 far beyond float32 noise.
    Returns the global norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    with paddle.no_grad():
        flats = [g.flatten().astype("float64") for g in grads]
        norms = [paddle.sqrt(paddle.dot(f, f)).astype(g.dtype) for f, g in zip(flats, grads)]  # BLAS: fast, accurate
        total = paddle.linalg.norm(paddle.stack(norms))
        coef = paddle.clip(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.multiply_(coef)
    return total
