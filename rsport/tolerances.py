"""Named tolerance profiles: the one place where "close enough" is defined.

A comparison passes when ``max_abs <= atol + rtol * scale``, with ``scale = max|reference|``.
Judged by the maximum, never by the mean: a single wrong border row hides in a mean.
Each profile records the noise it was calibrated on. Never loosen one to silence a failure.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    name: str
    atol: float
    rtol: float
    calibration: str

    def bound(self, scale: float) -> float:
        return self.atol + self.rtol * scale


PROFILES: dict[str, Tolerance] = {}


def _add(profile: Tolerance) -> None:
    if profile.name in PROFILES:
        raise ValueError(f"tolerance profile {profile.name!r} defined twice")
    PROFILES[profile.name] = profile


_add(Tolerance(
    "fp32_prob", atol=1e-4, rtol=0.0,
    calibration="float32 CPU forward, class probabilities. Two correct FactSeg ports with identical "
                "weights differ by 8.8e-6 at 256x256 and 1.5e-5 at 512/896 from float noise alone, so "
                "1e-5 would fail on noise; bugs such as a flipped align_corners move it by 8e-3."))
_add(Tolerance(
    "fp32_logit", atol=1e-5, rtol=1e-4,
    calibration="float32 CPU forward, logits and inner taps: error relative to the tensor's scale "
                "(inner FactSeg layers differ by up to 1.4e-3 absolute at activations of ~1e1..1e2)."))
_add(Tolerance(
    "fp64", atol=1e-10, rtol=0.0,
    calibration="float64 end to end: correct twins agree to ~1e-13..1e-12; a BN epsilon bug in one layer "
                "shows up around 1e-5, nine orders of magnitude above this bound."))


def get(name: str) -> Tolerance:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown tolerance profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
