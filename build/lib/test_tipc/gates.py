"""TIPC numeric gates: a TIPC run passes only if the numbers are right, not just the exit codes.

``loss``:   the lite training lowered the loss: the mean of the last K logged losses is below
            the mean of the first K (K = 5) by more than 2 standard errors of the difference
            (a flat, noisy curve ends lower by chance half the time), every loss is finite and
            every iteration 1..N is logged once (``SAVE_DIR/train_log.jsonl``, one JSON object
            per iteration: iter, loss, lr).
``parity``: the exported model predicts what the dynamic (dygraph) model predicts: the
            dygraph model is built from the registry with the model and variant that
            ``deploy.yaml`` names and the given weights; both run the same sliding-window
            inference (deploy.yaml's window and stride, ``rsport.sliding``) over the same scenes
            (read by ``rsport.data``); argmax agreement >= 99.99% on every scene, and every
            disagreeing pixel a near-tie of the dygraph's top two classes (margin < 2 x the
            model's fp32 probability tolerance).
            With ``--results``, the label maps that ``deploy/infer.py`` wrote in every inference
            combination (oneDNN on/off x threads x batch) are held to the same agreement.

Exit 0 when the gate passes, 1 when it fails, 2 on bad input (one ``error:`` line).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path


import numpy as np

import rsport

LOSS_WINDOW = 5
MIN_Z = 2.0  # the drop must exceed 2 standard errors: a flat curve passes "last < first" half the time
MIN_AGREEMENT = 0.9999


class GateError(ValueError):
    """Bad gate input (missing or malformed file); the message names it."""


def read_losses(path: Path) -> list[tuple[int, float]]:
    """(iter, loss) of every line of a train_log.jsonl."""
    if not path.is_file():
        raise GateError(f"{path}: no training log (did the training run?)")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            out.append((int(record["iter"]), float(record["loss"])))
        except (ValueError, KeyError, TypeError) as err:
            raise GateError(f"{path}:{number}: not a training record with iter and loss ({err})") from None
    return out


def loss_gate(records: list[tuple[int, float]], iters: int | None, window: int, min_z: float) -> tuple[bool, str]:
    """(passed, one-line verdict) for a loss curve: the mean of the last ``window`` losses must
    be below the mean of the first ``window`` by more than ``min_z`` standard errors of that
    difference (Welch), so a flat, noisy curve that ends lower by chance does not pass."""
    iters_seen = [it for it, _ in records]
    expected = list(range(1, (iters or len(records)) + 1))
    if iters_seen != expected:
        return False, f"logged iterations {iters_seen[:3]}...{iters_seen[-3:]} are not 1..{len(expected)}"
    bad = [it for it, loss in records if not math.isfinite(loss)]
    if bad:
        return False, f"non-finite loss at iterations {bad[:5]}"
    k = min(window, len(records) // 2)
    if k < 2:
        return False, f"{len(records)} iterations are too few to compare"
    first, last = [loss for _, loss in records[:k]], [loss for _, loss in records[-k:]]
    drop = statistics.fmean(first) - statistics.fmean(last)
    stderr = math.sqrt((statistics.variance(first) + statistics.variance(last)) / k)
    z = drop / stderr if stderr > 0 else (math.inf if drop > 0 else -math.inf)
    passed = z > min_z
    verdict = (f"loss gate {'passed' if passed else 'FAILED'}: mean of the first {k} losses {statistics.fmean(first):.4f}, "
               f"of the last {k} {statistics.fmean(last):.4f}: drop {drop:.4f} ({drop / statistics.fmean(first):+.1%}) "
               f"= {z:.1f} standard errors (needs > {min_z:g}) over {len(records)} iterations")
    return passed, verdict


def cmd_loss(args) -> int:
    records = read_losses(args.log)
    passed, verdict = loss_gate(records, args.iters, args.window, args.min_z)
    print(verdict)
    return 0 if passed else 1


def scene_files(path: Path, dataset: str) -> list[Path]:
    """The scenes of an inference input: one file, or every image / GeoTIFF in a folder."""
    from rsport.data.images import IMAGE_SUFFIXES
    from rsport.data.sar import GEOTIFF_SUFFIXES

    suffixes = GEOTIFF_SUFFIXES if dataset == "sen12ms_s1" else IMAGE_SUFFIXES
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes) if path.is_dir() else []
    if not files:
        raise GateError(f"{path}: no scenes ({', '.join(suffixes)})")
    return files


def read_prediction(folder: Path, scene: Path) -> np.ndarray:
    """The class-id map deploy/infer.py wrote for ``scene`` into ``folder``: ``<stem>_class.png``
    (image input) or ``<stem>_class.tif`` (GeoTIFF input)."""
    from rsport.data.errors import DataError
    from rsport.data.images import read_array
    from rsport.data.sar import read_window

    candidates = [folder / f"{scene.stem}_class.png", folder / f"{scene.stem}_class.tif"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise GateError(f"{folder}: no {scene.stem}_class.png or .tif (did the inference run?)")
    try:
        pred = read_window(found)[0] if found.suffix == ".tif" else read_array(found)
    except DataError as err:
        raise GateError(str(err)) from None
    return pred.astype(np.int64)


def agreement(reference: np.ndarray, other_pred: np.ndarray, near_tie: float) -> tuple[float, int, float]:
    """(share of pixels whose argmax agrees, disagreeing pixels, widest top-2 margin of the
    reference among them) for reference probabilities [K, H, W] and another argmax map [H, W]."""
    ref_pred = reference.argmax(0)
    differ = ref_pred != other_pred
    top2 = np.sort(reference[:, differ], axis=0)[-2:] if differ.any() else np.zeros((2, 0), np.float32)
    widest = float((top2[1] - top2[0]).max()) if top2.shape[1] else 0.0
    return float(1 - differ.mean()), int(differ.sum()), widest


def cmd_parity(args) -> int:
    from deploy import config as deploy_config
    from deploy import runtime
    from paddle_impl import backend as pb
    from rsport.compare import compare
    from rsport.data.dataset import read_raw
    from rsport.data.errors import DataError
    from rsport.sliding import predict_scene
    from rsport.tolerances import get as tolerance

    try:
        cfg = deploy_config.read(args.model_dir)
    except deploy_config.DeployError as err:
        raise GateError(str(err)) from None
    spec, variant = rsport.get(cfg.model), cfg.data["variant"]
    window, stride = (tuple(cfg.data["sliding_window"][k]) for k in ("window", "stride"))
    if not args.weights.is_file():
        raise GateError(f"{args.weights}: no such weights file")
    pb.set_threads(args.threads)
    model = pb.build(spec, variant)
    pb.load_state(model, pb.to_numpy(pb.load_file(str(args.weights))))
    _, entry = cfg.runtime_artifact("paddle", cfg.data["runtimes"]["paddle"]["artifact"])
    exported = runtime.for_artifact(cfg.root, entry, threads=args.threads, engine="onednn")
    tol = tolerance(spec.tolerance)
    near_tie = 2 * tol.atol  # each side within atol of the truth: only a margin below 2 atol can flip
    files = scene_files(args.input, spec.dataset)
    results = [Path(r) for r in args.results]
    print(f"parity gate: {spec.name} ({variant}), weights {args.weights}, exported {args.model_dir} "
          f"({entry['model_file']}, oneDNN on), window {window} stride {stride}, {len(files)} scene(s)")
    failures = []
    for path in files:
        try:
            image = (read_raw(path, spec.dataset) - cfg.mean) / cfg.std
        except DataError as err:
            raise GateError(str(err)) from None
        kwargs = dict(window=window, stride=stride, divisor=cfg.divisor)
        dygraph = predict_scene(image, lambda x: pb.forward(model, spec, x)[spec.eval_outputs[0]], spec.num_classes, **kwargs)
        static = predict_scene(image, exported, spec.num_classes, **kwargs)
        share, count, widest = agreement(dygraph, static.argmax(0), near_tie)
        diff = compare("prob", static, dygraph, tol)
        ok = share >= args.min_agreement and widest < near_tie
        print(f"  {path.name} {image.shape[1]}x{image.shape[2]}: exported vs dygraph argmax agreement {share:.6%} "
              f"({count} px differ, widest top-2 margin {widest:.1e}, near-tie < {near_tie:.0e}); "
              f"probabilities max |diff| {diff.max_abs:.2e} ({tol.name} bound {diff.bound:.0e})"
              f"{'' if ok else '  FAILED'}")
        if not ok:
            failures.append(f"{path.name}: exported model")
        for folder in results:
            try:
                pred = read_prediction(folder, path)
            except GateError as err:
                print(f"  {folder.name}: {err}  FAILED")
                failures.append(f"{path.name}: {folder.name}")
                continue
            share, count, widest = agreement(dygraph, pred, near_tie)
            ok = share >= args.min_agreement and widest < near_tie
            print(f"    {folder.name}: agreement {share:.6%} ({count} px differ, widest margin {widest:.1e})"
                  f"{'' if ok else '  FAILED'}")
            if not ok:
                failures.append(f"{path.name}: {folder.name}")
    if failures:
        print(f"parity gate FAILED ({len(failures)}): " + "; ".join(failures))
        return 1
    print(f"parity gate passed: {len(files)} scene(s), exported model and {len(results)} inference combination(s) "
          f"agree with the dygraph model on >= {args.min_agreement:.2%} of pixels, disagreements only at near-ties")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="test_tipc/gates.py", description=__doc__.split("\n\n")[0],
        epilog="examples:\n"
               "  python test_tipc/gates.py loss --log SAVE_DIR/train_log.jsonl --iters 40\n"
               "  python test_tipc/gates.py parity --model-dir ENTRY/export --weights ENTRY/train/model.pdparams \\\n"
               "      --input output/data/sample/isaid/val/images",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="gate", required=True)
    loss = sub.add_parser("loss", help="the training lowered the loss", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    loss.add_argument("--log", type=Path, required=True, help="train_log.jsonl of the training run")
    loss.add_argument("--iters", type=int, default=None, help="iterations the run had to log (default: as many as logged)")
    loss.add_argument("--window", type=int, default=LOSS_WINDOW, help="losses averaged at each end")
    loss.add_argument("--min-z", type=float, default=MIN_Z,
                      help="drop of the mean the gate needs, in standard errors of the difference")
    loss.set_defaults(run=cmd_loss)
    parity = sub.add_parser("parity", help="the exported model predicts what the dygraph model predicts",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parity.add_argument("--model-dir", type=Path, required=True, help="exported model folder (deploy.yaml)")
    parity.add_argument("--weights", type=Path, required=True, help="the .pdparams the export was made from")
    parity.add_argument("--input", type=Path, required=True, help="a scene, or a folder of scenes")
    parity.add_argument("--results", nargs="*", default=[], help="deploy/infer.py output folders to check too")
    parity.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, help="argmax agreement per scene")
    parity.add_argument("--threads", type=int, default=2, help="math threads of both runtimes")
    parity.set_defaults(run=cmd_parity)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except GateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
