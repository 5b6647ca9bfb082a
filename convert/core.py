"""The conversion engine behind convert/torch2paddle.py and convert/paddle2torch.py.

One function, ``convert``, for both directions: read and unwrap the source, plan the rename as
a checked bijection from the registry's rule table, write the target and its manifest through a
staged (all-or-nothing) write, reload the written file and prove forward parity of the twins in
float32 and float64 before anything is renamed into place.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from rsport import reference, tolerances
from rsport.compare import compare
from rsport.fixtures import image_batch
from rsport.frameworks import adapter as backend, other
from rsport.io import PATH_ERRNOS, Staged, check_output, describe_os_error, sha256
from rsport.registry import ModelSpec
from rsport.rules import PADDLE, TORCH, apply_plan, format_report
from rsport.weights import (ConversionError, failure, fill_side_only, plan_checked, read_source,  # noqa: F401
                            to_native, translate)  # ConversionError and translate are re-exported for scripts

log = logging.getLogger(__name__)

OUTPUT_DIR = Path("output") / "weights"
FIXTURE_SEED = 0
MAX_KEPT_SIZE = 16  # dropped tensors up to this size are kept in the manifest for the way back


def default_path(spec: ModelSpec, variant: str, side: str, tag: str = "") -> Path:
    suffix = "" if variant == "default" else f"_{variant}"
    return OUTPUT_DIR / f"{spec.name}{suffix}{tag}{backend(side).WEIGHTS_SUFFIX}"


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
    tb.load_state(tmodel, fill_side_only(spec, torch_arrays, TORCH, tmodel))
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


def check_destination(dst: Path) -> None:
    """Refuse, before any work, a ``--dst`` that cannot be written (ConversionError, exit 2)."""
    from rsport.io import OutputError

    try:
        check_output(dst, "file", "--dst")
        check_output(Path(str(dst) + ".manifest.json"), "file", "--dst's manifest")
    except OutputError as err:
        raise ConversionError(str(err)) from None


def convert(spec: ModelSpec, source_side: str, src: Path, dst: Path, variant: str = "default",
            naming: str = "auto", allow_pickle: bool = False, source_note: str | None = None,
            key: str | None = None) -> Result:
    """Convert ``src`` (a ``source_side`` checkpoint of ``spec``) into ``dst``; raise ConversionError.
    ``key``: the checkpoint entry that holds the weights (default: the automatic choice)."""
    start = time.perf_counter()
    target_side = other(source_side)
    check_destination(dst)
    arrays, notes = read_source(src, None if str(src).endswith(".safetensors") else source_side, allow_pickle, key)
    if source_note:
        notes.insert(0, source_note)
    arrays, naming_notes = to_native(spec, arrays, source_side, naming)
    notes.extend(naming_notes)
    plan, target, rules, arrays, aside = plan_checked(spec, arrays, source_side,
                                                      backend(target_side).build(spec, variant))
    notes.extend(aside)
    if not plan.ok:
        title = f"{src} does not convert to {spec.name} ({variant}, {plan.direction})"
        raise failure(plan, spec, arrays, source_side, title, notes)
    restore = _restorable(src, plan, notes) if plan.recreated else None
    converted = apply_plan(plan, arrays, target, rules, restore)
    result = Result(spec.name, plan.direction, str(src), str(dst), str(dst) + ".manifest.json", notes,
                    plan.counts(), plan.rules_used())
    try:
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
    except OSError as err:  # the checks passed, yet writing failed (a full disk, a folder changed meanwhile)
        raise ConversionError(f"writing {dst} failed, nothing written: {describe_os_error(err)}",
                              exit_code=2 if err.errno in PATH_ERRNOS else 1) from None
    return result


def _restorable(src: Path, plan, notes: list[str]) -> dict | None:
    """Values of tensors the other framework has no place for (BN step counters), kept by the
    manifest of the conversion that produced ``src``, so that a round trip is bit-exact."""
    companion = Path(str(src) + ".manifest.json")
    why = "no manifest of the source's conversion beside it"
    if companion.is_file():
        saved = json.loads(companion.read_text())
        if saved.get("target", {}).get("sha256") != sha256(src):
            why = f"{companion} describes another file (sha256 differs)"
        else:
            kept = saved.get("dropped_values", {})
            names = [name for name, _ in plan.recreated if name in kept]
            if names:
                notes.append(f"restored {len(names)}/{len(plan.recreated)} dropped tensors from {companion}")
                return {name: kept[name] for name in names}
            why = f"{companion} kept no values for them (its own source had none)"
    rules = sorted({rule for _, rule in plan.recreated})
    notes.append(f"recreated {len(plan.recreated)} tensors with their rule's fill ({', '.join(rules)}): {why}")
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
    """The embedded default reference (rsport/reference.py: one framework-neutral .safetensors
    file, built on first use) as a conversion source."""
    seed = reference.DEFAULT_SEED if seed is None else seed
    try:
        return reference.ensure(spec, variant, seed, TORCH), reference.describe(seed)
    except OSError as err:
        raise ConversionError(f"cannot write the embedded reference {reference.path_for(spec, variant, seed)}: "
                              f"{describe_os_error(err)}", exit_code=2 if err.errno in PATH_ERRNOS else 1) from None
