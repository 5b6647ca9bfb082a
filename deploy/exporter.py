"""The export pipeline behind deploy/export.py.

One call, ``export(...)``: resolve the weights (paddle ``.pdparams``, torch ``.pth`` converted
by convert/'s rule tables, or the embedded seeded reference), build both twins, compute the
dynamic models' outputs on two seeded fixtures of different batch and size, write every
artifact into a staging directory, reload each with the runtime that will serve it, compare
with the dynamic model under the spec's fp32 profile, and only if everything passes move the
staging directory into place (``deploy.yaml`` and ``export_report.json`` included). A failure
leaves no output directory behind (and an existing one untouched). Into an existing directory,
the export replaces a previous export and keeps the other files (``StagedDir``).

Artifacts (``--format paddle,onnx``):

* ``paddle``: ``model.json`` + ``model.pdiparams`` (Paddle 3's default PIR format) and
  ``legacy/model.pdmodel`` + ``legacy/model.pdiparams`` (+ ``.info``), the format Paddle
  Inference runs fastest with oneDNN (deploy/runtime.py).
* ``onnx``: ``model_paddle.onnx`` (paddle2onnx from a PIR export of the paddle twin) and
  ``model_torch.onnx`` (``torch.onnx.export`` of the torch reference), opset 17, dynamic N/H/W,
  with the class-axis Softmax decomposed for ONNX Runtime (deploy/onnx_tools.py).

Reduced precision (``precisions``, deploy/precision.py): ``int8`` adds ``model_int8.onnx``, the
static QDQ quantization of ``model_torch.onnx`` calibrated on the gate data's training windows
(deploy/quantize.py), run by ONNX Runtime and OpenVINO; ``bf16`` runs ``model_torch.onnx`` in
OpenVINO with the bf16 precision hint. Each (backend, precision) is accepted only if it passes
the accuracy gate (deploy/gate.py) on the gate scenes with trained weights: without ``weights``
the gate weights are used (trained once, cached under output/gate/). A failed gate writes nothing.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

from deploy import config as deploy_config
from rsport import tolerances
from rsport.compare import compare
from rsport.fixtures import image_batch
from rsport.io import sha256
from rsport.registry import ModelSpec
from rsport.rules import PADDLE, TORCH

log = logging.getLogger(__name__)

FORMATS = ("paddle", "onnx")
# fp32 parity profile of exports from trained weights (see export()): the engine-vs-dynamic-model
# profile of rsport/tolerances.py, calibrated on two noisy float32 sides
TRAINED_PROFILE = "fp32_prob_deploy"
# reduced precision -> (backend, artifact key) pairs it is exported and gated for
REDUCED = {"bf16": (("openvino", "onnx_torch"),), "int8": (("onnxruntime", "onnx_int8"), ("openvino", "onnx_int8"))}
DIVISOR = 32  # windows are zero-padded to this multiple (sliding window, rsport.sliding)
FIXTURE_SEED = 0
# Two fixtures per variant: batch 1 and 2, different (non-square, non-trained) sizes, so the
# reloaded artifacts prove dynamic batch, height and width.
FIXTURES = {"default": ((1, 192, 256), (2, 256, 160)), "tiny": ((1, 64, 96), (2, 96, 64))}
DFC_PALETTE = ((0, 100, 0), (160, 130, 40), (190, 180, 60), (150, 200, 90), (0, 150, 160), (230, 210, 20),
               (200, 30, 30), (240, 240, 250), (150, 120, 100), (20, 60, 220))


class ExportError(Exception):
    """Bad input (exit 2) or a failed check (exit 1); ``str()`` is one line."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# --- weights ----------------------------------------------------------------------------------
