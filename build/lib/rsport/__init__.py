"""rsport: port remote-sensing segmentation models between PyTorch and PaddlePaddle, and prove it.

The framework-neutral core shared by the PyTorch references (torch_ref/), the Paddle ports
(paddle_impl/) and the tools (convert/, align/, deploy/, test_tipc/). Nothing in this package
imports torch or paddle at import time (a test enforces it): the model registry, the dispatch to
a framework's adapter, weight translation, tolerance profiles, fixtures, comparison and the
alignment engine are plain Python + numpy.

Public API:
    align_pair(torch_model, paddle_model, inputs, ...) -> AlignReport   align any pair in memory
    ModelSpec, register, get, names, load_spec                          the model registry
"""
from rsport.alignment import AlignReport, PairError, align_pair
from rsport.registry import ModelSpec, SpecError, UnknownModelError, get, load_spec, names, register

__all__ = ["AlignReport", "ModelSpec", "PairError", "SpecError", "UnknownModelError", "align_pair", "get",
           "load_spec", "names", "register"]
