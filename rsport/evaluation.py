"""The framework-neutral half of ``torch_ref/eval.py`` and ``paddle_impl/eval.py``.

Each model evaluates with ITS original protocol (the registry's ``eval_protocol``): FactSeg and
FarSeg the sliding window of FarSeg's ``isaid_eval.py`` (window 896, stride 512), RSP's mmseg
configs slide 512 / 384 with flip, the whole-image configs one pass per scene. Every whole val
scene is predicted by ``rsport.sliding.predict_scene`` (zero pad to a multiple of 32,
probabilities averaged over overlaps and, with flip, over the mirror image),
its argmax is counted into ONE global confusion matrix (the framework's own metric code,
``metrics.confusion_matrix``), and the metrics come from that matrix.

Metric definitions (one place; numpy, float64): rows are labels, columns predictions;
IoU_c = TP / (TP + FP + FN); F1_c = 2 TP / (2 TP + FP + FN) (= Dice); precision / recall;
classes absent from labels and predictions (TP + FP + FN = 0) are NaN and left out of the means;
mIoU-fg averages classes 1..K-1 (class 0 is background); OA = trace / total;
kappa = (OA - pe) / (1 - pe), pe = sum(rows * cols) / total^2. Means are sequential
left-to-right sums, as in torch_ref/ and paddle_impl/metrics.py.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rsport.cli import add_model_args
from rsport.io import PATH_ERRNOS, OutputError, Staged, check_output, describe_os_error
from rsport.registry import VARIANTS

log = logging.getLogger("rsport.eval")

OUTPUT_ROOT = Path("output") / "eval"
TREES = {"torch": "torch_ref/eval.py", "paddle": "paddle_impl/eval.py"}
DIVISOR = 32  # windows are zero-padded to a multiple of this (the original isaid_eval's DivisiblePad)
WHOLE = 1 << 30  # a window larger than any scene: clipped to the scene, one pass ("whole" protocol)


class EvalError(ValueError):
    """Bad input to an evaluation (one ``error:`` line, exit 2)."""


class CheckError(RuntimeError):
    """A cross-check of the metric code failed (exit 1)."""


@dataclass
class EvalConfig:
    tree: str
    model: str
    variant: str
    weights: str | None
    data: str | None
    split: str
    window: int
    stride: int
    flip: bool
    divisor: int
    batch: int
    out: str
    threads: int
    device: str


# --- metrics ------------------------------------------------------------------------------------
def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """[K, K] int64 counts, rows = label, columns = prediction; ``ignore_index`` pixels skipped."""
    valid = label != ignore_index
    index = label[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def sequential_mean(values: np.ndarray) -> float:
    """Mean by a left-to-right sum (the frameworks' metric twins round the same way); NaN if empty."""
    return float(np.cumsum(values)[-1] / len(values)) if len(values) else float("nan")


def summarize(confusion: np.ndarray) -> dict:
    """Every metric of a global confusion matrix (see the module docstring), float64."""
    cm = np.asarray(confusion, dtype=np.float64)
    diag = np.diagonal(cm)
    rows, cols = cm.sum(axis=1), cm.sum(axis=0)
    union = rows + cols - diag
    present = union > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / union
        f1 = 2 * diag / (rows + cols)
        precision = diag / cols
        recall = diag / rows
    total = cm.sum()
    oa = diag.sum() / total if total else float("nan")
    expected = (rows * cols).sum() / (total * total) if total else float("nan")
    return {
        "iou": iou, "miou": sequential_mean(iou[present]), "miou_fg": sequential_mean(iou[1:][present[1:]]),
        "oa": float(oa), "kappa": float((oa - expected) / (1 - expected)) if total else float("nan"),
        "f1": f1, "mf1": sequential_mean(f1[present]), "precision": precision, "recall": recall,
        "present": present,
    }


def _json_value(value):
    """NaN (absent class) -> null; numpy -> plain Python."""
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def report(confusion: np.ndarray, class_names, meta: dict) -> dict:
    """The JSON document: metrics (NaN as null), per-class lists in class order, the matrix, meta."""
    found = summarize(confusion)
    metrics = {key: _json_value(found[key]) for key in ("miou", "miou_fg", "oa", "kappa", "mf1")}
    per_class = {key: _json_value(found[key]) for key in ("iou", "f1", "precision", "recall")}
    return {**metrics, **per_class, "classes": list(class_names), "confusion": np.asarray(confusion).tolist(),
            "pixels": int(np.asarray(confusion).sum()), **meta}


def format_table(doc: dict) -> str:
    """Per-class IoU / F1 / precision / recall and the summary metrics, as a text table."""
    from prettytable import PrettyTable

    def cell(value):
        return "-" if value is None else f"{100 * value:.2f}"

    table = PrettyTable(["class", "IoU %", "F1 %", "precision %", "recall %"])
    for i, name in enumerate(doc["classes"]):
        table.add_row([f"{i} {name}", cell(doc["iou"][i]), cell(doc["f1"][i]), cell(doc["precision"][i]),
                       cell(doc["recall"][i])])
    table.align["class"] = "l"
    summary = PrettyTable(["mIoU %", "mIoU-fg %", "OA %", "kappa", "mF1 %", "pixels"])
    summary.add_row([cell(doc["miou"]), cell(doc["miou_fg"]), cell(doc["oa"]),
                     "-" if doc["kappa"] is None else f"{doc['kappa']:.4f}", cell(doc["mf1"]), doc["pixels"]])
    return f"{table}\n{summary}"


# --- command line -------------------------------------------------------------------------------
def build_parser(tree: str) -> argparse.ArgumentParser:
    script = TREES[tree]
    parser = argparse.ArgumentParser(
        prog=script, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(f"Evaluate a registered model ({tree}) by the original sliding-window algorithm over whole "
                    "scenes (window, stride, zero pad to a multiple of 32, probabilities averaged over overlaps) "
                    "and one global confusion matrix: mIoU, mIoU-fg, per-class IoU, OA, kappa, F1. Prints a "
                    "table to stdout and writes the metrics as JSON.", 100, break_on_hyphens=False),
        epilog="examples:\n"
               f"  python {script} --model factseg50 --weights output/train/factseg50/{tree}/model"
               f"{'.pth' if tree == 'torch' else '.pdparams'}\n"
               f"  python {script} --model factseg50 --variant tiny --window 128 --stride 96 --out m.json")
    add = parser.add_argument
    add_model_args(parser, required=True)
    add("--weights", "--model_path", dest="weights",
        help="weights, either framework's file (.pth / .pdparams, converted on the fly) "
             "(default: the embedded seeded reference, identical in both trees)")
    add("--data", "--dataset_root", dest="data",
        help="dataset root in the spec's layout (default: the embedded sample data, generated if missing)")
    add("--split", default="val", help="split to evaluate (default: %(default)s)")
    add("--variant", choices=VARIANTS, default="default", help="model size (default: %(default)s)")
    add("--window", type=int, help="sliding window size (default: the model's eval protocol, e.g. 896)")
    add("--stride", type=int, help="sliding window stride (default: the model's eval protocol, e.g. 512)")
    add("--flip", choices=("on", "off"), help="horizontal flip test-time augmentation (default: the model's protocol)")
    add("--batch", type=int, default=1, help="windows per forward pass (default: %(default)s)")
    add("--out", help=f"metrics JSON (default: {OUTPUT_ROOT}/<model>[_tiny]_{tree}.json)")
    add("--threads", type=int, default=0, help="math threads (default: all CPU cores)")
    add("--device", choices=("cpu", "gpu"), default="cpu", help="where to run (default: %(default)s)")
    return parser


def resolve_config(tree: str, args: argparse.Namespace) -> EvalConfig:
    import os

    from rsport.registry import get as get_spec

    from rsport.cli import CliError, selected_models

    try:
        spec = get_spec(selected_models(args)[0])
    except CliError as err:
        raise EvalError(str(err)) from None
    if args.weights is not None and not Path(args.weights).is_file():
        raise EvalError(f"--weights {args.weights}: no such file")
    if args.data is not None and not Path(args.data).is_dir():
        raise EvalError(f"--data {args.data}: no such folder")
    protocol = spec.eval_protocol
    whole = protocol["mode"] == "whole"
    window = args.window if args.window is not None else (WHOLE if whole else protocol["window"])
    stride = args.stride if args.stride is not None else (WHOLE if whole else protocol["stride"])
    flip = protocol.get("flip", False) if args.flip is None else args.flip == "on"
    if min(window, stride, args.batch) < 1:
        raise EvalError(f"--window, --stride and --batch must be >= 1, got {window}, {stride}, {args.batch}")
    suffix = "" if args.variant == "default" else f"_{args.variant}"
    out = args.out or str(OUTPUT_ROOT / f"{spec.name}{suffix}_{tree}.json")
    try:
        check_output(out, "file", "--out")
    except OutputError as err:
        raise EvalError(str(err)) from None
    return EvalConfig(tree, spec.name, args.variant, args.weights, args.data, args.split, window, stride, flip,
                      DIVISOR, args.batch, out, args.threads or os.cpu_count() or 1, args.device)


def evaluate(cfg: EvalConfig, evaluator, spec, progress: bool = True) -> dict:
    """Predict every scene of the split, count one global confusion matrix, build the report."""
    from tqdm import tqdm

    from rsport import data
    from rsport.sliding import predict_scene

    root = Path(cfg.data) if cfg.data is not None else data.default_root(spec)
    dataset = data.build_dataset(spec, root, cfg.split)
    if len(dataset) == 0:
        raise EvalError(f"{root}: no {cfg.split} scenes")
    names = {"isaid": data.ISAID_CLASSES, "sen12ms_s1": data.DFC_CLASSES}.get(spec.dataset, ())
    if len(names) != spec.num_classes:
        names = [str(i) for i in range(spec.num_classes)]
    confusion = np.zeros((spec.num_classes, spec.num_classes), np.int64)
    start = time.perf_counter()
    log.info("%s %s (%s) on %s/%s: %d scenes, %s%s", TREES[cfg.tree], cfg.model, cfg.variant, root, cfg.split,
             len(dataset), "whole scenes" if cfg.window >= WHOLE else f"window {cfg.window}, stride {cfg.stride}",
             ", flip" if cfg.flip else "")
    bar = tqdm(total=len(dataset), disable=not progress, file=sys.stderr, dynamic_ncols=True, leave=False,
               desc=f"eval {cfg.model}")
    try:
        for i in range(len(dataset)):
            raw, label, _ = dataset.scene(i)
            probs = predict_scene(dataset.normalize(raw), evaluator.predict, spec.num_classes, window=cfg.window,
                                  stride=cfg.stride, divisor=cfg.divisor, batch=cfg.batch, flip=cfg.flip)
            pred = probs.argmax(axis=0).astype(np.int64)
            confusion += evaluator.confusion(pred, np.asarray(label, dtype=np.int64))
            bar.update(1)
    except Exception:
        bar.leave = True  # the bar stays where the run stopped and ends its line: the error starts a new one
        raise
    finally:
        bar.close()
    doc = report(confusion, names, {
        "model": cfg.model, "variant": cfg.variant, "framework": cfg.tree, "scenes": len(dataset),
        "data": str(root), "config": asdict(cfg), "seconds": round(time.perf_counter() - start, 2)})
    doc.update(evaluator.checks(confusion, doc))
    return doc


def main(tree: str, make_evaluator, argv=None) -> int:
    """The whole command line of ``<tree>/eval.py``; bad input -> one ``error:`` line, exit 2; a
    failed cross-check of the metric code -> exit 1."""
    from rsport.registry import get as get_spec
    from rsport import data
    from rsport.training import setup_logging

    args = build_parser(tree).parse_args(argv)
    setup_logging()
    try:
        cfg = resolve_config(tree, args)
        spec = get_spec(cfg.model)
        doc = evaluate(cfg, make_evaluator(spec, cfg), spec)
        with Staged() as staged:
            staged.write_json(cfg.out, doc)
            staged.commit()
    except (EvalError, data.DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the checks passed, yet writing failed (e.g. a full disk)
        print(f"error: writing failed: {describe_os_error(err)}", file=sys.stderr)
        return 2 if err.errno in PATH_ERRNOS else 1
    print(format_table(doc))
    print(f"mIoU {100 * doc['miou']:.2f}  ->  {cfg.out}" if doc["miou"] is not None else f"-> {cfg.out}")
    return 0