def resolve_weights(spec: ModelSpec, variant: str, weights: Path | None, seed: int | None = None,
                    allow_pickle: bool = False, with_torch: bool = True) -> tuple[dict | None, dict, dict]:
    """(torch state or None, paddle state, source description), both states as numpy, strictly
    mapped through the spec's rule table in whichever direction the source needs. With
    ``with_torch=False`` (a paddle-only export) torch is never imported: a ``.pth`` is refused."""
    from rsport import reference
    from rsport.frameworks import FrameworkMissing, adapter
    from rsport.weights import ConversionError, load_for, side_of

    pmodel = adapter(PADDLE).build(spec, variant)
    try:
        if weights is None:
            seed = reference.DEFAULT_SEED if seed is None else seed
            source = {"kind": "embedded seeded reference", "seed": seed,
                      "file": str(reference.path_for(spec, variant, seed))}
            paddle_state = reference.reference_arrays(spec, variant, PADDLE, pmodel, seed)
        else:
            suffix = weights.suffix.lower()
            if suffix not in (".pdparams", ".pth", ".pt", ".safetensors"):
                raise ExportError(f"{weights}: weights must be a paddle .pdparams, a torch .pth/.pt or a "
                                  f".safetensors file")
            if side_of(weights) == TORCH and not with_torch:
                raise ExportError(f"{weights}: a torch checkpoint needs torch; this export runs without it")
            source = {"kind": f"{side_of(weights) or 'neutral'} checkpoint", "path": str(weights),
                      "sha256": sha256(weights)}
            paddle_state = load_for(spec, pmodel, PADDLE, weights, allow_pickle)
        torch_state = None
        if with_torch:
            tmodel = adapter(TORCH).build(spec, variant)
            torch_state = (reference.reference_arrays(spec, variant, TORCH, tmodel, seed) if weights is None
                           else load_for(spec, tmodel, TORCH, weights, allow_pickle))
        return torch_state, paddle_state, source
    except ConversionError as err:
        raise ExportError(str(err).splitlines()[0] if str(err) else "conversion failed") from None
    except FrameworkMissing as err:
        raise ExportError(str(err)) from None


# --- staging ----------------------------------------------------------------------------------
REPORT_FILE = "export_report.json"


def _export_entries(folder: Path) -> set[str]:
    """Top-level names that the export in ``folder`` (if any) consists of: deploy.yaml, the report
    and the first path component of every file its deploy.yaml names."""
    names = {name for name in (deploy_config.FILENAME, REPORT_FILE) if (folder / name).exists()}
    try:
        artifacts = deploy_config.read(folder).data["artifacts"].values()
    except (deploy_config.DeployError, AttributeError, TypeError):
        return names  # no readable previous export: only its fixed files are its own
    for entry in artifacts:
        names.update(Path(entry[role]).parts[0] for role in ("model_file", "params_file", "info_file") if entry.get(role))
    return names


