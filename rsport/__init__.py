"""Framework-neutral core shared by the PyTorch reference and the Paddle port.

Nothing in this package imports torch or paddle at import time (a test enforces it): the model
registry, conversion rules, tolerance profiles, fixtures and comparison helpers are plain
Python + numpy, so every tool can enumerate models without paying for a framework import.
"""
from rsport.registry import ModelSpec, UnknownModelError, get, names, register

__all__ = ["ModelSpec", "UnknownModelError", "get", "names", "register"]
