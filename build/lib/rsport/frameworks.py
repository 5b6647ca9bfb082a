"""Dispatch to a framework's adapter: the one place that knows which module serves which side.

The core never imports torch or paddle itself. Tools ask ``adapter("torch")`` /
``adapter("paddle")`` for the module that exposes the framework-specific half of every
operation (build a registered model, read its schema, load a state strictly, capture submodule
outputs, run a train step ...): ``torch_ref/backend.py`` and ``paddle_impl/backend.py``, twins
with the same functions. The adapters are resolved by import string, like the registry's model
entries, so the core has no import edge towards the model trees.
"""
from __future__ import annotations

import importlib

from rsport.rules import PADDLE, SIDES, TORCH

ADAPTERS = {TORCH: "torch_ref.backend", PADDLE: "paddle_impl.backend"}
PACKAGES = {TORCH: "torch", PADDLE: "paddle"}  # the framework package each adapter needs


class FrameworkMissing(ImportError):
    """The framework a path needs is not installed (or hidden); ``str()`` says which and why."""


def adapter(side: str):
    """The adapter module of ``side`` (``torch`` or ``paddle``); FrameworkMissing if its framework
    cannot be imported."""
    if side not in ADAPTERS:
        raise ValueError(f"unknown framework {side!r}; known: {', '.join(SIDES)}")
    try:
        return importlib.import_module(ADAPTERS[side])
    except ImportError as err:
        missing = getattr(err, "name", None) or ""
        if missing.split(".")[0] != PACKAGES[side]:
            raise
        raise FrameworkMissing(f"this needs {PACKAGES[side]} ({side} side), which cannot be imported here: "
                               f"{err}") from None


def available(side: str) -> bool:
    """Whether ``side``'s framework can be imported (imports it if so)."""
    try:
        adapter(side)
    except FrameworkMissing:
        return False
    return True


def other(side: str) -> str:
    """The other framework."""
    if side not in ADAPTERS:
        raise ValueError(f"unknown framework {side!r}; known: {', '.join(SIDES)}")
    return PADDLE if side == TORCH else TORCH