class StagedDir:
    """Build a directory next to its destination and move it into place on ``commit()``, only then;
    leaving without commit removes the staging. A new destination appears whole. An existing one
    keeps its other files (PaddleSeg's TIPC runner exports into the training save dir, next to the
    trained weights): a previous export in it (what its deploy.yaml names) and every name the new
    export writes are replaced, deploy.yaml last, so it never names a file not yet in place."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.final.with_name(f".{self.final.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()

    def commit(self) -> None:
        if not self.final.exists():
            os.replace(self.path, self.final)
            return
        new = {p.name for p in self.path.iterdir()}
        for name in sorted(new | _export_entries(self.final)):
            target = self.final / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        for name in sorted(new, key=lambda n: n == deploy_config.FILENAME):
            os.replace(self.path / name, self.final / name)
        self.path.rmdir()

    def __enter__(self) -> "StagedDir":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --- artifacts --------------------------------------------------------------------------------
def _artifact(runtime: str, fmt: str, model_file: str, params_file: str | None = None, **extra) -> dict:
    entry = {"runtime": runtime, "format": fmt, "model_file": model_file}
    if params_file:
        entry["params_file"] = params_file
    entry.update(extra)
    return entry


def _write_paddle(pmodel, spec, stage: Path, formats) -> tuple[dict, dict, dict]:
    """The paddle-side artifacts. Dygraph-to-static conversion takes seconds per program, so the
    PIR program is written once and serves both Paddle Inference (``model.json``) and paddle2onnx.
    Order matters: the legacy program is saved before the ONNX swaps (it keeps Paddle's native
    adaptive pooling, see paddle_export.export_ready), the PIR program after them."""
    from deploy import onnx_tools, paddle_export

    artifacts, swaps, notes = {}, {}, {}
    changed = paddle_export.export_ready(pmodel, onnx=False)
    if "paddle" in formats:
        log.info("%s: Paddle static, legacy format", spec.name)
        paddle_export.save_legacy(pmodel, spec, stage / "legacy" / "model")
        artifacts["paddle_legacy"] = _artifact("paddle", "legacy", "legacy/model.pdmodel", "legacy/model.pdiparams",
                                               info_file="legacy/model.pdiparams.info")
        swaps["paddle_legacy"] = list(changed)
    onnx = "onnx" in formats
    changed += paddle_export.export_ready(pmodel, onnx=onnx)
    pir = stage / "model" if "paddle" in formats else stage / ".p2o" / "model"
    pir.parent.mkdir(exist_ok=True)
    log.info("%s: Paddle static, PIR format", spec.name)
    paddle_export.save_pir(pmodel, spec, pir)
    if "paddle" in formats:
        artifacts["paddle_pir"] = _artifact("paddle", "pir", "model.json", "model.pdiparams")
        swaps["paddle_pir"] = changed
    if onnx:
        log.info("%s: ONNX through paddle2onnx", spec.name)
        scratch = stage / ".p2o"
        scratch.mkdir(exist_ok=True)
        retyped = paddle_export.retype_double_scales(Path(str(pir) + ".json"), scratch / "p2o.json")
        paddle_export.paddle2onnx(scratch / "p2o.json", Path(str(pir) + ".pdiparams"), stage / "model_paddle.onnx")
        shutil.rmtree(scratch)
        rewritten = onnx_tools.decompose_channel_softmax(stage / "model_paddle.onnx")
        artifacts["onnx_paddle"] = _artifact("onnxruntime", "onnx", "model_paddle.onnx",
                                             opset=paddle_export.ONNX_OPSET, source="paddle2onnx of the paddle twin")
        swaps["onnx_paddle"] = changed
        notes["onnx_paddle"] = {"retyped_double_attributes": retyped, "decomposed_channel_softmax": rewritten}
    return artifacts, swaps, notes


def _write_onnx_torch(tmodel, spec, stage: Path) -> tuple[dict, list[str], dict]:
    from deploy import onnx_tools, torch_export

    changed = torch_export.export_ready(tmodel)
    torch_export.save_onnx(tmodel, spec, stage / "model_torch.onnx")
    rewritten = onnx_tools.decompose_channel_softmax(stage / "model_torch.onnx")
    return {"onnx_torch": _artifact("onnxruntime", "onnx", "model_torch.onnx", opset=torch_export.ONNX_OPSET,
                                    source="torch.onnx.export (TorchScript exporter) of the torch reference")}, \
        changed, {"decomposed_channel_softmax": rewritten}


# Which runtime configurations each artifact is checked in (the ones deploy/infer.py offers).
CHECKS = {"paddle_legacy": ("onednn", "native", "openvino"), "paddle_pir": ("onednn", "native"),
          "onnx_paddle": ("default",), "onnx_torch": ("default", "openvino")}


def _check(stage: Path, key: str, entry: dict, inputs: list, expected: list, tol, threads: int) -> dict:
    from deploy import runtime

    results = {}
    for label in CHECKS[key]:
        predictor = runtime.for_artifact(stage, entry, threads, engine=label,
                                         backend="openvino" if label == "openvino" else None)
        rows = []
        for x, ref in zip(inputs, expected):
            diff = compare("prob", predictor(x), ref, tol).as_dict()
            diff["input"] = list(x.shape)
            rows.append(diff)
        results[label] = {"passed": all(r["passed"] for r in rows), "fixtures": rows}
        del predictor
    return results


def _tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("paddlepaddle", "torch", "onnx", "onnxruntime", "paddle2onnx", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def deploy_yaml(spec: ModelSpec, variant: str, artifacts: dict, source: dict, reduced: dict | None = None) -> dict:
    from rsport.data.labels import DFC_CLASSES, ISAID_CLASSES, ISAID_PALETTE

    isaid = spec.dataset == "isaid"
    classes, palette = (ISAID_CLASSES, ISAID_PALETTE) if isaid else (DFC_CLASSES, DFC_PALETTE)
    runtimes = {}
    if "paddle_legacy" in artifacts:
        runtimes["paddle"] = {"artifact": "paddle_legacy", "engine": "onednn"}
        runtimes["paddle_openvino"] = {"artifact": "paddle_legacy", "engine": "openvino",
                                       "note": "Paddle Inference with its built-in OpenVINO engine, fp32"}
    if "onnx_paddle" in artifacts:
        runtimes["onnxruntime"] = {"artifact": "onnx_paddle"}
    if "onnx_torch" in artifacts:
        runtimes["openvino"] = {"artifact": "onnx_torch", "note": "the OpenVINO runtime, fp32 precision hint"}
    return {
        "format_version": deploy_config.FORMAT_VERSION,
        "model": spec.name,
        "variant": variant,
        "weights": source,
        "input": {
            "name": "x", "shape": list(spec.export_input_spec()), "layout": "NCHW", "dtype": "float32",
            "channels": spec.in_channels,
            "reader": "rgb8" if isaid else "s1_db",
            "reader_note": ("8-bit RGB image (PNG/JPEG/TIFF) or an RGB GeoTIFF, values 0..255" if isaid else
                            "2-band GeoTIFF VV, VH in dB: NaN -> 0, clip [-25, 0], /25 + 1, x 255 (0..255 scale)"),
            "mean": [float(m) for m in spec.mean], "std": [float(s) for s in spec.std],
            "normalize": "(x - mean) / std on the 0..255 scale, per channel, float32",
            "divisor": DIVISOR,
        },
        "output": {"name": "prob", "op": "probabilities", "dtype": "float32",
                   "description": "class probabilities [N, num_classes, H, W] (summing to 1); argmax gives class ids",
                   "num_classes": spec.num_classes, "classes": list(classes),
                   "palette": [list(c) for c in palette]},
        "sliding_window": {"window": list(spec.input_size), "stride": [s * 4 // 7 for s in spec.input_size]},
        "artifacts": artifacts,
        "runtimes": runtimes,
        **({"reduced_precision": reduced} if reduced else {}),
    }


def check_precisions(precisions, formats) -> dict:
    """ExportError (exit 2) for a precision that cannot be exported here; returns the ISA path
    (deploy/precision.py) of each reduced precision on this CPU."""
    from deploy import precision as prec

    paths = {}
    for p in precisions:
        if p not in prec.PRECISIONS:
            raise ExportError(f"unknown precision {p!r}; known: {', '.join(prec.PRECISIONS)}")
        if p == "fp32":
            continue
        if "onnx" not in formats:
            raise ExportError(f"--precision {p} is built from the ONNX export: add onnx to --format")
        try:
            paths[p] = prec.check_isa(p)
        except prec.PrecisionError as err:
            raise ExportError(str(err).replace("; --allow-fallback runs fp32 instead", "")) from None
    return paths


def export(spec: ModelSpec, out: Path, *, variant: str = "default", weights: Path | None = None,
           formats=FORMATS, seed: int | None = None, allow_pickle: bool = False, threads: int = 2,
           with_torch: bool | None = None, precisions=("fp32",), gate_data: Path | None = None,
           calibration=None) -> dict:
    """Export, check, gate and write; returns the report. Raises ExportError.

    Args:
        with_torch: torch is used for ``model_torch.onnx`` and the twins check (paddle dygraph vs
            torch eager) when ``onnx`` is among the formats and torch can be imported; False (or
            torch missing) exports from paddle alone and says so in the report.
        precisions: ``fp32`` and any of ``bf16``, ``int8`` (the fp32 artifacts are always written:
            they are the reference and the fallback); the reduced ones are built from
            ``model_torch.onnx`` and gated against torch eager, so they need torch.
        gate_data: data root of the gate (val split) and of the int8 calibration (train split);
            default: the embedded sample data.
        calibration: int8 calibration windows (normalized ``[C, h, w]``) instead of the gate
            data's training windows (tests use it to build a mis-calibrated model).
    """
    from rsport.frameworks import adapter, available

    start = time.perf_counter()
    reduced = [p for p in precisions if p != "fp32"]
    isa = check_precisions(precisions, formats)
    if with_torch is None:
        with_torch = "onnx" in formats and available(TORCH)
    if reduced and not with_torch:
        raise ExportError(f"--precision {','.join(reduced)} is built from model_torch.onnx and gated against torch "
                          f"eager: it needs torch (and the onnx format)")
    pb = adapter(PADDLE)
    pb.set_threads(threads)
    gate_weights = None
    if reduced and weights is None:
        from deploy import gate

        try:
            weights, gate_weights = gate.trained_weights(spec, variant, data=gate_data)
        except gate.GateError as err:
            raise ExportError(str(err), exit_code=1) from None
        log.info("%s: --precision %s is gated on trained weights: %s (%s)", spec.name, ",".join(reduced), weights,
                 gate_weights["command"])
    torch_state, paddle_state, source = resolve_weights(spec, variant, weights, seed, allow_pickle, with_torch)
    if gate_weights is not None:
        source["gate_training"] = gate_weights
    pmodel = pb.build(spec, variant)
    pb.load_state(pmodel, paddle_state)
    tol = tolerances.get(spec.profile_overrides.get(("float32", "deploy"), spec.tolerance))
    if weights is not None and tol.atol < tolerances.get(TRAINED_PROFILE).atol:
        # trained weights give sharper logits, so the same float32 rounding moves probabilities
        # more: measured on the factseg50 gate weights, ONNX Runtime vs torch eager 1.3e-4..1.4e-4
        # (both ONNX files; Paddle Inference 3.7e-5), where the seeded reference gives 3e-5
        tol = tolerances.get(TRAINED_PROFILE)
    inputs = [image_batch(spec, (n, spec.in_channels, h, w), FIXTURE_SEED + i)
              for i, (n, h, w) in enumerate(FIXTURES[variant])]
    expected = {PADDLE: [pb.forward(pmodel, spec, x)["prob"] for x in inputs]}
    twin_tol = tolerances.get(spec.tolerance)
    twins = {"passed": True, "profile": twin_tol.name, "fixtures": [],
             "note": "skipped: export without torch (no model_torch.onnx, no twins check)"}
    tmodel = None
    if with_torch:
        tb = adapter(TORCH)
        tb.set_threads(threads)
        tmodel = tb.build(spec, variant)
        tb.load_state(tmodel, torch_state)
        expected[TORCH] = [tb.forward(tmodel, spec, x)["prob"] for x in inputs]
        rows = [compare("prob", p, t, twin_tol).as_dict() for p, t in zip(expected[PADDLE], expected[TORCH])]
        twins = {"passed": all(d["passed"] for d in rows), "profile": twin_tol.name, "fixtures": rows}
    report = {"model": spec.name, "variant": variant, "weights": source, "formats": list(formats),
              "tolerance": {"profile": tol.name, "atol": tol.atol, "rtol": tol.rtol},
              "fixtures": [list(x.shape) for x in inputs], "fixture_seed": FIXTURE_SEED,
              "twins": twins, "artifacts": {}, "export_ready_swaps": {}, "onnx_rewrites": {},
              "versions": _tool_versions(), "precisions": list(precisions)}
    with StagedDir(out) as stage:
        artifacts = {}
        log.info("%s: writing artifacts (%s)", spec.name, ", ".join(formats))
        try:
            written, swaps, notes = _write_paddle(pmodel, spec, stage.path, formats)
            artifacts.update(written)
            report["export_ready_swaps"].update(swaps)
            report["onnx_rewrites"].update(notes)
            if "onnx" in formats and tmodel is not None:
                log.info("%s: ONNX through torch.onnx.export", spec.name)
                written, changed, notes = _write_onnx_torch(tmodel, spec, stage.path)
                artifacts.update(written)
                report["export_ready_swaps"]["onnx_torch"] = changed
                report["onnx_rewrites"]["onnx_torch"] = notes
        except Exception as err:  # noqa: BLE001 - any exporter failure is reported as one line
            message = str(err).strip().splitlines()
            raise ExportError(f"{spec.name}: export failed: {type(err).__name__}: "
                              f"{message[-1] if message else ''}"[:400], exit_code=1) from err
        for key, entry in artifacts.items():
            log.info("%s: checking %s", spec.name, key)
            side = TORCH if key == "onnx_torch" else PADDLE
            checks = _check(stage.path, key, entry, inputs, expected[side], tol, threads)
            entry["sha256"] = {role: sha256(stage.path / entry[role]) for role in ("model_file", "params_file")
                               if role in entry}
            report["artifacts"][key] = {"files": [entry[r] for r in ("model_file", "params_file", "info_file")
                                                  if r in entry],
                                        "reference": f"{side} dynamic model", "checks": checks,
                                        "passed": all(c["passed"] for c in checks.values())}
        for entry in artifacts.values():
            entry.setdefault("precision", "fp32")
        report["passed"] = report["twins"]["passed"] and all(a["passed"] for a in report["artifacts"].values())
        reduced_yaml = None
        if reduced and report["passed"]:
            reduced_yaml = _reduced(spec, variant, stage.path, artifacts, tmodel, reduced, isa, gate_data,
                                    calibration, threads, report)
            report["passed"] = all(g["passed"] for g in report["gate"]["results"].values())
        report["seconds"] = round(time.perf_counter() - start, 1)
        deploy_config.write(stage.path / deploy_config.FILENAME,
                            deploy_yaml(spec, variant, artifacts, source, reduced_yaml))
        (stage.path / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        if not report["passed"]:
            raise ExportError(f"{spec.name}: {summary_failures(report)}; nothing written", exit_code=1)
        stage.commit()
    return report


def _reduced(spec, variant, stage: Path, artifacts: dict, tmodel, reduced, isa, gate_data, calibration,
             threads: int, report: dict) -> dict:
    """Write the reduced-precision artifacts into ``stage``, gate every (backend, precision) on the
    gate scenes against the torch fp32 model, record the figures in ``report["gate"]``; returns
    deploy.yaml's ``reduced_precision`` section (only gated entries)."""
    from deploy import gate, runtime
    from deploy.precision import cpu_info, isa_report
    from deploy.quantize import quantize_int8
    from rsport.frameworks import adapter

    tb = adapter(TORCH)
    grid = deploy_yaml(spec, variant, {}, {})["sliding_window"]
    window, stride = grid["window"][0], grid["stride"][0]
    val = gate.scenes(spec, "val", gate_data)
    log.info("%s: gate: fp32 reference (torch) on %d scenes", spec.name, len(val))
    reference = gate.predict_all(lambda x: tb.forward(tmodel, spec, x)["prob"], val, spec.num_classes, window, stride,
                                 DIVISOR)
    cpu = cpu_info()
    report["gate"] = {"scenes": [s.name for s in val], "data": str(gate_data or "embedded sample data (val split)"),
                      "window": window, "stride": stride, "reference": "torch eager fp32, same weights",
                      "cpu": cpu["model"], "isa": isa_report(cpu["flags"]), "results": {}}
    section = {}
    for precision in reduced:
        if precision == "int8":
            windows = calibration
            if windows is None:
                windows = gate.calibration_windows(spec, gate_data)
            log.info("%s: int8 quantization of model_torch.onnx (%d calibration windows)", spec.name, len(windows))
            info = quantize_int8(stage / "model_torch.onnx", stage / "model_int8.onnx", windows, divisor=DIVISOR)
            artifacts["onnx_int8"] = _artifact("onnxruntime", "onnx", "model_int8.onnx", precision="int8",
                                               source="static QDQ quantization of model_torch.onnx",
                                               quantization=info)
            artifacts["onnx_int8"]["sha256"] = {"model_file": sha256(stage / "model_int8.onnx")}
            report["artifacts"]["onnx_int8"] = {"files": ["model_int8.onnx"], "reference": "gate (fp32 class map)",
                                                "quantization": info, "passed": True, "checks": {}}
        for backend_name, key in REDUCED[precision]:
            log.info("%s: gate %s %s (%s)", spec.name, backend_name, precision, key)
            predictor = runtime.for_artifact(stage, artifacts[key], threads, backend=backend_name, precision=precision)
            probs = gate.predict_all(predictor, val, spec.num_classes, window, stride, DIVISOR)
            del predictor
            figures = gate.judge(precision, reference, probs, val, spec.num_classes, spec.ignore_index)
            figures.update(artifact=key, backend=backend_name, isa_path=isa[precision])
            report["gate"]["results"][f"{backend_name} {precision}"] = figures
            log.info("%s: gate %s %s: %s %s", spec.name, backend_name, precision,
                     "PASS" if figures["passed"] else "FAIL", gate.summary_line(figures))
            section.setdefault(precision, {})[backend_name] = {
                "artifact": key, **({"hint": "bf16"} if precision == "bf16" else {}),
                "gate": {k: figures[k] for k in ("agreement", "widest_disagreement_margin", "margin_bound",
                                                 "miou_fp32", "miou", "miou_delta_points", "isa_path")}}
    return section


