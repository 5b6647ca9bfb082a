"""Sliding-window inference of an exported model on images and GeoTIFF scenes; see --help."""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="No ccache found")  # paddle's import-time notice, not ours

EXAMPLES = """examples:
  python deploy/infer.py --model-dir output/deploy/factseg50 --input scene.tif --out output/infer
  python deploy/infer.py --model-dir output/deploy/factseg50 --input images/ --out output/infer --backend onnxruntime --tta
  python deploy/infer.py --model_dir output/deploy/factseg50 --image_path a.png --save_dir out --cpu_threads 2 --enable_mkldnn true

per input <name>:
  <name>_class.tif   class ids (uint8), the input's CRS and transform (GeoTIFF input)
  <name>_class.png   class ids (uint8) for PNG/JPEG/plain TIFF input
  <name>_color.png   color preview (palette from deploy.yaml), at most --preview-max pixels per side
  <name>_prob.tif    with --save-prob: float32 probabilities, one band per class
exit status: 0 success, 2 bad input (nothing written)"""


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
    parser = argparse.ArgumentParser(
        prog="deploy/infer.py",
        description="Predict class maps of whole scenes with an exported model (deploy/export.py): the original "
                    "sliding-window evaluation (window grid, zero padding to a multiple of 32, probabilities "
                    "averaged over overlaps) with batched windows, streamed so that memory stays bounded: "
                    "windows are read from GeoTIFFs one by one and finished rows are written out at once.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", "--model_dir", "--config", dest="model_dir", type=model_dir_arg, required=True,
                        help="directory written by deploy/export.py, or its deploy.yaml (--config, as PaddleSeg's "
                             "infer.py and TIPC runner pass it)")
    parser.add_argument("--device", choices=("cpu",), default="cpu",
                        help="where to run; Paddle Inference runs on the CPU here (default: %(default)s)")
    parser.add_argument("--precision", choices=("fp32",), default="fp32",
                        help="inference precision (default: %(default)s)")
    parser.add_argument("--input", "--image_path", "--image-path", dest="input", nargs="+", required=True,
                        help="images (PNG/JPEG/BMP/TIFF/GeoTIFF) or folders of them")
    parser.add_argument("--out", "--save_dir", "--save-dir", dest="out", type=Path, required=True,
                        help="output directory")
    parser.add_argument("--backend", choices=("paddle", "onnxruntime", "openvino"), default="paddle",
                        help="paddle: Paddle Inference (oneDNN unless --enable-mkldnn false); onnxruntime: ONNX "
                             "Runtime; openvino: Paddle Inference with its OpenVINO engine (default: %(default)s)")
    parser.add_argument("--artifact", default=None,
                        help="artifact key from deploy.yaml instead of the backend's default "
                             "(paddle: paddle_legacy | paddle_pir; onnxruntime: onnx_paddle | onnx_torch)")
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
    parser.add_argument("--tta", action="store_true",
                        help="flip test-time augmentation: mean over identity, horizontal and vertical flips")
    parser.add_argument("--save-prob", "--save_prob", dest="save_prob", action="store_true",
                        help="also write the probability map (float32, one band per class)")
    parser.add_argument("--preview-max", type=int, default=4096,
                        help="longest side of the color preview; larger scenes are subsampled (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def run(args) -> list[dict]:
    """Check every input, then predict and write; raises DeployError for bad input."""
    from tqdm import tqdm

    from deploy import config, runtime, sources
    from deploy.scene import flip_tta, stream_scene
    from rsport.io import Staged
    from rsport.sliding import windows

    cfg = config.read(args.model_dir)
    runtime_name = "paddle" if args.backend == "openvino" else args.backend
    if args.backend not in cfg.data["runtimes"]:
        raise config.DeployError(f"{args.model_dir}: backend {args.backend} not exported "
                                 f"(deploy.yaml has {', '.join(cfg.data['runtimes'])}); re-export with --format")
    key, entry = cfg.runtime_artifact(runtime_name, args.artifact or cfg.data["runtimes"][args.backend]["artifact"])
    engine = "openvino" if args.backend == "openvino" else ("onednn" if args.enable_mkldnn else "native")
    if engine == "openvino" and entry["format"] != "legacy":
        raise config.DeployError(f"the OpenVINO engine runs the legacy program only, not {key}")
    window = args.window or cfg.data["sliding_window"]["window"][0]
    stride = args.stride or cfg.data["sliding_window"]["stride"][0]
    for name, value in (("window", window), ("stride", stride), ("batch", args.batch), ("threads", args.threads),
                        ("preview-max", args.preview_max)):
        if value < 1:
            raise config.DeployError(f"--{name} must be >= 1, got {value}")
    paths = sources.list_inputs(args.input)
    scenes = []
    try:
        for path in paths:  # every input checked before anything is predicted or written
            scenes.append(sources.open_scene(path, cfg))
        predictor = runtime.for_artifact(cfg.root, entry, args.threads, engine=engine)
        predict = flip_tta(predictor) if args.tta else predictor
        logging.info("model %s (%s), artifact %s on %s%s, window %d, stride %d, batch %d, %d thread(s)%s",
                     cfg.model, cfg.data.get("variant"), key, runtime_name,
                     "" if runtime_name != "paddle" else f" ({engine})",
                     window, stride, args.batch, args.threads, ", flip TTA" if args.tta else "")
        results = []
        with Staged() as staged:
            for scene in scenes:
                outputs = sources.Outputs(scene, cfg, args.out, staged, args.save_prob, args.preview_max)
                total = len(windows(scene.height, scene.width, window, stride))
                start = time.perf_counter()
                with tqdm(total=total, desc=scene.path.name, unit="win", file=sys.stderr,
                          disable=args.no_progress, mininterval=1.0, dynamic_ncols=True) as bar:
                    try:
                        stream_scene(sources.make_reader(scene, cfg), scene.height, scene.width, predict,
                                     cfg.num_classes, outputs.emit, window=window, stride=stride,
                                     divisor=cfg.divisor, batch=args.batch, progress=bar.update)
                    except BaseException:
                        outputs.abort()
                        raise
                outputs.finish()
                seconds = time.perf_counter() - start
                results.append({"input": str(scene.path), "size": [scene.height, scene.width], "windows": total,
                                "seconds": round(seconds, 2),
                                "mpx_per_s": round(scene.height * scene.width / 1e6 / seconds, 3),
                                "georeferenced": scene.georeferenced,
                                "outputs": {k: str(v) for k, v in outputs.files.items()},
                                "class_fractions": {cfg.data["output"]["classes"][i]: round(float(c) / outputs.histogram.sum(), 4)
                                                    for i, c in enumerate(outputs.histogram) if c}})
            staged.commit()
        return results
    finally:
        for scene in scenes:
            scene.close()


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
        print(f"{r['input']}: {r['size'][0]}x{r['size'][1]}, {r['windows']} windows, {r['seconds']:.1f} s "
              f"({r['mpx_per_s']:.2f} Mpx/s); top classes " + ", ".join(f"{k} {v:.1%}" for k, v in top))
        for kind, path in r["outputs"].items():
            print(f"  {kind:<14}{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
