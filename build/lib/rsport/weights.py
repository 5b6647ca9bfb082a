"""Weight translation between the frameworks: read and unwrap a checkpoint, plan the rename as a
checked bijection from the rule table, apply it. Framework-neutral: states are ``name -> numpy``
dicts; the frameworks are reached through their adapters (rsport.frameworks) only to read a
framework's own file format or a model's schema.

Files: ``.pth``/``.pt`` (torch), ``.pdparams`` (paddle) and ``.safetensors`` (framework-neutral,
read with numpy alone; the embedded reference weights use it).
"""
from __future__ import annotations

from pathlib import Path

from rsport.checkpoint import CheckpointError, hints_for, unwrap
from rsport.frameworks import FrameworkMissing, adapter, other
from rsport.registry import ModelSpec
from rsport.rules import FILLS, PADDLE, TORCH, Naming, Rule, apply_naming, apply_plan, format_report, make_plan

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


def read_source(path: Path, side: str | None, allow_pickle: bool = False) -> tuple[dict, list[str]]:
    """Load and unwrap a checkpoint into name -> numpy array, or raise ConversionError.
    ``side`` is the framework that wrote it (None: a framework-neutral ``.safetensors``)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"no such file: {path}")
    if side is None or str(path).lower().endswith(NEUTRAL_SUFFIX):
        try:
            return read_neutral(path), []
        except Exception as err:  # noqa: BLE001 - arbitrary bytes make the reader raise anything
            raise ConversionError(f"{path} is not a readable safetensors file: {type(err).__name__}: "
                                  f"{str(err).strip()[:120]}") from None
    try:
        fw = adapter(side)
    except FrameworkMissing as err:
        raise ConversionError(f"{path}: reading a {side} checkpoint {str(err)[len('this '):]}") from None
    try:
        raw = fw.load_file(str(path), allow_pickle)
    except Exception as err:  # noqa: BLE001 - arbitrary bytes can make an unpickler raise anything
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"{path} is not a readable {side} checkpoint (corrupt, truncated or another "
                              f"format): {type(err).__name__}: {first[:120]}") from None
    try:
        state, notes = unwrap(raw, fw.is_tensor)
    except CheckpointError as err:
        raise ConversionError(f"{path} is not a {side} state_dict: {err}") from None
    return fw.to_numpy(state), notes


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


def translate(spec: ModelSpec, arrays: dict, source_side: str, target_model) -> dict:
    """Map a state (name -> numpy) onto ``target_model``'s names with the spec's rules, strictly."""
    plan, target, rules = plan_for(spec, arrays, source_side, target_model)
    if not plan.ok:
        raise ConversionError(format_report(plan, f"state does not map onto {spec.name}",
                                            hints_for(plan, spec.name, arrays)))
    return apply_plan(plan, arrays, target, rules)


def load_for(spec: ModelSpec, model, side: str, path: Path, allow_pickle: bool = False) -> dict:
    """Weights for ``model`` (a ``side`` model) from a checkpoint of either framework or a neutral
    ``.safetensors`` (torch naming): the other framework's file is converted by the spec's rules.
    Raises ConversionError."""
    source = side_of(path)
    arrays, _ = read_source(Path(path), source, allow_pickle)
    source = TORCH if source is None else source
    arrays, _ = to_native(spec, arrays, source)
    if source == side:
        return fill_side_only(spec, arrays, side, model)
    return translate(spec, arrays, source, model)


def fill_side_only(spec: ModelSpec, arrays: dict, side: str, model) -> dict:
    """``arrays`` in ``side``'s own naming, completed with the tensors only ``side`` has (torch's
    BN step counters) from their rule's fill where absent, in the model's state order; names the
    model lacks are kept (``load_state`` then refuses them, strictly)."""
    schema = adapter(side).schema(model)
    out = {}
    for name, tensor in schema.items():
        if name in arrays:
            out[name] = arrays[name]
            continue
        rule = next((r for r in spec.all_rules() if r.match(name, side) is not None), None)
        if rule is not None and rule.template(other(side)) is None:
            out[name] = FILLS[rule.fill](tensor.shape)
    out.update({name: value for name, value in arrays.items() if name not in out})
    return out

