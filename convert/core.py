"""The conversion engine behind convert/torch2paddle.py and convert/paddle2torch.py.

One function, ``convert``, for both directions: read and unwrap the source, plan the rename as
a checked bijection from the registry's rule table, write the target and its manifest through a
staged (all-or-nothing) write, reload the written file and prove forward parity of the twins in
float32 and float64 before anything is renamed into place.
"""
from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from rsport import tolerances
from rsport.checkpoint import CheckpointError, hints_for, unwrap
from rsport.compare import compare
from rsport.fixtures import image_batch
from rsport.io import Staged, sha256
from rsport.registry import ModelSpec
from rsport.rules import PADDLE, TORCH, apply_naming, apply_plan, format_report, make_plan

log = logging.getLogger(__name__)

BACKENDS = {TORCH: "torch_ref.backend", PADDLE: "paddle_impl.backend"}
OUTPUT_DIR = Path("output") / "weights"
FIXTURE_SEED = 0
MAX_KEPT_SIZE = 16  # dropped tensors up to this size are kept in the manifest for the way back


class ConversionError(RuntimeError):
    """Bad input or a failed check; ``str()`` is the whole report, the first line a summary."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def backend(side: str):
    return importlib.import_module(BACKENDS[side])


def other(side: str) -> str:
    return PADDLE if side == TORCH else TORCH


def default_path(spec: ModelSpec, variant: str, side: str, tag: str = "") -> Path:
    suffix = "" if variant == "default" else f"_{variant}"
    return OUTPUT_DIR / f"{spec.name}{suffix}{tag}{backend(side).WEIGHTS_SUFFIX}"


def read_source(path: Path, side: str, allow_pickle: bool = False) -> tuple[dict, list[str]]:
    """Load and unwrap a checkpoint into name -> numpy array, or raise ConversionError."""
    if not path.is_file():
        raise ConversionError(f"no such file: {path}")
    fw = backend(side)
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


def detect_naming(spec: ModelSpec, keys, naming: str, side: str = PADDLE) -> tuple[str, str | None]:
    """Pick the naming of a ``side`` source (the spec's namings for that side); reported, never silent."""
    if naming != "auto":
        return naming, None
    for name, table in spec.namings(side).items():
        hits = sum(any(m in k for m in table.markers) for k in keys)
        if hits:
            return name, f"detected {name} naming ({hits} keys contain {' or '.join(table.markers)})"
    return "native", None


@dataclass
class Result:
    model: str
    direction: str
    source: str
    target: str
    manifest: str
    notes: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)
    seconds: float = 0.0


def forward_parity(spec: ModelSpec, variant: str, torch_arrays: dict, paddle_arrays: dict,
                   seed: int = FIXTURE_SEED) -> dict:
    """Eval-mode forward of both twins on the seeded fixture in float32 and float64."""
    tb, pb = backend(TORCH), backend(PADDLE)
    tmodel, pmodel = tb.build(spec, variant), pb.build(spec, variant)
    tb.load_state(tmodel, torch_arrays)
    pb.load_state(pmodel, paddle_arrays)
    shape = spec.fixture_shape(variant)
    parity = {}
    for dtype, profile in (("float32", spec.tolerance), ("float64", "fp64")):
        x = image_batch(spec, shape, seed, dtype)
        expected = tb.forward(tb.cast(tmodel, dtype), spec, x)
        actual = pb.forward(pb.cast(pmodel, dtype), spec, x)
        tol = tolerances.get(profile)
        parity[dtype] = {"profile": profile, "fixture": list(shape), "seed": seed,
                         "outputs": {name: compare(name, actual[name], expected[name], tol).as_dict()
                                     for name in spec.eval_outputs}}
    return parity


def convert(spec: ModelSpec, source_side: str, src: Path, dst: Path, variant: str = "default",
            naming: str = "auto", allow_pickle: bool = False, source_note: str | None = None) -> Result:
    """Convert ``src`` (a ``source_side`` checkpoint of ``spec``) into ``dst``; raise ConversionError."""
    start = time.perf_counter()
    target_side = other(source_side)
    arrays, notes = read_source(src, source_side, allow_pickle)
    if source_note:
        notes.insert(0, source_note)
    naming, naming_note = detect_naming(spec, arrays, naming, source_side)
    if naming_note:
        notes.append(naming_note)
    if naming != "native":
        arrays, naming_notes = apply_naming(arrays, spec.namings(source_side)[naming])
        notes.extend(naming_notes)
    plan, target, rules = plan_for(spec, arrays, source_side, backend(target_side).build(spec, variant))
    if not plan.ok:
        title = f"{src} does not convert to {spec.name} ({variant}, {plan.direction})"
        raise ConversionError(format_report(plan, title, notes + hints_for(plan, spec.name, arrays)))
    restore = _restorable(src, plan, notes) if plan.recreated else None
    converted = apply_plan(plan, arrays, target, rules, restore)
    result = Result(spec.name, plan.direction, str(src), str(dst), str(dst) + ".manifest.json", notes,
                    plan.counts(), plan.rules_used())
    with Staged() as staged:
        tmp = staged.path(dst)
        backend(target_side).save_file(converted, tmp)
        written, _ = read_source(tmp, target_side)  # verify what is on disk, not what is in memory
        torch_arrays, paddle_arrays = (arrays, written) if source_side == TORCH else (written, arrays)
        result.parity = forward_parity(spec, variant, torch_arrays, paddle_arrays)
        result.seconds = round(time.perf_counter() - start, 2)
        dropped = {name: arrays[name] for name, _ in plan.dropped if arrays[name].size <= MAX_KEPT_SIZE}
        staged.write_json(result.manifest, manifest(spec, variant, result, src, tmp, dropped))
        failed = [f"{dtype} {name}: " + (d["problem"] or f"max_abs {d['max_abs']:.3g} > {d['bound']:.3g}")
                  for dtype, p in result.parity.items() for name, d in p["outputs"].items() if not d["passed"]]
        if failed:
            raise ConversionError(f"converted {spec.name} but the twins disagree, nothing written: "
                                  + "; ".join(failed), exit_code=1)
        staged.commit()
    return result


