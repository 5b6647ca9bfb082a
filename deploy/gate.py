"""The accuracy gate of reduced-precision artifacts (deploy/export.py ``--precision bf16|int8``).

Speed that changes the map is no speed. A bf16 or int8 artifact is accepted only if, on the
gate scenes (the val split of the model's data, by default the embedded sample data) and with
TRAINED weights, its class map agrees with the fp32 model's:

* agreement: the share of pixels whose class equals the fp32 class is at least ``MIN_AGREEMENT``;
* margin: every pixel that disagrees sits where the fp32 top-2 probability margin is below the
  precision's ``MARGIN_BOUND`` (a disagreement at a confident fp32 pixel is a real error, not
  rounding);
* mIoU: against the scenes' labels, the artifact's mIoU differs from fp32's by at most
  ``MAX_MIOU_DELTA`` points.

Why trained weights: untrained weights on any input give near-uniform probabilities, so almost
every pixel is a near-tie and agreement says nothing. The gate weights are trained here, briefly
and seeded, with the repository's own training (``torch_ref/train.py``'s entry point) on the
gate data's train split, and cached under ``output/gate/<model>/`` with how long they took.

The fp32 reference is the torch model (eager, float32) on the same weights; every scene goes
through the original sliding window (``rsport.sliding.predict_scene``) with the deploy.yaml grid.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

GATE_ROOT = Path("output") / "gate"
# The brief seeded training run behind the gate weights (torch tree, original recipe, sample
# data): long enough that the class maps are confident away from class borders, short enough
# to run on two cores (measured times in deploy/README.md).
GATE_TRAIN = {"default": dict(crop=128, batch_size=2, iters=150, seed=2333),
              "tiny": dict(crop=128, batch_size=2, iters=60, seed=2333)}
META_FILE = "gate_train.json"


class GateError(RuntimeError):
    """The gate weights could not be made (one line)."""


def weights_dir(spec, variant: str, root: Path = GATE_ROOT) -> Path:
    return Path(root) / (spec.name if variant == "default" else f"{spec.name}_{variant}")


def trained_weights(spec, variant: str = "default", root: Path = GATE_ROOT, data: Path | None = None) -> tuple[Path, dict]:
    """The cached gate weights of ``spec`` (torch ``model.pth``) and their record; trained first
    when missing or made with another recipe. Returns ``(path, meta)``."""
    folder = weights_dir(spec, variant, root)
    recipe = dict(GATE_TRAIN[variant], data=None if data is None else str(data))
    meta_path, weights = folder / META_FILE, folder / "model.pth"
    if meta_path.is_file() and weights.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") == recipe and meta.get("model") == spec.name:
            return weights, meta
    from rsport.io import Staged, sha256
    from torch_ref import train as torch_train

    argv = ["--model", spec.name, "--variant", variant, "--crop", str(recipe["crop"]), str(recipe["crop"]),
            "--iters", str(recipe["iters"]), "--batch-size", str(recipe["batch_size"]), "--seed", str(recipe["seed"]),
            "--save-dir", str(folder), "--save-interval", str(recipe["iters"]), "--log-interval", "50"]
    if data is not None:
        argv += ["--data", str(data)]
    log.info("%s (%s): training the gate weights: torch_ref/train.py %s", spec.name, variant, " ".join(argv))
    start = time.perf_counter()
    code = torch_train.main(argv)
    seconds = time.perf_counter() - start
    if code != 0 or not weights.is_file():
        raise GateError(f"{spec.name}: training the gate weights failed (torch_ref/train.py exit {code})")
    losses = [json.loads(line)["loss"] for line in (folder / "train_log.jsonl").read_text().splitlines()]
    meta = {"model": spec.name, "variant": variant, "recipe": recipe, "seconds": round(seconds, 1),
            "command": "python torch_ref/train.py " + " ".join(argv), "loss_first_10": float(np.mean(losses[:10])),
            "loss_last_10": float(np.mean(losses[-10:])), "sha256": sha256(weights)}
    with Staged() as staged:
        staged.write_json(meta_path, meta)
        staged.commit()
    log.info("%s (%s): gate weights trained in %.0f s (loss %.3f -> %.3f), %s", spec.name, variant, seconds,
             meta["loss_first_10"], meta["loss_last_10"], weights)
    return weights, meta


# --- the gate ---------------------------------------------------------------------------------
MIN_AGREEMENT = 0.999  # share of pixels whose class equals fp32's
MAX_MIOU_DELTA = 0.1  # |mIoU - fp32 mIoU| in points, against the scenes' labels
# Widest fp32 top-2 probability margin at which a reduced-precision class may differ from fp32's,
# calibrated on the gate weights (deploy/README.md has every figure):
# * bf16: torch's own bf16 autocast (correct bf16 arithmetic, no deploy code involved) flips
#   classes at fp32 margins up to 0.088 (upernet_r50; factseg50 0.040, vit_s16_upernet 0.025,
#   farseg50 and deeplabv3p_r50 none); OpenVINO bf16 up to 0.088 too. Bound 0.1.
# * int8: the static int8 candidates (ONNX Runtime, OpenVINO) flip at up to 0.16 on factseg50;
#   a mis-calibrated model (every convolution including the logits, MinMax) at 0.78. Bound 0.2.
MARGIN_BOUND = {"bf16": 0.1, "int8": 0.2}


@dataclass
class GateScene:
    name: str
    image: np.ndarray  # normalized [C, H, W] float32
    label: np.ndarray  # [H, W] int64 class ids, ignore_index where unlabeled


def scenes(spec, split: str = "val", data: Path | None = None) -> list[GateScene]:
    """The gate's scenes (``val``) or the calibration scenes (``train``) of the data root
    (default: the embedded sample data, generated if missing)."""
    from rsport import data as rdata

    root = Path(data) if data is not None else rdata.default_root(spec)
    dataset = rdata.build_dataset(spec, root, split)
    out = []
    for i in range(len(dataset.scenes)):
        raw, label, name = dataset.scene(i)
        out.append(GateScene(name, dataset.normalize(raw), label))
    if not out:
        raise GateError(f"{root}: no {split} scenes for the gate")
    return out


def windows_of(items: list[GateScene], window: int, stride: int) -> list[np.ndarray]:
    """Every window of the deploy grid over ``items`` (calibration inputs)."""
    from rsport.sliding import windows

    return [s.image[:, y0:y1, x0:x1] for s in items for y0, x0, y1, x1 in windows(*s.image.shape[1:], window, stride)]


def calibration_windows(spec, data: Path | None = None, tile: int | None = None) -> list[np.ndarray]:
    """int8 calibration inputs: the gate data's training scenes cut into ``tile`` x ``tile``
    windows (deploy/quantize.py ``TILE``; the whole scene where it is smaller)."""
    from deploy.quantize import TILE

    tile = tile or TILE
    return windows_of(scenes(spec, "train", data), tile, tile)


def predict_all(predict: Callable, items: list[GateScene], num_classes: int, window: int, stride: int,
                divisor: int = 32) -> list[np.ndarray]:
    from rsport.sliding import predict_scene

    return [predict_scene(s.image, predict, num_classes, window=window, stride=stride, divisor=divisor)
            for s in items]


def judge(precision: str, reference: list[np.ndarray], probs: list[np.ndarray], items: list[GateScene],
          num_classes: int, ignore_index: int, margin_bound: float | None = None) -> dict:
    """The gate figures of one reduced-precision artifact against the fp32 probabilities."""
    from rsport.evaluation import confusion_matrix, summarize

    bound = MARGIN_BOUND[precision] if margin_bound is None else margin_bound
    pixels = agree = 0
    widest, max_abs = 0.0, 0.0
    cm_ref = np.zeros((num_classes, num_classes), np.int64)
    cm_low = np.zeros_like(cm_ref)
    for ref, low, item in zip(reference, probs, items):
        ids_ref, ids_low = ref.argmax(0), low.argmax(0)
        same = ids_ref == ids_low
        pixels += same.size
        agree += int(same.sum())
        max_abs = max(max_abs, float(np.abs(ref - low).max()))
        if not same.all():
            top2 = np.sort(ref[:, ~same], axis=0)[-2:]
            widest = max(widest, float((top2[1] - top2[0]).max()))
        cm_ref += confusion_matrix(ids_ref, item.label, num_classes, ignore_index)
        cm_low += confusion_matrix(ids_low, item.label, num_classes, ignore_index)
    miou_ref, miou_low = summarize(cm_ref)["miou"] * 100, summarize(cm_low)["miou"] * 100
    figures = {"precision": precision, "scenes": len(items), "pixels": pixels, "agreement": agree / pixels,
               "disagreeing_pixels": pixels - agree, "widest_disagreement_margin": widest,
               "margin_bound": bound, "miou_fp32": round(miou_ref, 4), "miou": round(miou_low, 4),
               "miou_delta_points": round(miou_low - miou_ref, 4), "max_abs_prob": max_abs,
               "min_agreement": MIN_AGREEMENT, "max_miou_delta_points": MAX_MIOU_DELTA}
    failed = []
    if figures["agreement"] < MIN_AGREEMENT:
        failed.append(f"agreement {figures['agreement']:.4%} < {MIN_AGREEMENT:.1%}")
    if widest >= bound:
        failed.append(f"a disagreement at fp32 top-2 margin {widest:.3f} >= {bound:g}")
    if abs(figures["miou_delta_points"]) > MAX_MIOU_DELTA:
        failed.append(f"mIoU {miou_low:.2f} vs fp32 {miou_ref:.2f} ({figures['miou_delta_points']:+.2f} points, "
                      f"bound {MAX_MIOU_DELTA:g})")
    figures["failed"] = failed
    figures["passed"] = not failed
    return figures


def summary_line(figures: dict) -> str:
    return (f"agreement {figures['agreement']:.4%} ({figures['disagreeing_pixels']} of {figures['pixels']} px differ), "
            f"widest margin {figures['widest_disagreement_margin']:.3g} (bound {figures['margin_bound']:g}), "
            f"mIoU {figures['miou']:.2f} vs {figures['miou_fp32']:.2f} ({figures['miou_delta_points']:+.3f} pt)")
