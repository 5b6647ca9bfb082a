"""Seeded, framework-neutral inputs: both twins always see the same numpy arrays."""
from __future__ import annotations

import numpy as np

from rsport.registry import ModelSpec


def image_batch(spec: ModelSpec, shape: tuple[int, int, int, int], seed: int, dtype: str = "float32") -> np.ndarray:
    """A normalised batch [N, C, H, W]: smooth random scenes on 0..255 (low-frequency structure
    plus pixel noise, like imagery rather than white noise), then the spec's mean/std."""
    n, c, h, w = shape
    if c != spec.in_channels:
        raise ValueError(f"{spec.name} takes {spec.in_channels} channels, fixture asked for {c}")
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, c, max(h // 16, 1), max(w // 16, 1)))
    rows = np.linspace(0, coarse.shape[2] - 1, h).round().astype(int)
    cols = np.linspace(0, coarse.shape[3] - 1, w).round().astype(int)
    raw = np.clip(0.7 * coarse[:, :, rows][:, :, :, cols] + rng.normal(0, 25, size=shape), 0, 255)
    mean = np.asarray(spec.mean, dtype=np.float64).reshape(1, c, 1, 1)
    std = np.asarray(spec.std, dtype=np.float64).reshape(1, c, 1, 1)
    return ((raw - mean) / std).astype(dtype)


def label_batch(spec: ModelSpec, shape: tuple[int, int, int], seed: int, ignore_fraction: float = 0.05) -> np.ndarray:
    """Class ids [N, H, W] (int64) with a share of ``ignore_index`` pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, spec.num_classes, size=shape)
    labels[rng.random(shape) < ignore_fraction] = spec.ignore_index
    return labels.astype(np.int64)
