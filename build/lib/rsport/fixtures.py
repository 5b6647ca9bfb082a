"""Seeded, framework-neutral inputs: both twins always see the same numpy arrays."""
from __future__ import annotations

import numpy as np

from rsport.registry import ModelSpec

GENERIC_MEAN, GENERIC_STD = 127.5, 64.0  # inputs of a pair without a data contract: about N(0, 1)


def _smooth_raw(shape: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """Smooth random scenes on 0..255: low-frequency structure plus pixel noise, like imagery
    rather than white noise."""
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, c, max(h // 16, 1), max(w // 16, 1)))
    rows = np.linspace(0, coarse.shape[2] - 1, h).round().astype(int)
    cols = np.linspace(0, coarse.shape[3] - 1, w).round().astype(int)
    return np.clip(0.7 * coarse[:, :, rows][:, :, :, cols] + rng.normal(0, 25, size=shape), 0, 255)


def generic_image_batch(shape: tuple[int, int, int, int], seed: int, dtype: str = "float32",
                        mean=None, std=None) -> np.ndarray:
    """A batch [N, C, H, W] of smooth random scenes, normalized by per-channel ``mean``/``std``
    on the 0..255 scale (default: about zero mean and unit variance)."""
    c = shape[1]
    mean = np.asarray(mean if mean is not None else (GENERIC_MEAN,) * c, dtype=np.float64).reshape(1, c, 1, 1)
    std = np.asarray(std if std is not None else (GENERIC_STD,) * c, dtype=np.float64).reshape(1, c, 1, 1)
    return ((_smooth_raw(shape, seed) - mean) / std).astype(dtype)


def image_batch(spec: ModelSpec, shape: tuple[int, int, int, int], seed: int, dtype: str = "float32") -> np.ndarray:
    """A normalised batch [N, C, H, W] in the spec's data contract (its mean/std on 0..255)."""
    if shape[1] != spec.in_channels:
        raise ValueError(f"{spec.name} takes {spec.in_channels} channels, fixture asked for {shape[1]}")
    return generic_image_batch(shape, seed, dtype, spec.mean, spec.std)


def label_batch_for(num_classes: int, ignore_index: int, shape: tuple[int, int, int], seed: int,
                    ignore_fraction: float = 0.05) -> np.ndarray:
    """Class ids [N, H, W] (int64) with a share of ``ignore_index`` pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=shape)
    labels[rng.random(shape) < ignore_fraction] = ignore_index
    return labels.astype(np.int64)


def label_batch(spec: ModelSpec, shape: tuple[int, int, int], seed: int, ignore_fraction: float = 0.05) -> np.ndarray:
    """Class ids [N, H, W] (int64) in the spec's label contract."""
    return label_batch_for(spec.num_classes, spec.ignore_index, shape, seed, ignore_fraction)
