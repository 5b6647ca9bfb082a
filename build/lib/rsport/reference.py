"""The embedded default weights: one seeded, framework-neutral artifact that both trees load.

Pure random initialisation leaves BatchNorm at mean 0 / var 1, which (a) cannot catch a converter
that forgets BN buffers and (b) drives the activations of a deep ResNet to ~1e3, where float32
comparisons mean nothing. So the reference is built in three steps:

1. every parameter is drawn with numpy from a generator seeded by (seed, crc32 of its name),
   by its layer type (conv/linear: N(0, 1/fan_in); norms: weight U(0.5, 1.5), bias N(0, 0.1);
   anything else: N(0, 0.02)); buffers that are not running statistics (an index table, a step
   counter) keep the model's own values;
2. the BatchNorm running statistics are estimated from the inputs each BatchNorm layer sees in
   float64 train-mode passes over seeded sample images (batch 4, the alignment size) (mean and unbiased variance, averaged over
   the batches), then perturbed (seeded) so that they are no batch's statistics either;
3. the statistics are rounded to 10 significant bits, which absorbs the ~1e-13 by which two
   frameworks' float64 passes differ: torch and paddle produce the same bytes (a test checks).

The result is a ``.safetensors`` file (numpy writes and reads it; no framework needed) in torch
naming, the originals' checkpoint naming, without tensors only one framework keeps (torch's
``num_batches_tracked``): ``output/weights/<model>[_<variant>]_reference.safetensors``. Its
header records the seed, the generator version and a hash of the tensor list; a file that does
not match the model is rebuilt. Either framework can build it: whichever is asked first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from rsport.fixtures import image_batch
from rsport.frameworks import adapter, other
from rsport.io import Staged
from rsport.registry import ModelSpec
from rsport.rules import LAYER_OPS, PADDLE, TORCH, first_match

log = logging.getLogger(__name__)

DEFAULT_SEED = 2333  # the original training configs' seed
GENERATOR = "rsport-reference-3"  # change when the recipe below changes: cached files are rebuilt
CALIBRATION_BATCHES = 3
STAT_BITS = 10  # significant bits kept of each running statistic
OUTPUT_DIR = Path("output") / "weights"
BN_STATS = {"running_mean": "mean", "running_var": "var", "_mean": "mean", "_variance": "var"}


def path_for(spec: ModelSpec, variant: str = "default", seed: int = DEFAULT_SEED) -> Path:
    suffix = "" if variant == "default" else f"_{variant}"
    tag = "" if seed == DEFAULT_SEED else f"_s{seed}"
    return OUTPUT_DIR / f"{spec.name}{suffix}_reference{tag}.safetensors"


# --- the canonical (torch-named) tensor list of a model, from either framework ----------------------
def canonical_schema(spec: ModelSpec, side: str, model) -> dict:
    """torch name -> (side name, TensorSpec in torch layout) for every tensor both frameworks keep."""
    schema = adapter(side).schema(model)
    rules = spec.all_rules()
    out = {}
    for name, tensor in schema.items():
        rule, groups = first_match(rules, name, side)
        if rule is None:
            raise ValueError(f"{spec.name}: no rename rule matches {side} tensor {name!r}")
        if rule.template(other(side)) is None:
            continue  # kept by this framework only (torch's BN step counter)
        torch_name = rule.render(groups, TORCH) if side == PADDLE else name
        shape = tensor.shape
        if side == PADDLE and LAYER_OPS.get((tensor.layer_type, tensor.leaf)) == "transpose":
            shape = tuple(shape[::-1])
        out[torch_name] = (name, replace(tensor, shape=tuple(shape)))
    return dict(sorted(out.items()))


def schema_hash(canonical: dict) -> str:
    listing = [[name, list(t.shape), t.dtype] for name, (_, t) in canonical.items()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


# --- step 1: parameters ------------------------------------------------------------------------
def _rng(seed: int, name: str, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


def _fan_in(shape: tuple) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def initial_value(name: str, tensor, seed: int) -> np.ndarray:
    """A seeded draw for one parameter (torch layout), by its layer type and role."""
    rng, shape = _rng(seed, name), tensor.shape
    kind = (tensor.layer_type, tensor.leaf)
    if kind in (("BatchNorm", "weight"), ("LayerNorm", "weight")):
        value = rng.uniform(0.5, 1.5, size=shape)
    elif kind in (("BatchNorm", "bias"), ("LayerNorm", "bias")):
        value = rng.normal(0.0, 0.1, size=shape)
    elif tensor.layer_type in ("Conv", "Linear") and tensor.leaf == "weight":
        value = rng.normal(0.0, 1.0 / math.sqrt(max(_fan_in(shape), 1)), size=shape)
    elif tensor.layer_type in ("Conv", "Linear") and tensor.leaf == "bias":
        value = rng.normal(0.0, 0.02, size=shape)
    elif tensor.layer_type == "Embedding":
        value = rng.normal(0.0, 1.0, size=shape)
    else:
        value = rng.normal(0.0, 0.02, size=shape)
    return value.astype(tensor.dtype)


# --- step 2 and 3: BatchNorm statistics --------------------------------------------------------------
def round_bits(x: np.ndarray, bits: int = STAT_BITS) -> np.ndarray:
    """``x`` rounded to ``bits`` significant bits (float64)."""
    mantissa, exponent = np.frexp(np.asarray(x, dtype=np.float64))
    return np.ldexp(np.round(mantissa * (1 << bits)) / (1 << bits), exponent)


def calibration_batches(spec: ModelSpec, variant: str, seed: int) -> list[np.ndarray]:
    """Seeded images at the variant's alignment size (a size the model takes), batch 4."""
    _, channels, height, width = spec.align_shape(variant)
    return [image_batch(spec, (4, channels, height, width), seed + i, "float64") for i in range(CALIBRATION_BATCHES)]