def summary_failures(report: dict) -> str:
    failed = []
    for name, figures in report.get("gate", {}).get("results", {}).items():
        if not figures["passed"]:
            failed.append(f"gate {name}: " + "; ".join(figures["failed"]))
    if not report["twins"]["passed"]:
        failed.append("twins disagree")
    for key, art in report["artifacts"].items():
        for label, check in art["checks"].items():
            for row in check["fixtures"]:
                if not row["passed"]:
                    failed.append(f"{key} ({label}) on {row['input']}: " +
                                  (row["problem"] or f"max_abs {row['max_abs']:.3g} > {row['bound']:.3g}"))
    return "; ".join(failed) or "passed"


def summary(report: dict, out: Path) -> str:
    """One screen for stdout."""
    lines = [f"{report['model']} ({report['variant']}): export {'OK' if report['passed'] else 'FAILED'} "
             f"in {report['seconds']:.0f} s -> {out}",
             f"  weights   {report['weights'].get('path', report['weights']['kind'])}",
             f"  profile   {report['tolerance']['profile']} (max_abs <= {report['tolerance']['atol']:g}"
             f" + {report['tolerance']['rtol']:g} x scale), fixtures {report['fixtures']}"]
    if report["twins"]["fixtures"]:
        worst = max(d["max_abs"] for d in report["twins"]["fixtures"])
        lines.append(f"  {'twins':<24} max_abs {worst:.2e}  (paddle dygraph vs torch eager)")
    else:
        lines.append(f"  {'twins':<24} {report['twins']['note']}")
    for key, art in report["artifacts"].items():
        for label, check in art["checks"].items():
            if not check["fixtures"]:
                continue
            worst = max(d["max_abs"] for d in check["fixtures"])
            lines.append(f"  {key + ' ' + label:<24} max_abs {worst:.2e}  {'PASS' if check['passed'] else 'FAIL'}"
                         f"  vs {art['reference']}  [{', '.join(art['files'])}]")
    if "gate" in report:
        from deploy.gate import summary_line

        lines.append(f"  gate on {len(report['gate']['scenes'])} scenes ({report['gate']['data']}), "
                     f"CPU {report['gate']['cpu']}")
        for name, figures in report["gate"]["results"].items():
            lines.append(f"  {name:<24} {'PASS' if figures['passed'] else 'FAIL'}  {summary_line(figures)}"
                         f"  [{figures['isa_path']}]")
    return "\n".join(lines)
