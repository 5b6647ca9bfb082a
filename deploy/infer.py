"""Sliding-window inference of an exported model on images and GeoTIFF scenes; see --help."""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message="No ccache found")  # paddle's import-time notice, not ours

EXAMPLES = """examples:
  python deploy/infer.py --model-dir output/deploy/factseg50 --input scene.tif --out output/infer
  python deploy/infer.py --model-dir output/deploy/factseg50 --input scenes/ --out output/infer --backend openvino --precision int8
  python deploy/infer.py --model-dir output/deploy/factseg50 --input scenes.txt --out output/infer --backend onnxruntime --tta
  python deploy/infer.py --model_dir output/deploy/factseg50 --image_path a.png --save_dir out --cpu_threads 2 --enable_mkldnn true
  python deploy/infer.py --model-dir output/deploy/factseg50 output/deploy/upernet_r50 --input scene.tif --out ens   # ensemble

backends x precisions (deploy.yaml must hold the gated artifact: deploy/export.py --precision):
  paddle            fp32 (Paddle Inference, oneDNN unless --enable-mkldnn false)
  paddle_openvino   fp32 (Paddle Inference with its built-in OpenVINO engine)
  onnxruntime       fp32, int8
  openvino          fp32, bf16, int8 (the OpenVINO runtime; AMX where the CPU has it)

per input <name>:
  <name>_class.tif     class ids (uint8), the input's CRS and transform (GeoTIFF input)
  <name>_class.png     class ids (uint8) for PNG/JPEG/plain TIFF input
  <name>_color.png     color preview (palette from deploy.yaml), at most --preview-max pixels per side
  <name>_prob.tif      with --save-prob: float32 probabilities, one band per class
  <name>_summary.json  written last: seconds, Mpx/s, class histogram, the outputs' sha256, the settings
resume: a scene whose summary exists, whose outputs match their sha256 and whose settings are the
same is skipped (nothing rewritten); a scene killed midway has no summary and is predicted again.
exit status: 0 success, 1 a scene failed while predicting (finished scenes stay), 2 bad input
(nothing written)"""


def str2bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def model_dir_arg(value: str) -> Path:
    """An export folder, or the deploy.yaml inside it (PaddleSeg's --config spelling)."""
    path = Path(value)
    return path.parent if path.name == "deploy.yaml" else path


