"""CPU latency, FLOPs, GFLOP/s, peak RSS and whole-scene throughput per backend; see --help."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = """examples:
  python deploy/benchmark.py                                   # factseg50, 512 and 896, every backend
  python deploy/benchmark.py --models factseg50 farseg50 --runs 7
  python deploy/benchmark.py --backends torch_eager,pi_onednn,ort_paddle --sizes 896 --scene 0
  python deploy/benchmark.py --backends torch_eager,ov_bf16,ort_int8,ov_int8 --sizes 896 --scene 0 --no-rss

backends (deploy backends marked *):
  torch_eager      the torch reference, torch.inference_mode()
  paddle_dygraph   the paddle twin, paddle.no_grad()
  pi_onednn      * Paddle Inference, legacy model.pdmodel, oneDNN on (the deploy default)
  pi_openvino    * Paddle Inference, legacy model.pdmodel, its OpenVINO engine (fp32)
  pi_no_onednn   * Paddle Inference, legacy model.pdmodel, oneDNN off
  pi_pir_onednn  * Paddle Inference, PIR model.json, oneDNN on without the placement pass
  pi_pir         * Paddle Inference, PIR model.json, oneDNN off
  ort_paddle     * ONNX Runtime on model_paddle.onnx (paddle2onnx)
  ort_torch      * ONNX Runtime on model_torch.onnx (torch.onnx.export)
  ov_fp32        * OpenVINO runtime on model_torch.onnx, fp32 precision hint
  torch_bf16       the torch reference under bf16 autocast, channels_last
  pi_onednn_bf16   Paddle Inference legacy + oneDNN, bf16 convolutions (measured, not deployed)
  ov_bf16        * OpenVINO runtime on model_torch.onnx, bf16 precision hint
  ort_int8       * ONNX Runtime on model_int8.onnx (static QDQ int8)
  ov_int8        * OpenVINO runtime on model_int8.onnx
