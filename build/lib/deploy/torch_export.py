"""Torch side of the export: the same export-ready layers as deploy/paddle_export.py, and ONNX.

torch 2.13's ``torch.onnx.export`` defaults to the dynamo exporter, which needs onnxscript and
opset 18+ (it cannot write Resize below 18). The TorchScript exporter (``dynamo=False``) still
writes opset 11..17 with dynamic batch, height and width; its deprecation warning is silenced
here because the choice is deliberate.

Swaps (see deploy/paddle_export.py for why): adaptive average pooling to more than one bin
becomes two matmuls with bin weights computed from the traced input size (torch's ONNX
exporter only handles adaptive pooling whose output divides a static input), and
``PosEmbedResize`` always resamples (the tracer would freeze its "same grid" branch at the
example input's size).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_ref.models.vit_upernet import PosEmbedResize

ONNX_OPSET = 17
EXAMPLE_SIZE = (96, 160)  # traced example: not a trained patch grid, not square


def _bin_weights(size, bins: int, dtype):
    """[bins, size] averaging weights of torch's adaptive bins, from the (traced) ``size``."""
    i = torch.arange(bins).unsqueeze(1)
    start = torch.div(i * size, bins, rounding_mode="floor")
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
    j = torch.arange(size).unsqueeze(0)
    inside = (j >= start).to(dtype) * (j < end).to(dtype)
    return inside / (end - start).to(dtype)


class SizeGenericAdaptiveAvgPool2d(nn.Module):
    """Adaptive average pooling as two matmuls with runtime bin weights (exact averaging)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x):
        rows = _bin_weights(x.shape[2], self.output_size[0], x.dtype)
        cols = _bin_weights(x.shape[3], self.output_size[1], x.dtype)
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class AlwaysResample(PosEmbedResize):
    """``PosEmbedResize`` without the same-grid shortcut (resampling to the trained grid is the
    identity: bicubic, align_corners=False, scale 1 weighs the taps (0, 1, 0, 0))."""

    def forward(self, pos_embed, grid):
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        dim = pos_embed.shape[2]
        patch_pos = patch_pos.reshape(1, self.grid[0], self.grid[1], dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode=self.mode, align_corners=self.align_corners)
        patch_pos = patch_pos.flatten(2).transpose(1, 2)
        return torch.cat([cls_pos, patch_pos], dim=1)


def _output_size(layer) -> tuple:
    size = layer.output_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _swap(layer):
    if isinstance(layer, nn.AdaptiveAvgPool2d) and _output_size(layer) != (1, 1):
        return SizeGenericAdaptiveAvgPool2d(layer.output_size)
    if isinstance(layer, PosEmbedResize) and not isinstance(layer, AlwaysResample):
        return AlwaysResample(layer.grid, layer.mode, layer.align_corners)
    return None


def export_ready(model) -> list[str]:
    """Swap the size-specific layers in place; returns what changed."""
    changed = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            new = _swap(child)
            if new is not None:
                setattr(parent, child_name, new)
                changed.append(f"{name + '.' if name else ''}{child_name}: {type(child).__name__} -> {type(new).__name__}")
    model.eval()
    return changed


def save_onnx(model, spec, path: Path, opset: int = ONNX_OPSET) -> None:
    """ONNX with dynamic N, H, W through the TorchScript exporter."""
    x = torch.zeros(1, spec.in_channels, *EXAMPLE_SIZE)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation of dynamo=False, tracer notes on shape arithmetic
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["prob"], dynamic_axes={"x": axes, "prob": axes})