def generate(spec: ModelSpec, variant: str = "default", seed: int = DEFAULT_SEED, side: str = TORCH) -> dict:
    """The reference state in torch naming (numpy), built with ``side``'s framework."""
    fw = adapter(side)
    model = fw.build(spec, variant)
    canonical = canonical_schema(spec, side, model)
    own = fw.state_arrays(model)
    arrays, stats = {}, {}
    for name, (side_name, tensor) in canonical.items():
        role = BN_STATS.get(tensor.leaf) if tensor.layer_type == "BatchNorm" else None
        if role is not None:
            stats[name] = role
            arrays[name] = (np.zeros if role == "mean" else np.ones)(tensor.shape, dtype=tensor.dtype)
        elif tensor.kind == "param":
            arrays[name] = initial_value(name, tensor, seed)
        else:  # a buffer with a meaning of its own (index table, step counter): the model's value
            arrays[name] = np.array(own[side_name], copy=True)
    fw.load_state(model, _side_state(spec, arrays, side, model, canonical))
    model = fw.cast(model, "float64")
    observed = fw.batchnorm_statistics(model, calibration_batches(spec, variant, seed))
    side_layer = {name: canonical[name][0].rpartition(".")[0] for name in stats}
    for name, role in stats.items():
        seen = observed[side_layer[name]]
        if not seen:
            raise ValueError(f"{spec.name}: BatchNorm {side_layer[name]} is never called in a forward pass")
        mean = np.mean([m for m, _ in seen], axis=0)
        var = np.mean([v for _, v in seen], axis=0)
        rng = _rng(seed, name, stream=1)
        if role == "mean":
            value = mean + 0.1 * np.sqrt(var) * rng.standard_normal(mean.shape)
        else:
            value = var * np.exp(0.2 * rng.standard_normal(var.shape))
        arrays[name] = round_bits(value).astype(canonical[name][1].dtype)
    return arrays


def _side_state(spec: ModelSpec, arrays: dict, side: str, model, canonical: dict) -> dict:
    """Torch-named arrays in ``side``'s naming and layout, with side-only tensors filled."""
    from rsport.weights import fill_side_only, translate

    if side == TORCH:
        return fill_side_only(spec, arrays, TORCH, model)
    return translate(spec, arrays, TORCH, model)


# --- the cached artifact -----------------------------------------------------------------------
def ensure(spec: ModelSpec, variant: str = "default", seed: int = DEFAULT_SEED, side: str = TORCH,
           model=None) -> Path:
    """The artifact's path, built (with ``side``'s framework) if missing or stale."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    fw = adapter(side)
    model = fw.build(spec, variant) if model is None else model
    # one metadata entry: safetensors writes a multi-entry metadata map in no fixed order
    expected = {"rsport": json.dumps({"model": spec.name, "variant": variant, "seed": seed, "generator": GENERATOR,
                                      "schema": schema_hash(canonical_schema(spec, side, model))}, sort_keys=True)}
    path = path_for(spec, variant, seed)
    if path.is_file():
        try:
            with safe_open(str(path), framework="numpy") as f:
                if (f.metadata() or {}) == expected:
                    return path
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
            pass
        log.info("rebuilding %s: it does not match this model or generator", path)
    log.info("building the embedded %s reference (%s, seed %d) with %s ...", spec.name, variant, seed, side)
    arrays = generate(spec, variant, seed, side)
    with Staged() as staged:
        save_file({k: np.asarray(v, order="C") for k, v in arrays.items()}, str(staged.path(path)), metadata=expected)
        staged.commit()
    return path


def reference_arrays(spec: ModelSpec, variant: str = "default", side: str = TORCH, model=None,
                     seed: int = DEFAULT_SEED) -> dict:
    """The embedded reference in ``side``'s naming and layout, ready for ``load_state`` of
    ``model`` (built if not given)."""
    from rsport.weights import read_neutral

    fw = adapter(side)
    model = fw.build(spec, variant) if model is None else model
    path = ensure(spec, variant, seed, side, model)
    return _side_state(spec, read_neutral(path), side, model, None)


def reference_model(spec: ModelSpec, variant: str = "default", side: str = TORCH, seed: int = DEFAULT_SEED):
    """``side``'s model of the spec holding the embedded reference weights, in eval mode."""
    fw = adapter(side)
    model = fw.build(spec, variant)
    fw.load_state(model, reference_arrays(spec, variant, side, model, seed))
    model.eval()
    return model


def describe(seed: int = DEFAULT_SEED) -> str:
    return f"embedded default: seeded framework-neutral reference (seed {seed}, randomized BN statistics)"
