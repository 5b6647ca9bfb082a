"""Weight translation between the frameworks: read and unwrap a checkpoint, plan the rename as a
checked bijection from the rule table, apply it. Framework-neutral: states are ``name -> numpy``
dicts; the frameworks are reached through their adapters (rsport.frameworks) only to read a
framework's own file format or a model's schema.

Files: ``.pth``/``.pt`` (torch), ``.pdparams`` (paddle) and ``.safetensors`` (framework-neutral,
read with numpy alone; the embedded reference weights use it).
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from rsport.checkpoint import (CheckpointError, another_model, closest, hints_for, is_metadata, optimizer_keys,
                               unwrap)
from rsport.frameworks import FrameworkMissing, adapter, other
from rsport.registry import ModelSpec
from rsport.rules import (FILLS, PADDLE, TORCH, Mapping_, Naming, Plan, Rule, apply_naming, apply_plan, format_report,
                          make_plan)

log = logging.getLogger(__name__)

NEUTRAL_SUFFIX = ".safetensors"
SUFFIXES = {TORCH: (".pth", ".pt"), PADDLE: (".pdparams",)}


class ConversionError(RuntimeError):
    """Bad input or a failed check; ``str()`` is the whole report, the first line a summary."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def side_of(path: str | Path) -> str | None:
    """The framework whose format a file name says (``None`` for framework-neutral files)."""
    name = str(path).lower()
    if name.endswith(NEUTRAL_SUFFIX):
        return None
    return PADDLE if name.endswith(SUFFIXES[PADDLE]) else TORCH


