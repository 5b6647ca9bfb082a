"""Numeric constants the twins share (numpy only, no framework import).

Paddle 3.3.1 keeps the epsilon of its normalisation kernels (BatchNorm, LayerNorm) as a float32
op attribute, even for float64 tensors (measured; tests/test_models.py fails if that changes).
Both twins therefore spell LayerNorm epsilons through ``layernorm_eps``: float32 results are
bit-identical to the original value, and the float64 twins agree to ~1e-13. Should Paddle (or an
exact ``paddle_impl/ops.py`` LayerNorm) apply the epsilon in float64 one day, this one function
goes back to the exact value for every model at once.
"""
import numpy as np


def layernorm_eps(value: float) -> float:
    """A LayerNorm epsilon as paddle's kernel applies it (rounded to float32)."""
    return float(np.float32(value))