reduced precision: the gate figures (deploy/gate.py) of every bf16/int8 backend are measured in
the same run on the export's (trained) weights; an int8 model the export refused is quantized
here the same way (output/benchmark/<model>/model_int8_candidate.onnx) so its speed is still
measured, and reported as refused.
latency: batch 1, --threads math threads per framework, all backends in ONE process, runs
interleaved round by round (so machine noise hits all alike) with 0.5 s idle before each run
(the previous backend's spinning worker threads settle), median reported. Peak RSS: each
backend alone in a child process (load + 2 runs). Scene: deploy/infer.py on a generated
4096x4096 GeoTIFF in a child process, throughput in Mpx/s and its peak RSS."""

BACKENDS = ("torch_eager", "paddle_dygraph", "pi_onednn", "pi_openvino", "pi_no_onednn", "pi_pir_onednn", "pi_pir",
            "ort_paddle", "ort_torch", "ov_fp32", "torch_bf16", "pi_onednn_bf16", "ov_bf16", "ort_int8", "ov_int8")
PRECISION = {"torch_bf16": "bf16", "pi_onednn_bf16": "bf16", "ov_bf16": "bf16", "ort_int8": "int8", "ov_int8": "int8"}
# deploy/infer.py --backend of each deploy backend (for the gate figures in deploy.yaml)
INFER_BACKEND = {"ov_bf16": "openvino", "ort_int8": "onnxruntime", "ov_int8": "openvino"}
# Idle time before each timed run: the previous backend's worker threads keep spinning after
# its run (Intel OpenMP of Paddle: KMP_BLOCKTIME 200 ms; ONNX Runtime's pool; GNU OpenMP) and
# would otherwise steal the cores from the next backend in this one process.
SETTLE_S = 0.5
DEPLOY = {"pi_onednn": ("paddle_legacy", "onednn"), "pi_openvino": ("paddle_legacy", "openvino"),
          "pi_no_onednn": ("paddle_legacy", "native"), "pi_pir_onednn": ("paddle_pir", "onednn"),
          "pi_pir": ("paddle_pir", "native"), "ort_paddle": ("onnx_paddle", None), "ort_torch": ("onnx_torch", None),
          "ov_fp32": ("onnx_torch", None), "pi_onednn_bf16": ("paddle_legacy", "onednn"), "ov_bf16": ("onnx_torch", None),
          "ort_int8": ("onnx_int8", None), "ov_int8": ("onnx_int8", None)}


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deploy/benchmark.py", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["factseg50"], help="registered models (default: %(default)s)")
    parser.add_argument("--sizes", default="512,896", help="square input sizes (default: %(default)s)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per backend and size (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="math threads per framework (default: %(default)s)")
    parser.add_argument("--scene", type=int, default=4096,
                        help="side of the generated GeoTIFF scene, 0 to skip (default: %(default)s)")
    parser.add_argument("--scene-backends", default="onnxruntime,openvino:bf16",
                        help="deploy/infer.py runs on the scene, comma-separated backend[:precision][:bN][:serial] "
                             "(bN: N windows per batch; serial: no overlapped I/O) (default: %(default)s)")
    parser.add_argument("--scene-rounds", type=int, default=1,
                        help="run the scene runs this many times, interleaved round by round; medians reported "
                             "(default: %(default)s)")
    parser.add_argument("--no-rss", action="store_true", help="skip the per-backend peak RSS child processes")
    parser.add_argument("--export-root", type=Path, default=ROOT / "output" / "deploy",
                        help="exported models, <root>/<model>; exported there if missing (default: output/deploy)")
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "benchmark",
                        help="results: benchmark.json and benchmark.md (default: output/benchmark)")
    parser.add_argument("--variant", choices=("default", "tiny"), default="default",
                        help="model size; 'tiny' only to smoke-test this script (default: %(default)s)")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "BACKEND", "SIZE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- measurement helpers -------------------------------------------------------------------
def sgemm_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """Practical peaks of each precision, ``threads`` threads, 2048^3 matmuls, best of ``repeats``:
    fp32 (best of numpy/OpenBLAS and torch sgemm), bf16 (torch bf16 matmul: oneDNN/MKL, AMX or
    AVX512_BF16) and int8 (``torch._int_mm``, int8 x int8 -> int32: VNNI or AMX-INT8), in
    GFLOP/s (GOP/s for int8; 2 x multiply-accumulates)."""
    import numpy as np
    import torch

    out = {}
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    out["numpy_sgemm"] = 2 * n ** 3 / best / 1e9
    torch.set_num_threads(threads)
    ta, tb_ = torch.from_numpy(a), torch.from_numpy(b)
    ta @ tb_
    best = min(_timed(lambda: ta @ tb_) for _ in range(repeats))
    out["torch_sgemm"] = 2 * n ** 3 / best / 1e9
    out["peak"] = max(out.values())
    ha, hb = ta.bfloat16(), tb_.bfloat16()
    ha @ hb
    out["bf16"] = 2 * n ** 3 / min(_timed(lambda: ha @ hb) for _ in range(repeats)) / 1e9
    ia = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    ib = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    torch._int_mm(ia, ib)
    out["int8"] = 2 * n ** 3 / min(_timed(lambda: torch._int_mm(ia, ib)) for _ in range(repeats)) / 1e9
    out["fp32"] = out["peak"]
    return out


# A small launcher process starts each measured child: Linux carries the RSS high-water mark of
# the process that forks over exec, so a child forked directly from this (large) process would
# report at least this process's RSS. The launcher is small, so its child's ru_maxrss is its own.
LAUNCHER = ("import os, subprocess, sys\n"
            "proc = subprocess.Popen(sys.argv[1:])\n"
            "_, status, usage = os.wait4(proc.pid, 0)\n"
            "sys.stderr.write(f'\\n__peak_rss_kb__ {usage.ru_maxrss}\\n')\n"
            "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_child(cmd: list) -> tuple[int, str, float, float]:
    """Run a child process; (exit code, stderr, its own peak RSS in MB, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    seconds = time.perf_counter() - start
    marker = [line for line in proc.stderr.splitlines() if line.startswith("__peak_rss_kb__ ")]
    rss = int(marker[-1].split()[1]) / 1024.0 if marker else float("nan")
    return proc.returncode, proc.stderr, rss, seconds


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops(spec, size: int, variant: str) -> float:
    """Forward FLOPs (2 x multiply-accumulates of convolutions and matmuls) of the torch twin
    at batch 1, counted by torch.utils.flop_counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from torch_ref import backend as tb

    model = tb.build(spec, variant)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, spec.in_channels, size, size))
    return float(counter.get_total_flops())


# --- backends ------------------------------------------------------------------------------
def ensure_export(spec, root: Path, variant: str, precisions=("fp32",), formats=("paddle", "onnx")) -> Path:
    """The model's export under ``root``; exported (with ``precisions``, gated) if missing."""
    from deploy import config

    model_dir = root / (spec.name if variant == "default" else f"{spec.name}_{variant}")
    try:
        config.read(model_dir)
    except config.DeployError:
        from deploy.exporter import export

        from deploy.exporter import ExportError

        logging.info("%s: exporting to %s", spec.name, model_dir)
        try:
            export(spec, model_dir, variant=variant, precisions=precisions, formats=formats)
        except ExportError as err:
            if err.exit_code != 1 or "gate" not in str(err):
                raise
            # refused by the gate: the fp32 export on the same (gate) weights; the reduced-precision
            # backends are still measured and marked REFUSED
            logging.warning("%s: %s; exporting fp32 only", spec.name, err)
            from deploy.gate import trained_weights

            export(spec, model_dir, variant=variant, formats=formats, weights=trained_weights(spec, variant)[0])
    return model_dir


def make_backend(name: str, spec, model_dir: Path, threads: int, states: dict):
    """A callable ``x -> probs`` for one backend (weights: those of the export)."""

    from deploy import config, runtime

    if name in DEPLOY:
        key, engine = DEPLOY[name]
        cfg = config.read(model_dir)
        entry = cfg.data["artifacts"].get(key)
        if key == "onnx_int8" and entry is None:
            entry = {"runtime": "onnxruntime", "model_file": str(int8_candidate(spec, model_dir, states).resolve())}
        return runtime.for_artifact(model_dir, entry, threads, engine=engine,
                                    backend="openvino" if name.startswith("ov_") else None,
                                    precision=PRECISION.get(name, "fp32"))
    if "weights" not in states:
        from deploy.exporter import resolve_weights

        data = config.read(model_dir).data
        source, variant = data["weights"], data["variant"]
        path = Path(source["path"]) if "path" in source else None
        states["weights"] = resolve_weights(spec, variant, path, source.get("seed"))
    variant = config.read(model_dir).data["variant"]
    torch_state, paddle_state, _ = states["weights"]
    if name in ("torch_eager", "torch_bf16"):
        import torch

        from torch_ref import backend as tb

        model = tb.build(spec, variant)
        tb.load_state(model, torch_state)
        model.eval()
        if name == "torch_bf16":
            model = model.to(memory_format=torch.channels_last)

            def run_bf16(x):
                torch.set_num_threads(threads)
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    out = model(torch.from_numpy(x).to(memory_format=torch.channels_last))
                return out.float().numpy()
            return run_bf16

        def run(x):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()
        return run
    import paddle

    from paddle_impl import backend as pb

    model = pb.build(spec, variant)
    pb.load_state(model, paddle_state)

    def run(x):
        pb.set_threads(threads)  # every Paddle Inference predictor resets the dygraph thread count
        with paddle.no_grad():
            return model(paddle.to_tensor(x)).numpy()
    return run


def int8_candidate(spec, model_dir: Path, states: dict) -> Path:
    """The export's int8 model, or (refused by the gate) the same quantization made here."""
    from deploy import gate
    from deploy.quantize import quantize_int8

    path = states.get("out", ROOT / "output" / "benchmark") / spec.name / "model_int8_candidate.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        logging.info("%s: the export has no (gated) int8 model: quantizing a candidate into %s", spec.name, path)
        quantize_int8(model_dir / "model_torch.onnx", path, gate.calibration_windows(spec))
    return path


def gate_figures(spec, model_dir: Path, names: list, fns: dict) -> dict:
    """The accuracy gate of every reduced-precision backend in ``fns``, on the export's weights;
    ``exported``: whether deploy.yaml holds that backend and precision (the export gated it)."""
    from deploy import config, gate

    cfg = config.read(model_dir)
    if "gate_training" not in cfg.data["weights"] and cfg.data["weights"].get("kind") != "torch checkpoint":
        return {}
    grid = cfg.data["sliding_window"]
    window, stride = grid["window"][0], grid["stride"][0]
    val = gate.scenes(spec, "val")
    reference = gate.predict_all(fns["torch_eager"], val, spec.num_classes, window, stride)
    out = {}
    for name in names:
        if name not in PRECISION:
            continue
        probs = gate.predict_all(fns[name], val, spec.num_classes, window, stride)
        figures = gate.judge(PRECISION[name], reference, probs, val, spec.num_classes, spec.ignore_index)
        gated = cfg.data.get("reduced_precision", {}).get(PRECISION[name], {})
        figures["exported"] = INFER_BACKEND.get(name) in gated
        out[name] = figures
    return out


def latency(spec, model_dir: Path, names: list, sizes: list, runs: int, warmup: int, threads: int,
            out: Path | None = None) -> dict:
    import numpy as np

    from rsport.fixtures import image_batch

    states, fns = {"out": out} if out else {}, {}
    for name in names:
        logging.info("%s: loading %s", spec.name, name)
        fns[name] = make_backend(name, spec, model_dir, threads, states)
    results = {}
    if any(n in PRECISION for n in names) and "torch_eager" in names:
        logging.info("%s: gate figures of the reduced-precision backends", spec.name)
        results["gate"] = gate_figures(spec, model_dir, names, fns)
    for size in sizes:
        x = image_batch(spec, (1, spec.in_channels, size, size), 0)
        times = {name: [] for name in names}
        for name in names:
            for _ in range(warmup):
                fns[name](x)
        for r in range(runs):
            for name in names:
                time.sleep(SETTLE_S)
                times[name].append(_timed(lambda: fns[name](x)))
            logging.info("%s %d: round %d/%d  %s", spec.name, size, r + 1, runs,
                         "  ".join(f"{n} {times[n][-1]:.2f}" for n in names))
        results[size] = {name: {"median_s": float(np.median(t)), "runs_s": [round(v, 4) for v in t]}
                         for name, t in times.items()}
    return results


def child_rss(model: str, backend: str, size: int, model_dir: Path, threads: int) -> float:
    """Peak RSS of one backend alone: a child process loads it and runs it twice."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", model, backend, str(size),
           "--threads", str(threads), "--export-root", str(model_dir)]
    code, err, rss, _ = run_child(cmd)
    if code != 0:
        raise RuntimeError(f"{backend}: child failed: {[l for l in err.splitlines() if l.strip()][-2:]}")
    return rss


def child_main(args) -> int:
    import rsport
    from rsport.fixtures import image_batch

    model, backend, size = args.child
    spec = rsport.get(model)
    fn = make_backend(backend, spec, args.export_root, args.threads, {})  # --export-root is the model dir here
    x = image_batch(spec, (1, spec.in_channels, int(size), int(size)), 0)
    fn(x)
    fn(x)
    return 0


def make_scene(spec, side: int, path: Path) -> None:
    """A seeded GeoTIFF of ``side`` x ``side``: RGB uint8 (iSAID models) or VV/VH dB float32
    (SAR), UTM CRS, 0.5 m pixels, written in strips (never the whole scene in memory)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rgb = spec.dataset == "isaid"
    profile = dict(driver="GTiff", height=side, width=side, count=spec.in_channels,
                   dtype="uint8" if rgb else "float32", crs="EPSG:32650",
                   transform=from_origin(400000.0, 3400000.0, 0.5, 0.5), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate")
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        for y0 in range(0, side, 512):
            rows = min(512, side - y0)
            yy = (np.arange(y0, y0 + rows) / side)[:, None]
            xx = (np.arange(side) / side)[None, :]
            base = 0.5 + 0.25 * np.sin(12 * xx + 3 * yy) * np.cos(7 * yy - 2 * xx)
            bands = []
            for c in range(spec.in_channels):
                band = np.clip(base + 0.1 * c + rng.normal(0, 0.08, (rows, side)), 0, 1)
                bands.append((band * 255).astype(np.uint8) if rgb else (-25 + 25 * band).astype(np.float32))
            ds.write(np.stack(bands), window=rasterio.windows.Window(0, y0, side, rows))


def scene_run(model_dir: Path, scene: Path, run: str, threads: int, out: Path) -> dict:
    """deploy/infer.py in a child process: wall time, Mpx/s and the child's peak RSS. ``run`` is
    ``backend[:precision][:bN][:serial]`` (batch N windows; serial: no overlapped I/O)."""
    import rasterio

    from deploy.precision import PRECISIONS

    backend, *tokens = run.split(":")
    precision = next((t for t in tokens if t in PRECISIONS), "fp32")
    batch = next((int(t[1:]) for t in tokens if t[:1] == "b" and t[1:].isdigit()), 1)
    overlap = "serial" not in tokens
    cmd = [sys.executable, str(ROOT / "deploy" / "infer.py"), "--model-dir", str(model_dir), "--input", str(scene),
           "--out", str(out), "--backend", backend, "--precision", precision, "--batch", str(batch),
           "--overlap", str(overlap).lower(), "--threads", str(threads), "--no-progress", "--overwrite"]
    code, err, rss, seconds = run_child(cmd)
    if code != 0:
        raise RuntimeError(f"infer.py failed: {[l for l in err.splitlines() if l.strip()][-2:]}")
    summary = json.loads((out / f"{scene.stem}_summary.json").read_text())
    with rasterio.open(scene) as src, rasterio.open(out / f"{scene.stem}_class.tif") as dst:
        same_geo = src.crs == dst.crs and src.transform == dst.transform
        pixels = src.height * src.width
    return {"backend": backend, "precision": precision, "batch": batch, "overlap": overlap, "run": run,
            "scene": scene.name,
            "seconds": round(seconds, 1), "mpx_per_s": round(pixels / 1e6 / seconds, 4),
            "predict_seconds": summary["seconds"], "predict_mpx_per_s": summary["mpx_per_s"],
            "peak_rss_mb": round(rss), "same_crs_transform": same_geo, "command": " ".join(cmd[1:])}


# --- report --------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = []
    cpu = result["machine"]
    peaks = cpu["sgemm"]
    lines.append(f"Machine: {cpu['cpu']}, {cpu['cores']} cores; ISA flags: {', '.join(cpu['isa']['flags'])}; "
                 f"reduced-precision paths: " + ", ".join(f"{p} {v or 'none'}" for p, v in cpu['isa']['paths'].items())
                 + f". {result['threads']} math threads per framework.")
    lines.append(f"Measured peaks (2048^3 matmul, {result['threads']} threads): fp32 {peaks['peak']:.0f} GFLOP/s "
                 f"(numpy {peaks['numpy_sgemm']:.0f}, torch {peaks['torch_sgemm']:.0f}), bf16 {peaks['bf16']:.0f} "
                 f"GFLOP/s (torch), int8 {peaks['int8']:.0f} GOP/s (torch._int_mm). Load average at start: "
                 f"{result.get('load', '-')}.")
    for model, res in result["models"].items():
        sizes = sorted((s for s in res["latency"] if s != "gate"), key=int)
        gates = res["latency"].get("gate", {})
        lines.append("")
        lines.append(f"**{model}**, batch 1, median of {result['runs']} runs (after {result['warmup']} warm-up), "
                     f"one process, FLOPs " + ", ".join(f"{res['gflop'][s]:.0f} G at {s}" for s in sizes) + ":")
        lines.append("")
        head = "| backend | precision | " + " | ".join(f"{s}: s | {s}: x torch fp32" for s in sizes)
        head += (f" | TFLOP/s at {sizes[-1]} | % of its precision's peak | gate: agreement, widest margin (bound), "
                 f"mIoU delta | peak RSS MB at {sizes[-1]} |")
        lines.append(head)
        lines.append("|---" * (2 + 2 * len(sizes) + 4) + "|")
        for name in res["latency"][sizes[0]]:
            precision = PRECISION.get(name, "fp32")
            row = [name + (" *" if name in DEPLOY else ""), precision]
            for s in sizes:
                med = res["latency"][s][name]["median_s"]
                ref = res["latency"][s].get("torch_eager", {}).get("median_s")
                row += [f"{med:.3f}", f"{med / ref:.2f}" if ref else "-"]
            med = res["latency"][sizes[-1]][name]["median_s"]
            tflops = res["gflop"][sizes[-1]] / med / 1000
            peak = peaks["peak" if precision == "fp32" else precision] / 1000
            g = gates.get(name)
            verdict = "-" if g is None else (
                f"{g['agreement']:.3%}, {g['widest_disagreement_margin']:.3f} ({g['margin_bound']:g}), "
                f"{g['miou_delta_points']:+.2f} pt: " + ("PASS" if g["passed"] else "REFUSED")
                + ("" if g["exported"] or not g["passed"] else " (not exported)"))
            row += [f"{tflops:.3f}", f"{100 * tflops / peak:.0f}%", verdict,
                    f"{res['rss_mb'][name]:.0f}" if res.get("rss_mb", {}).get(name) else "-"]
            lines.append("| " + " | ".join(row) + " |")
        if res.get("scene"):
            lines.append("")
            lines.append(f"Scene {result['scene']}x{result['scene']} GeoTIFF through `deploy/infer.py` (window/stride "
                         f"from deploy.yaml), child process, median of {result.get('scene_rounds', 1)} interleaved "
                         f"round(s):")
            lines.append("")
            lines.append("| --backend | --precision | --batch | overlapped I/O | wall s | Mpx/s | predict s | "
                         "peak RSS MB | CRS and transform kept |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for sc in res["scene"]:
                lines.append(f"| {sc['backend']} | {sc['precision']} | {sc['batch']} | {'yes' if sc['overlap'] else 'no'} "
                             f"| {sc['seconds']:.1f} ({', '.join(f'{v:.0f}' for v in sc.get('rounds_s', []))}) "
                             f"| {sc['mpx_per_s']:.3f} | {sc['predict_seconds']:.1f} | "
                             f"{sc['peak_rss_mb']:.0f} | {'yes' if sc['same_crs_transform'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", message="No ccache found")
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.child:
        return child_main(args)
    import rsport
    from rsport.registry import UnknownModelError

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad:
        print(f"error: unknown backend {bad[0]!r}; known: {', '.join(BACKENDS)}", file=sys.stderr)
        return 2
    try:
        specs = [rsport.get(m) for m in args.models]
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except (UnknownModelError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    from deploy.precision import cpu_info, isa_report

    info = cpu_info()
    result = {"command": "python deploy/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads, "runs": args.runs,
              "warmup": args.warmup, "scene": args.scene, "scene_rounds": args.scene_rounds, "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
              "machine": {"cpu": info["model"], "cores": os.cpu_count(), "python": platform.python_version(),
                          "isa": isa_report(info["flags"]), "sgemm": sgemm_peak(args.threads)}, "models": {}}
    for spec in specs:
        paddle = any(n.startswith(("pi_", "paddle")) for n in names) or "paddle" in args.scene_backends
        model_dir = ensure_export(spec, args.export_root, args.variant, ["fp32"] + sorted(
            {PRECISION[n] for n in names if n in INFER_BACKEND and PRECISION[n] == "bf16"}),
            ("paddle", "onnx") if paddle else ("onnx",))
        res = {"gflop": {s: flops(spec, s, args.variant) / 1e9 for s in sizes}}
        res["latency"] = latency(spec, model_dir, names, sizes, args.runs, args.warmup, args.threads, args.out)
        if not args.no_rss:
            res["rss_mb"] = {}
            for name in names:
                logging.info("%s: peak RSS of %s alone", spec.name, name)
                res["rss_mb"][name] = child_rss(spec.name, name, max(sizes), model_dir, args.threads)
        if args.scene:
            scene = args.out / f"scene_{spec.dataset}_{args.scene}.tif"
            if not scene.is_file():
                make_scene(spec, args.scene, scene)
            runs = [b.strip() for b in args.scene_backends.split(",") if b.strip()]
            rounds = {run: [] for run in runs}
            for r in range(args.scene_rounds):
                for run in runs:
                    logging.info("%s: whole scene with deploy/infer.py (%s), round %d/%d", spec.name, run, r + 1,
                                 args.scene_rounds)
                    rounds[run].append(scene_run(model_dir, scene, run, args.threads,
                                                 args.out / f"scene_{spec.name}_{run.replace(':', '_')}"))
            res["scene"] = []
            for run, items in rounds.items():
                best = sorted(items, key=lambda item: item["seconds"])[len(items) // 2]  # the median run
                res["scene"].append(dict(best, rounds_s=[item["seconds"] for item in items],
                                         peak_rss_mb=max(item["peak_rss_mb"] for item in items)))
        result["models"][spec.name] = res
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "benchmark.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