def parse(argv=None) -> argparse.Namespace:
    from deploy.precision import PRECISIONS, SUPPORT

    parser = argparse.ArgumentParser(
        prog="deploy/infer.py",
        description="Predict class maps of whole scenes with an exported model (deploy/export.py): the original "
                    "sliding-window evaluation (window grid, zero padding to a multiple of 32, probabilities "
                    "averaged over overlaps) with batched windows, streamed so that memory stays bounded: "
                    "windows are read from GeoTIFFs one by one and finished rows are written out at once. "
                    "Many scenes: a folder or a list file; finished scenes are skipped on a rerun.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", "--model_dir", "--config", dest="model_dir", type=model_dir_arg, nargs="+",
                        required=True,
                        help="directory written by deploy/export.py, or its deploy.yaml (--config, as PaddleSeg's "
                             "infer.py and TIPC runner pass it); several: an ensemble (the NAIC solution's): each "
                             "model normalizes the window its own way and the logits are averaged (as the mean of "
                             "the log-probabilities, equal to the logits' mean up to a per-pixel constant)")
    parser.add_argument("--device", choices=("cpu",), default="cpu",
                        help="where to run; Paddle Inference runs on the CPU here (default: %(default)s)")
    parser.add_argument("--input", "--image_path", "--image-path", dest="input", nargs="+", required=True,
                        help="images (PNG/JPEG/BMP/TIFF/GeoTIFF), folders of them, or .txt files listing them "
                             "(one path per line, relative to the list's folder)")
    parser.add_argument("--out", "--save_dir", "--save-dir", dest="out", type=Path, required=True,
                        help="output directory")
    parser.add_argument("--backend", choices=tuple(SUPPORT), default="paddle",
                        help="paddle: Paddle Inference (oneDNN unless --enable-mkldnn false); paddle_openvino: Paddle "
                             "Inference with its OpenVINO engine; onnxruntime: ONNX Runtime; openvino: the OpenVINO "
                             "runtime on the ONNX files (default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32, or a gated reduced precision the backend runs: bf16 (openvino), int8 "
                             "(onnxruntime, openvino) (default: %(default)s)")
    parser.add_argument("--allow-fallback", action="store_true",
                        help="where the CPU lacks the precision's instructions, run fp32 instead (and say so) "
                             "rather than stop")
    parser.add_argument("--artifact", default=None,
                        help="fp32 only: artifact key from deploy.yaml instead of the backend's default "
                             "(paddle: paddle_legacy | paddle_pir; onnxruntime, openvino: onnx_paddle | onnx_torch)")
    parser.add_argument("--window", type=int, default=None,
                        help="window size in pixels (default: deploy.yaml's, 896 for the iSAID models)")
    parser.add_argument("--stride", type=int, default=None,
                        help="window stride (default: deploy.yaml's, 512 for the iSAID models)")
    parser.add_argument("--batch", "--batch_size", "--batch-size", dest="batch", type=int, default=1,
                        help="windows per forward pass (default: %(default)s)")
    parser.add_argument("--threads", "--cpu_threads", "--cpu-threads", dest="threads", type=int, default=2,
                        help="CPU math threads (default: %(default)s)")
    parser.add_argument("--enable-mkldnn", "--enable_mkldnn", dest="enable_mkldnn", type=str2bool, default=True,
                        help="oneDNN in Paddle Inference: true or false (default: %(default)s)")
    parser.add_argument("--overlap", type=str2bool, default=True,
                        help="read the next windows and write finished rows in helper threads while the model "
                             "runs: true or false (default: %(default)s)")
    parser.add_argument("--tta", action="store_true",
                        help="flip test-time augmentation: mean over identity, horizontal and vertical flips")
    parser.add_argument("--save-prob", "--save_prob", dest="save_prob", action="store_true",
                        help="also write the probability map (float32, one band per class)")
    parser.add_argument("--preview-max", type=int, default=4096,
                        help="longest side of the color preview; larger scenes are subsampled (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="predict every scene again, even those already finished and verified")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def select(args, cfg) -> tuple[str, dict, str, str]:
    """(artifact key, entry, engine, precision actually run) for the backend and precision asked."""
    from deploy import config

    model_dir = cfg.root
    if args.precision == "fp32":
        if args.backend not in cfg.data["runtimes"]:
            raise config.DeployError(f"{model_dir}: backend {args.backend} not exported "
                                     f"(deploy.yaml has {', '.join(cfg.data['runtimes'])}); re-export with --format")
        runtime_name = "paddle" if args.backend.startswith("paddle") else "onnxruntime"
        key, entry = cfg.runtime_artifact(runtime_name, args.artifact or cfg.data["runtimes"][args.backend]["artifact"])
    else:
        if args.artifact:
            raise config.DeployError(f"--artifact is for fp32; --precision {args.precision} runs the gated artifact")
        gated = cfg.data.get("reduced_precision", {}).get(args.precision, {})
        if args.backend not in gated:
            have = [f"{b} {p}" for p, backends in cfg.data.get("reduced_precision", {}).items() for b in backends]
            raise config.DeployError(f"{model_dir}: no gated {args.precision} artifact for {args.backend} "
                                     f"(deploy.yaml has: {', '.join(have) or 'fp32 only'}); run deploy/export.py "
                                     f"--precision {args.precision}")
        key = gated[args.backend]["artifact"]
        entry = cfg.artifact(key)
    engine = ("openvino" if args.backend == "paddle_openvino" else "onednn" if args.enable_mkldnn else "native")
    if engine == "openvino" and entry["format"] != "legacy":
        raise config.DeployError(f"the OpenVINO engine of Paddle Inference runs the legacy program only, not {key}")
    return key, entry, engine, args.precision


def settings_of(args, cfgs, key: str, window: int, stride: int) -> dict:
    """What decides a scene's outputs: a finished scene is reused only under the same settings."""
    from rsport.io import sha256

    return {"model_dir": [str(c.root.resolve()) for c in cfgs],
            "deploy_yaml_sha256": [sha256(c.root / "deploy.yaml") for c in cfgs],
            "backend": args.backend, "precision": args.precision, "artifact": key, "window": window, "stride": stride,
            "tta": bool(args.tta), "save_prob": bool(args.save_prob), "preview_max": args.preview_max,
            "enable_mkldnn": bool(args.enable_mkldnn), "batch": args.batch, "threads": args.threads}


def finished(summary_path: Path, settings: dict, source: Path) -> dict | None:
    """The summary of a scene finished under ``settings`` whose outputs still verify, else None."""
    import json

    from rsport.io import sha256

    if not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return None
    stat = source.stat()
    if summary.get("settings") != settings or summary.get("source") != {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}:
        return None
    for item in summary.get("outputs", {}).values():
        path = Path(item["path"])
        if not path.is_file() or sha256(path) != item["sha256"]:
            return None
    return summary


def check_members(cfgs) -> None:
    """An ensemble's models must read the same input and predict the same classes."""
    from deploy import config

    first = cfgs[0]
    for cfg in cfgs[1:]:
        for what, mine, theirs in (("channels", first.data["input"]["channels"], cfg.data["input"]["channels"]),
                                   ("input reader", first.reader, cfg.reader),
                                   ("classes", first.data["output"]["classes"], cfg.data["output"]["classes"]),
                                   ("window divisor", first.divisor, cfg.divisor)):
            if mine != theirs:
                raise config.DeployError(f"ensemble: {cfg.root} has {what} {theirs!r} where {first.root} has {mine!r}")


def ensemble(members, channels: int):
    """One ``predict`` for several models: the window arrives with every member's own normalization
    stacked along the channels (``[N, M * C, h, w]``, zero padding included, as each single run pads
    its normalized window); each member predicts its slice, and the class scores are the mean of
    the members' log-probabilities, turned back into probabilities. That is the NAIC solution's
    logit averaging: log softmax(z) = z - logsumexp(z), and the per-pixel constant cancels in the
    softmax. A single member is its own prediction."""
    if len(members) == 1:
        return members[0]

    def predict(x: np.ndarray) -> np.ndarray:
        scores = None
        for i, member in enumerate(members):
            probs = np.asarray(member(np.ascontiguousarray(x[:, i * channels:(i + 1) * channels])), np.float64)
            logp = np.log(np.maximum(probs, np.finfo(np.float32).tiny))
            scores = logp if scores is None else scores + logp
        scores /= len(members)
        scores -= scores.max(axis=1, keepdims=True)
        out = np.exp(scores)
        return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)

    return predict


