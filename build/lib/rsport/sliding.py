"""Sliding-window prediction over whole scenes: the original FarSeg / FactSeg evaluation.

Provenance: ``sliding_window`` of Z-Zheng/SimpleCV (``simplecv/data/_np_preprocess.py``) and
``SegmSlidingWinInference`` of Z-Zheng/FarSeg ``isaid_eval.py`` @ 90fc047d (the evaluation FactSeg
reuses); re-implemented here from the behaviour, in numpy only:

* the window grid starts at multiples of ``stride`` along each axis; a window that would cross
  the border is shifted back so that it ends exactly at the border; a window larger than the
  image is clipped to the image (so every window of one scene has the same size);
* windows are visited row-major (top to bottom, left to right in each row);
* each window is zero-padded bottom/right to a multiple of ``divisor`` (``DivisiblePad(32)``),
  predicted, and the prediction cropped back to the window;
* class probabilities are summed over overlapping windows and divided by the per-pixel number
  of windows (float32, as the original ``res_img / res_count``).

The framework-specific part is the ``predict`` callable (numpy in, numpy out), so the torch and
paddle evaluators, the exported-model inference and the tests share one implementation.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["windows", "pad_to_multiple", "predict_scene"]


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair)):
        raise ValueError(f"{what} must be a positive integer or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: multiples of ``stride``, the last one moved back so that the
    window ends at ``size``; ``window`` is already clipped to ``size``."""
    count = math.ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(count)]


def windows(height: int, width: int, window: int | Sequence[int] = 896,
            stride: int | Sequence[int] = 512) -> list[tuple[int, int, int, int]]:
    """The original window grid over a ``height`` x ``width`` image.

    Args:
        height, width: image size in pixels (> 0).
        window: window size, an int or ``(h, w)``; clipped to the image when larger.
        stride: step between window starts, an int or ``(h, w)``.

    Returns:
        ``[(y0, x0, y1, x1), ...]`` half-open boxes, row-major; every box has the same size
        ``(min(window_h, height), min(window_w, width))`` and together they cover every pixel.
    """
    height, width = _pair((height, width), "image size")
    kh, kw = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    kh, kw = min(kh, height), min(kw, width)
    return [(y0, x0, y0 + kh, x0 + kw) for y0 in _starts(height, kh, sh) for x0 in _starts(width, kw, sw)]


def pad_to_multiple(x: np.ndarray, divisor: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad ``x [N, C, H, W]`` at the bottom and right to multiples of ``divisor``.

    Returns:
        ``(padded, (H, W))``: the padded array (``x`` itself when nothing is needed) and the
        original spatial size to crop predictions back to.
    """
    if x.ndim != 4:
        raise ValueError(f"pad_to_multiple expects [N, C, H, W], got shape {x.shape}")
    divisor = _pair(divisor, "divisor")[0]
    h, w = x.shape[2:]
    ph, pw = -h % divisor, -w % divisor
    if ph == 0 and pw == 0:
        return x, (h, w)
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw))), (h, w)


def predict_scene(image: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], num_classes: int, *,
                  window: int | Sequence[int] = 896, stride: int | Sequence[int] = 512, divisor: int = 32,
                  batch: int = 1, progress: Callable[[int, int], None] | None = None,
                  flip: bool = False) -> np.ndarray:
    """Class probabilities of a whole scene by the original sliding-window algorithm.

    Args:
        image: normalized scene ``[C, H, W]`` float32.
        predict: ``predict(x [N, C, h, w]) -> probs [N, K, h, w]`` numpy; receives windows already
            zero-padded to a multiple of ``divisor`` and must return probabilities of the same size.
        num_classes: K.
        window, stride: the grid (see ``windows``); original: 896 / 512.
        divisor: pad each window bottom/right to a multiple of this (original: 32).
        batch: windows per ``predict`` call (same result as 1 for a per-sample ``predict``).
        progress: called as ``progress(done, total)`` after each ``predict`` call.
        flip: horizontal flip test-time augmentation (mmseg's ``MultiScaleFlipAug(flip=True)``):
            each window's probabilities are the mean of the window's and of its mirror image's,
            mirrored back.

    Returns:
        ``probs [K, H, W]`` float32: per-pixel mean of the window probabilities.
    """
    if image.ndim != 3:
        raise ValueError(f"predict_scene expects one scene [C, H, W], got shape {image.shape}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    _, height, width = image.shape
    boxes = windows(height, width, window, stride)
    total = np.zeros((num_classes, height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    for start in range(0, len(boxes), batch):
        chunk = boxes[start:start + batch]
        x = np.stack([image[:, y0:y1, x0:x1] for y0, x0, y1, x1 in chunk]).astype(np.float32, copy=False)
        x, (h, w) = pad_to_multiple(x, divisor)
        out = np.asarray(predict(x))
        if flip:
            mirrored = np.asarray(predict(np.ascontiguousarray(x[..., ::-1])))
            out = (out + mirrored[..., ::-1]) / np.float32(2)
        if out.shape != (len(chunk), num_classes) + x.shape[2:]:
            raise ValueError(f"predict returned shape {out.shape}, expected "
                             f"{(len(chunk), num_classes) + x.shape[2:]} for input {x.shape}")
        for (y0, x0, y1, x1), probs in zip(chunk, out[:, :, :h, :w]):
            total[:, y0:y1, x0:x1] += probs
            count[y0:y1, x0:x1] += 1
        if progress is not None:
            progress(min(start + batch, len(boxes)), len(boxes))
    return total / count
