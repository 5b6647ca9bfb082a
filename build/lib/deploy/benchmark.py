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
latency: batch 1, --threads math threads per framework, all backends in ONE process, runs
interleaved round by round (so machine noise hits all alike) with 0.5 s idle before each run
(the previous backend's spinning worker threads settle), median reported. Peak RSS: each
backend alone in a child process (load + 2 runs). Scene: deploy/infer.py on a generated
4096x4096 GeoTIFF in a child process, throughput in Mpx/s and its peak RSS."""

BACKENDS = ("torch_eager", "paddle_dygraph", "pi_onednn", "pi_openvino", "pi_no_onednn", "pi_pir_onednn", "pi_pir",
            "ort_paddle", "ort_torch")
# Idle time before each timed run: the previous backend's worker threads keep spinning after
# its run (Intel OpenMP of Paddle: KMP_BLOCKTIME 200 ms; ONNX Runtime's pool; GNU OpenMP) and
# would otherwise steal the cores from the next backend in this one process.
SETTLE_S = 0.5
DEPLOY = {"pi_onednn": ("paddle_legacy", "onednn"), "pi_openvino": ("paddle_legacy", "openvino"),
          "pi_no_onednn": ("paddle_legacy", "native"), "pi_pir_onednn": ("paddle_pir", "onednn"),
          "pi_pir": ("paddle_pir", "native"), "ort_paddle": ("onnx_paddle", None), "ort_torch": ("onnx_torch", None)}


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
    parser.add_argument("--scene-backends", default="paddle,onnxruntime",
                        help="deploy/infer.py backends for the scene run (default: %(default)s)")
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
    """Practical fp32 peak: best of numpy (OpenBLAS) and torch sgemm, ``threads`` threads."""
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
def ensure_export(spec, root: Path, variant: str) -> Path:
    from deploy import config

    model_dir = root / (spec.name if variant == "default" else f"{spec.name}_{variant}")
    try:
        config.read(model_dir)
    except config.DeployError:
        from deploy.exporter import export

        logging.info("%s: exporting to %s", spec.name, model_dir)
        export(spec, model_dir, variant=variant)
    return model_dir


def make_backend(name: str, spec, model_dir: Path, threads: int, states: dict):
    """A callable ``x -> probs`` for one backend (weights: those of the export)."""

    from deploy import config, runtime

    if name in DEPLOY:
        key, engine = DEPLOY[name]
        cfg = config.read(model_dir)
        return runtime.for_artifact(model_dir, cfg.artifact(key), threads, engine=engine)
    if "weights" not in states:
        from deploy.exporter import resolve_weights

        data = config.read(model_dir).data
        source, variant = data["weights"], data["variant"]
        path = Path(source["path"]) if "path" in source else None
        states["weights"] = resolve_weights(spec, variant, path, source.get("seed"))
    variant = config.read(model_dir).data["variant"]
    torch_state, paddle_state, _ = states["weights"]
    if name == "torch_eager":
        import torch

        from torch_ref import backend as tb

        model = tb.build(spec, variant)
        tb.load_state(model, torch_state)

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


def latency(spec, model_dir: Path, names: list, sizes: list, runs: int, warmup: int, threads: int) -> dict:
    import numpy as np

    from rsport.fixtures import image_batch

    states, fns = {}, {}
    for name in names:
        logging.info("%s: loading %s", spec.name, name)
        fns[name] = make_backend(name, spec, model_dir, threads, states)
    results = {}
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


def scene_run(model_dir: Path, scene: Path, backend: str, threads: int, out: Path) -> dict:
    """deploy/infer.py in a child process: wall time, Mpx/s and the child's peak RSS."""
    import rasterio

    cmd = [sys.executable, str(ROOT / "deploy" / "infer.py"), "--model-dir", str(model_dir), "--input", str(scene),
           "--out", str(out), "--backend", backend, "--threads", str(threads), "--no-progress"]
    code, err, rss, seconds = run_child(cmd)
    if code != 0:
        raise RuntimeError(f"infer.py failed: {[l for l in err.splitlines() if l.strip()][-2:]}")
    with rasterio.open(scene) as src, rasterio.open(out / f"{scene.stem}_class.tif") as dst:
        same_geo = src.crs == dst.crs and src.transform == dst.transform
        pixels = src.height * src.width
    return {"backend": backend, "seconds": round(seconds, 1), "mpx_per_s": round(pixels / 1e6 / seconds, 4),
            "peak_rss_mb": round(rss), "same_crs_transform": same_geo,
            "command": " ".join(cmd[1:])}


# --- report --------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = []
    cpu = result["machine"]
    lines.append(f"Machine: {cpu['cpu']}, {cpu['cores']} cores; {result['threads']} math threads per framework; "
                 f"practical fp32 peak {cpu['sgemm']['peak']:.0f} GFLOP/s (numpy sgemm "
                 f"{cpu['sgemm']['numpy_sgemm']:.0f}, torch sgemm {cpu['sgemm']['torch_sgemm']:.0f}, 2048^3).")
    for model, res in result["models"].items():
        sizes = sorted(res["latency"], key=int)
        lines.append("")
        lines.append(f"**{model}**, batch 1, median of {result['runs']} runs (after {result['warmup']} warm-up), "
                     f"one process, FLOPs " + ", ".join(f"{res['gflop'][s]:.0f} G at {s}" for s in sizes) + ":")
        lines.append("")
        head = "| backend | " + " | ".join(f"{s}: s | {s}: x torch" for s in sizes)
        head += f" | GFLOP/s at {sizes[-1]} | % of peak | peak RSS MB at {sizes[-1]} |"
        lines.append(head)
        lines.append("|---" * (1 + 2 * len(sizes) + 3) + "|")
        for name in res["latency"][sizes[0]]:
            row = [name + (" *" if name in DEPLOY else "")]
            for s in sizes:
                med = res["latency"][s][name]["median_s"]
                ref = res["latency"][s].get("torch_eager", {}).get("median_s")
                row += [f"{med:.3f}", f"{med / ref:.2f}" if ref else "-"]
            med = res["latency"][sizes[-1]][name]["median_s"]
            gflops = res["gflop"][sizes[-1]] / med
            row += [f"{gflops:.0f}", f"{100 * gflops / cpu['sgemm']['peak']:.0f}%",
                    f"{res['rss_mb'][name]:.0f}" if res.get("rss_mb", {}).get(name) else "-"]
            lines.append("| " + " | ".join(row) + " |")
        for s in res.get("scene", []):
            lines.append("")
            lines.append(f"Scene {result['scene']}x{result['scene']} GeoTIFF, `deploy/infer.py --backend {s['backend']}` "
                         f"(window/stride from deploy.yaml, batch 1): {s['seconds']:.0f} s, {s['mpx_per_s']:.3f} Mpx/s, "
                         f"peak RSS {s['peak_rss_mb']:.0f} MB, CRS and transform kept: {s['same_crs_transform']}.")
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
    result = {"command": "python deploy/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads, "runs": args.runs,
              "warmup": args.warmup, "scene": args.scene,
              "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "sgemm": sgemm_peak(args.threads)}, "models": {}}
    for spec in specs:
        model_dir = ensure_export(spec, args.export_root, args.variant)
        res = {"gflop": {s: flops(spec, s, args.variant) / 1e9 for s in sizes}}
        res["latency"] = latency(spec, model_dir, names, sizes, args.runs, args.warmup, args.threads)
        if not args.no_rss:
            res["rss_mb"] = {}
            for name in names:
                logging.info("%s: peak RSS of %s alone", spec.name, name)
                res["rss_mb"][name] = child_rss(spec.name, name, max(sizes), model_dir, args.threads)
        if args.scene:
            scene = args.out / f"scene_{spec.dataset}_{args.scene}.tif"
            if not scene.is_file():
                make_scene(spec, args.scene, scene)
            res["scene"] = []
            for backend in [b.strip() for b in args.scene_backends.split(",") if b.strip()]:
                logging.info("%s: whole scene with deploy/infer.py --backend %s", spec.name, backend)
                res["scene"].append(scene_run(model_dir, scene, backend, args.threads,
                                              args.out / f"scene_{spec.name}_{backend}"))
        result["models"][spec.name] = res
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "benchmark.md").write_text(text + "\n")
    print(text)
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