def stacked_reader(scene, cfgs):
    """``read`` of the scene with every member's normalization, stacked along the channels."""
    from deploy import sources

    readers = [sources.make_reader(scene, cfg) for cfg in cfgs]
    if len(readers) == 1:
        return readers[0]

    def read(y0, x0, y1, x1):
        return np.concatenate([read_one(y0, x0, y1, x1) for read_one in readers], axis=0)

    return read


def remove_stale(out: Path, stem: str) -> None:
    """Temporary files of a run that was killed while writing this scene."""
    for path in out.glob(f".{stem}_*.tmp-*"):
        path.unlink(missing_ok=True)


def run(args) -> list[dict]:
    """Check every input, then predict and write scene by scene; raises DeployError for bad input."""
    import json

    from tqdm import tqdm

    from deploy import config, precision, runtime, sources
    from deploy.scene import flip_tta, stream_scene
    from rsport.io import OutputError, Staged, check_output, sha256
    from rsport.sliding import windows

    try:
        precision.check_backend(args.backend, args.precision)
        isa = precision.check_isa(args.precision)
    except precision.PrecisionError as err:
        if not (args.allow_fallback and "CPU flag" in str(err)):
            raise config.DeployError(str(err)) from None
        logging.warning("warning: %s: running fp32", str(err).split(";")[0])
        args.precision, isa = "fp32", "fp32"
    cfgs = [config.read(d) for d in args.model_dir]
    check_members(cfgs)
    cfg = cfgs[0]
    chosen = [select(args, c) for c in cfgs]
    key, entry, engine, prec = chosen[0]
    window = args.window or cfg.data["sliding_window"]["window"][0]
    stride = args.stride or cfg.data["sliding_window"]["stride"][0]
    for name, value in (("window", window), ("stride", stride), ("batch", args.batch), ("threads", args.threads),
                        ("preview-max", args.preview_max)):
        if value < 1:
            raise config.DeployError(f"--{name} must be >= 1, got {value}")
    try:
        check_output(args.out, "folder", "--out")
    except OutputError as err:
        raise config.DeployError(str(err)) from None
    paths = sources.list_inputs(args.input)
    for path in paths:  # every input checked before anything is predicted or written
        sources.open_scene(path, cfg).close()
    settings = settings_of(args, cfgs, key, window, stride)
    classes = cfg.data["output"]["classes"]
    results, todo = [], []
    for path in paths:
        summary = None if args.overwrite else finished(args.out / f"{path.stem}_summary.json", settings, path)
        if summary is not None:
            results.append(dict(summary, skipped=True))
        else:
            todo.append(path)
    if results:
        logging.info("%d of %d scene(s) already finished and verified in %s: skipped", len(results), len(paths),
                     args.out)
    if not todo:
        return results
    members = []
    for member_cfg, (_, member_entry, member_engine, member_prec) in zip(cfgs, chosen):
        predictor = runtime.for_artifact(member_cfg.root, member_entry, args.threads, engine=member_engine,
                                         backend=args.backend, precision=member_prec)
        members.append(flip_tta(predictor) if args.tta else predictor)
    predict = ensemble(members, cfg.data["input"]["channels"])
    logging.info("model %s (%s), artifact %s on %s, %s%s, window %d, stride %d, batch %d, %d thread(s)%s%s",
                 " + ".join(c.model for c in cfgs), cfg.data.get("variant"), key, args.backend,
                 prec, "" if prec == "fp32" else f" on {isa}", window, stride, args.batch, args.threads,
                 ", flip TTA" if args.tta else "", ", overlapped I/O" if args.overlap else "")
    with tqdm(total=len(todo), desc="scenes", unit="scene", file=sys.stderr, disable=args.no_progress or len(todo) < 2,
              dynamic_ncols=True, position=0) as scenes_bar:
        for path in todo:
            remove_stale(args.out, path.stem)
            scene = sources.open_scene(path, cfg)
            try:
                with Staged() as staged:
                    outputs = sources.Outputs(scene, cfg, args.out, staged, args.save_prob, args.preview_max)
                    total = len(windows(scene.height, scene.width, window, stride))
                    start = time.perf_counter()
                    with tqdm(total=total, desc=path.name, unit="win", file=sys.stderr, disable=args.no_progress,
                              mininterval=1.0, dynamic_ncols=True, position=1 if len(todo) > 1 else 0,
                              leave=len(todo) < 2) as bar:
                        try:
                            stream_scene(stacked_reader(scene, cfgs), scene.height, scene.width, predict,
                                         cfg.num_classes, outputs.emit, window=window, stride=stride,
                                         divisor=cfg.divisor, batch=args.batch, progress=bar.update,
                                         overlap=args.overlap)
                        except BaseException:
                            outputs.abort()
                            raise
                    outputs.finish()
                    seconds = time.perf_counter() - start
                    staged.commit()
                    stat = path.stat()
                    histogram = {classes[i]: int(c) for i, c in enumerate(outputs.histogram)}
                    summary = {"input": str(path), "size": [scene.height, scene.width], "windows": total,
                               "seconds": round(seconds, 2),
                               "mpx_per_s": round(scene.height * scene.width / 1e6 / seconds, 4),
                               "georeferenced": scene.georeferenced,
                               "crs": str(scene.crs) if scene.georeferenced else None,
                               "class_histogram": histogram,
                               "class_fractions": {k: round(v / max(1, outputs.histogram.sum()), 4)
                                                   for k, v in histogram.items() if v},
                               "outputs": {k: {"path": str(v), "sha256": sha256(v)} for k, v in outputs.files.items()},
                               "isa": isa, "settings": settings,
                               "source": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}}
                    staged.write_json(args.out / f"{path.stem}_summary.json", summary)  # last: marks it finished
                    staged.commit()
            finally:
                scene.close()
            results.append(dict(summary, skipped=False))
            scenes_bar.update(1)
    return results


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from deploy.config import DeployError

    try:
        results = run(args)
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in results:
        top = sorted(r["class_fractions"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{r['input']}: {r['size'][0]}x{r['size'][1]}, {r['windows']} windows, "
              + ("skipped (finished earlier, outputs verified)" if r["skipped"] else
                 f"{r['seconds']:.1f} s ({r['mpx_per_s']:.3f} Mpx/s)")
              + "; top classes " + ", ".join(f"{k} {v:.1%}" for k, v in top))
        for kind, item in r["outputs"].items():
            print(f"  {kind:<14}{item['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
