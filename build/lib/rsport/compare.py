"""Strict array comparison: structure first, then values; NaN/Inf fail.

The verdict is ``max_abs <= atol + rtol * scale`` with ``max_abs = max |actual - reference|`` and
``scale = max |reference|`` (the named profile's atol and rtol, rsport/tolerances.py): the largest
absolute error judged against a bound relative to the tensor's own magnitude, never the mean.
``max_rel = max_abs / scale`` is reported beside it for reading, not judged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rsport.tolerances import Tolerance


@dataclass
class Diff:
    name: str
    passed: bool
    max_abs: float
    max_rel: float
    mean_abs: float
    bound: float
    problem: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def compare(name: str, actual: np.ndarray, reference: np.ndarray, tol: Tolerance,
            matching_nan_ok: bool = False) -> Diff:
    """Compare ``actual`` against ``reference``: passed when ``max_abs <= tol.bound(max|reference|)``.

    Shapes and dtypes must match exactly (no broadcasting, no transposing), and a NaN or Inf
    on either side fails whatever its magnitude, unless ``matching_nan_ok`` and both sides
    have NaN at exactly the same places (e.g. the IoU of a class that never occurs).
    """
    actual, reference = np.asarray(actual), np.asarray(reference)
    nan = float("nan")
    if actual.shape != reference.shape:
        return Diff(name, False, nan, nan, nan, nan, f"shape {actual.shape} != {reference.shape}")
    if actual.dtype != reference.dtype:
        return Diff(name, False, nan, nan, nan, nan, f"dtype {actual.dtype} != {reference.dtype}")
    bad = ~np.isfinite(actual) | ~np.isfinite(reference)
    if matching_nan_ok:
        both_nan = np.isnan(actual) & np.isnan(reference)
        bad &= ~both_nan
        actual, reference = np.where(both_nan, 0, actual), np.where(both_nan, 0, reference)
    if bad.any():
        return Diff(name, False, nan, nan, nan, nan, f"{int(bad.sum())} non-finite values")
    if actual.size == 0:
        return Diff(name, True, 0.0, 0.0, 0.0, tol.bound(0.0))
    err = np.abs(actual.astype(np.float64) - reference.astype(np.float64))
    scale = float(np.abs(reference).max())
    max_abs = float(err.max())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    bound = tol.bound(scale)
    return Diff(name, max_abs <= bound, max_abs, max_rel, float(err.mean()), bound)