def read_neutral(path: str | Path) -> dict:
    """A ``.safetensors`` file as name -> numpy (no framework needed)."""
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def read_source(path: Path, side: str | None, allow_pickle: bool = False,
                key: str | None = None) -> tuple[dict, list[str]]:
    """Load and unwrap a checkpoint into name -> numpy array, or raise ConversionError.
    ``side`` is the framework that wrote it (None: a framework-neutral ``.safetensors``);
    ``key`` the entry that holds the weights (default: rsport.checkpoint's automatic choice)."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (*SUFFIXES[TORCH], *SUFFIXES[PADDLE],
                                                                              NEUTRAL_SUFFIX))
        raise ConversionError(f"{path} is a folder, not a checkpoint file"
                              + (f" (it holds {', '.join(inside[:3])})" if inside else ""))
    if not path.is_file():
        raise ConversionError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path} is not a readable {side or 'safetensors'} checkpoint: the file is empty")
    if side is None or str(path).lower().endswith(NEUTRAL_SUFFIX):
        try:
            raw = read_neutral(path)
        except Exception as err:  # noqa: BLE001 - arbitrary bytes make the reader raise anything
            raise ConversionError(f"{path} is not a readable safetensors file: {type(err).__name__}: "
                                  f"{str(err).strip()[:120]}") from None
        try:
            return unwrap(raw, lambda v: isinstance(v, np.ndarray), key)
        except CheckpointError as err:
            raise ConversionError(f"{path} is not a state_dict: {err}") from None
    try:
        fw = adapter(side)
    except FrameworkMissing as err:
        raise ConversionError(f"{path}: reading a {side} checkpoint {str(err)[len('this '):]}") from None
    try:
        raw = fw.load_file(str(path), allow_pickle)
    except Exception as err:  # noqa: BLE001 - arbitrary bytes can make an unpickler raise anything
        text = _text_start(path)
        if text is not None:
            raise ConversionError(f"{path} is not a readable {side} checkpoint: it is a text file "
                                  f"(it starts with {text!r})") from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"{path} is not a readable {side} checkpoint (corrupt, truncated or another "
                              f"format): {type(err).__name__}: {first[:120]}") from None
    try:
        state, notes = unwrap(raw, fw.is_tensor, key)
    except CheckpointError as err:
        raise ConversionError(f"{path} is not a {side} state_dict: {err}") from None
    return fw.to_numpy(state), notes


def _text_start(path: Path, size: int = 256) -> str | None:
    """The first line of ``path`` when its first bytes are printable text (a checkpoint is a zip
    archive or a binary pickle), else None."""
    with open(path, "rb") as f:
        head = f.read(size)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip() or any(not (c.isprintable() or c in "\n\r\t") for c in text):
        return None
    return text.strip().splitlines()[0][:40]


def namings(spec: ModelSpec, side: str) -> dict[str, Naming]:
    """Other implementations' namings of ``side``'s weights that the spec accepts."""
    return dict(spec.namings(side))


def detect_naming(spec: ModelSpec, keys, naming: str, side: str = PADDLE) -> tuple[str, str | None]:
    """Pick the naming of a ``side`` source; reported, never silent."""
    if naming != "auto":
        return naming, None
    for name, table in namings(spec, side).items():
        hits = sum(any(m in k for m in table.markers) for k in keys)
        if hits:
            return name, f"detected {name} naming ({hits} keys contain {' or '.join(table.markers)})"
    return "native", None


def to_native(spec: ModelSpec, arrays: dict, side: str, naming: str = "auto") -> tuple[dict, list[str]]:
    """Map another implementation's naming of ``side``'s weights onto ours (detected by ``auto``)."""
    known = namings(spec, side)
    if naming not in ("auto", "native", *known):
        raise ConversionError(f"unknown naming {naming!r} for {spec.name}; known: "
                              + ", ".join(["auto", "native", *known]))
    naming, note = detect_naming(spec, arrays, naming, side)
    notes = [note] if note else []
    if naming == "native":
        return arrays, notes
    renamed, naming_notes = apply_naming(arrays, known[naming])
    return renamed, notes + naming_notes


def plan_for(spec: ModelSpec, arrays: dict, source_side: str, target_model, rules: tuple[Rule, ...] | None = None):
    """The checked rename plan of a state (name -> numpy) onto ``target_model`` (other framework)."""
    target = adapter(other(source_side)).schema(target_model)
    rules = spec.all_rules() if rules is None else tuple(rules)
    plan = make_plan({k: (v.shape, str(v.dtype)) for k, v in arrays.items()}, target, rules, source_side, spec.ignore)
    return plan, target, rules


def set_aside_metadata(plan: Plan, arrays: dict) -> tuple[dict, list[str]]:
    """Drop the 0-d entries named like variables (``best_miou``, ``epoch``: rsport.checkpoint.is_metadata)
    that ``plan`` found no place for; returns the arrays and a note (none if nothing was dropped)."""
    meta = [s for s, _, _ in plan.unexpected if is_metadata(s, arrays[s].shape)]
    if not meta:
        return arrays, []
    values = ", ".join(f"{name} ({arrays[name].item()!r})" for name in meta[:6])
    return ({k: v for k, v in arrays.items() if k not in meta},
            [f"set aside {len(meta)} 0-d entries that are no tensors of the model: {values}"])


def plan_checked(spec: ModelSpec, arrays: dict, source_side: str, target_model):
    """``plan_for`` with metadata scalars set aside: (plan, target schema, rules, arrays, notes)."""
    plan, target, rules = plan_for(spec, arrays, source_side, target_model)
    arrays, notes = set_aside_metadata(plan, arrays)
    if notes:
        plan, target, rules = plan_for(spec, arrays, source_side, target_model)
    return plan, target, rules, arrays, notes


@functools.lru_cache(maxsize=None)
def _model_keys(name: str, side: str) -> tuple[str, ...]:
    """The state names of a registered model in ``side``'s naming (tiny variant: the names of a
    model's variants share their key patterns, rsport.checkpoint.key_pattern)."""
    from rsport.registry import get

    fw = adapter(side)
    return tuple(fw.schema(fw.build(get(name), "tiny")))


def ranked_models(keys, side: str) -> list[tuple[str, float, int, int]]:
    """Every registered model ranked by how well its names match ``keys`` (rsport.checkpoint.closest).
    Built lazily, only to explain a failure; a model that cannot be built here is left out."""
    from rsport.registry import names

    models = {}
    for name in names():
        try:
            models[name] = _model_keys(name, side)
        except Exception as err:  # noqa: BLE001 - explaining one failure must not become another
            log.debug("no key list of %s (%s): %s", name, side, err)
    return closest(keys, models)


def explain(plan: Plan, spec: ModelSpec, arrays: dict, side: str) -> tuple[str, list[str]]:
    """(a lead for the report's first line, the hints) of a failed plan; ``side`` names the keys."""
    if optimizer_keys(arrays) > len(arrays) // 2:
        return "likely an optimizer state, not weights", hints_for(plan, spec.name, arrays)
    ranked = ranked_models(arrays, side)
    likely = another_model(spec.name, ranked)
    lead = f"likely a {likely} checkpoint (its keys match {likely}'s best)" if likely else ""
    return lead, hints_for(plan, spec.name, arrays, ranked)