def plan_for(spec: ModelSpec, arrays: dict, source_side: str, target_model):
    """The checked rename plan of a state (name -> numpy) onto ``target_model`` (other framework)."""
    target = backend(other(source_side)).schema(target_model)
    rules = spec.all_rules()
    plan = make_plan({k: (v.shape, str(v.dtype)) for k, v in arrays.items()}, target, rules, source_side, spec.ignore)
    return plan, target, rules


def translate(spec: ModelSpec, arrays: dict, source_side: str, target_model) -> dict:
    """Map a state (name -> numpy) onto ``target_model``'s names with the spec's rules, strictly."""
    plan, target, rules = plan_for(spec, arrays, source_side, target_model)
    if not plan.ok:
        raise ConversionError(format_report(plan, f"state does not map onto {spec.name}",
                                            hints_for(plan, spec.name, arrays)))
    return apply_plan(plan, arrays, target, rules)


def _restorable(src: Path, plan, notes: list[str]) -> dict | None:
    """Values of tensors the other framework has no place for (BN step counters), kept by the
    manifest of the conversion that produced ``src``, so that a round trip is bit-exact."""
    companion = Path(str(src) + ".manifest.json")
    if companion.is_file():
        saved = json.loads(companion.read_text())
        if saved.get("target", {}).get("sha256") == sha256(src):
            kept = saved.get("dropped_values", {})
            names = [name for name, _ in plan.recreated if name in kept]
            notes.append(f"restored {len(names)}/{len(plan.recreated)} dropped tensors from {companion}")
            return {name: kept[name] for name in names}
        notes.append(f"ignored {companion}: it describes another file (sha256 differs)")
    rules = sorted({rule for _, rule in plan.recreated})
    notes.append(f"recreated {len(plan.recreated)} tensors with their rule's fill ({', '.join(rules)}): "
                 f"no manifest of the source's conversion beside it")
    return None


def manifest(spec: ModelSpec, variant: str, result: Result, src: Path, written: Path,
             dropped: dict) -> dict:
    return {
        "model": spec.name, "variant": variant, "direction": result.direction,
        "source": {"path": str(src), "sha256": sha256(src)},
        "target": {"path": result.target, "sha256": sha256(written)},
        "notes": result.notes, "counts": result.counts, "rules": result.rules,
        "parity": result.parity, "seconds": result.seconds,
        "dropped_values": {name: value.tolist() for name, value in dropped.items()},
    }


def summary(result: Result) -> str:
    """One screen for stdout."""
    c = result.counts
    lines = [f"{result.model}: {result.direction} OK ({result.seconds:.1f} s)",
             f"  source    {result.source}"]
    lines += [f"  note      {n}" for n in result.notes]
    lines.append(f"  tensors   {c['source']} source -> {c['target']} target: {c['mapped']} mapped, "
                 f"{c['dropped']} dropped, {c['recreated']} recreated, {c['ignored']} ignored")
    lines.append("  rules     " + ", ".join(f"{r} x{n}" for r, n in result.rules.items()))
    lines.append(f"  wrote     {result.target}")
    for dtype, p in result.parity.items():
        for name, d in p["outputs"].items():
            lines.append(f"  parity    {dtype:<8} {name}: max_abs {d['max_abs']:.2e}  max_rel {d['max_rel']:.2e}  "
                         f"<= {d['bound']:.0e} ({p['profile']}, fixture {p['fixture']})  "
                         f"{'PASS' if d['passed'] else 'FAIL'}")
    lines.append(f"  manifest  {result.manifest}")
    return "\n".join(lines)


def write_reference(spec: ModelSpec, variant: str, seed: int | None = None) -> tuple[Path, str]:
    """Build the embedded default torch reference and save it (staged) under output/weights/."""
    from torch_ref.reference_weights import DEFAULT_SEED, build_reference

    seed = DEFAULT_SEED if seed is None else seed
    path = default_path(spec, variant, TORCH, "_reference")
    log.info("building the embedded %s reference (%s, seed %d)...", spec.name, variant, seed)
    model = build_reference(spec, variant, seed)
    tb = backend(TORCH)
    with Staged() as staged:
        tb.save_file(tb.state_arrays(model), staged.path(path))
        staged.commit()
    return path, f"embedded default: seeded torch reference (seed {seed}, randomized BN statistics)"