def failure(plan: Plan, spec: ModelSpec, arrays: dict, side: str, title: str, notes=()) -> ConversionError:
    """The grouped report of a failed plan as a ConversionError (first line: title, counts, lead)."""
    lead, hints = explain(plan, spec, arrays, side)
    return ConversionError(format_report(plan, title, [*notes, *hints], lead=lead))


def translate(spec: ModelSpec, arrays: dict, source_side: str, target_model,
              title: str | None = None) -> dict:
    """Map a state (name -> numpy) onto ``target_model``'s names with the spec's rules, strictly."""
    plan, target, rules, arrays, notes = plan_checked(spec, arrays, source_side, target_model)
    if not plan.ok:
        raise failure(plan, spec, arrays, source_side, title or f"state does not map onto {spec.name}", notes)
    return apply_plan(plan, arrays, target, rules)


def same_side_plan(arrays: dict, schema: dict, side: str, fillable=()) -> Plan:
    """The plan of loading ``arrays`` into a model of the same framework: names kept, shapes and
    dtypes checked (the same report as a conversion's); ``fillable`` names may be absent
    (recreated by their rule's fill, ``fill_side_only``)."""
    plan = Plan(f"{side}->{side}", len(arrays), len(schema))
    for name, value in arrays.items():
        spec = schema.get(name)
        if spec is None:
            plan.unexpected.append((name, "", "(not in the model)"))
        elif (tuple(value.shape), str(value.dtype)) != (tuple(spec.shape), spec.dtype):
            plan.mismatched.append((name, name, f"{tuple(value.shape)} {value.dtype}",
                                    f"{tuple(spec.shape)} {spec.dtype}", "same_name"))
        else:
            plan.mappings.append(Mapping_(name, name, "same_name", None))
    plan.recreated = [(name, "fill") for name in schema if name not in arrays and name in fillable]
    plan.missing = [(name, name) for name in schema if name not in arrays and name not in fillable]
    return plan


def _side_only(spec: ModelSpec, name: str, side: str) -> Rule | None:
    """The rule of a tensor only ``side`` has (torch's BN step counters), if ``name`` is one."""
    rule = next((r for r in spec.all_rules() if r.match(name, side) is not None), None)
    return rule if rule is not None and rule.template(other(side)) is None else None


def fit_side(spec: ModelSpec, arrays: dict, side: str, model, title: str | None = None) -> dict:
    """``fill_side_only``, checked first: every name, shape and dtype of ``model`` (metadata
    scalars set aside), or ConversionError with the grouped report."""
    schema = adapter(side).schema(model)
    fillable = {name for name in schema if name not in arrays and _side_only(spec, name, side) is not None}
    plan = same_side_plan(arrays, schema, side, fillable)
    arrays, notes = set_aside_metadata(plan, arrays)
    if notes:
        plan = same_side_plan(arrays, schema, side, fillable)
    if not plan.ok:
        raise failure(plan, spec, arrays, side, title or f"state does not fit {spec.name} ({side})", notes)
    return fill_side_only(spec, arrays, side, model)


def load_for(spec: ModelSpec, model, side: str, path: Path, allow_pickle: bool = False,
             key: str | None = None) -> dict:
    """Weights for ``model`` (a ``side`` model) from a checkpoint of either framework or a neutral
    ``.safetensors`` (torch naming): the other framework's file is converted by the spec's rules.
    Raises ConversionError (its first line names the file, the counts and the likely cause)."""
    source = side_of(path)
    arrays, _ = read_source(Path(path), source, allow_pickle, key)
    source = TORCH if source is None else source
    arrays, _ = to_native(spec, arrays, source)
    if source == side:
        return fit_side(spec, arrays, side, model, f"{path}: weights do not fit {spec.name} ({side})")
    return translate(spec, arrays, source, model, f"{path}: weights do not map onto {spec.name} ({source}->{side})")


def fill_side_only(spec: ModelSpec, arrays: dict, side: str, model) -> dict:
    """``arrays`` in ``side``'s own naming, completed with the tensors only ``side`` has (torch's
    BN step counters) from their rule's fill where absent, in the model's state order; names the
    model lacks are kept (``load_state`` then refuses them, strictly; ``fit_side`` checks first)."""
    schema = adapter(side).schema(model)
    out = {}
    for name, tensor in schema.items():
        if name in arrays:
            out[name] = arrays[name]
            continue
        rule = _side_only(spec, name, side)
        if rule is not None:
            out[name] = FILLS[rule.fill](tensor.shape)
    out.update({name: value for name, value in arrays.items() if name not in out})
    return out
