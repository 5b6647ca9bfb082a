"""The framework-neutral half of ``torch_ref/train.py`` and ``paddle_impl/train.py``.

Both scripts hand this module an ``Engine`` (model, recipe, one step, checkpoint files) and get
the rest from here, so the two trees cannot drift apart: the command line, the run
configuration and how a resume fills it in, the data (``rsport.data``, identical batches in both
frameworks), the iteration loop, per-step seeds, the standard log line, the progress bar,
``train_log.jsonl`` and the checkpoint layout.

Exact resume: batch k depends only on (seed, k, rank, world size) (``rsport.data.Loader``) and
every iteration reseeds the framework RNG (dropout) with ``step_seed(seed, k, rank)``, so a
checkpoint needs no RNG or data-loader state: its model, optimizer (momentum buffers) and
scheduler state and the iteration number are everything an uninterrupted run would hold.

Checkpoint layout (``SAVE_DIR/iter_<k>/``): ``model.<pth|pdparams>``, ``optimizer.<pth|pdopt>``
and ``train_state.json`` (iteration, configuration, framework), written as one staged
transaction, ``train_state.json`` last: a folder without it is not a checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rsport.cli import add_model_args
from rsport.io import Staged
from rsport.registry import VARIANTS, UnknownModelError

log = logging.getLogger("rsport.train")

STATE_FILE = "train_state.json"
LOG_FILE = "train_log.jsonl"
OUTPUT_ROOT = Path("output") / "train"
DEFAULT_SEED = 2333  # the original configs' seed (also the embedded reference's)
TREES = {"torch": "torch_ref/train.py", "paddle": "paddle_impl/train.py"}
# Configuration entries that decide the batches and the optimisation: changing one on resume
# gives a run that no longer equals the uninterrupted one (allowed, but said).
EXACTNESS_KEYS = ("model", "variant", "data", "iters", "batch_size", "lr", "seed", "crop", "world_size", "amp")


class TrainError(ValueError):
    """Bad input to a training run (one ``error:`` line, exit 2)."""


class TrainFailure(RuntimeError):
    """The run itself failed, e.g. the loss diverged (one ``error:`` line, exit 1)."""


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint's ``train_state.json``."""

    tree: str
    model: str
    variant: str
    data: str
    iters: int
    batch_size: int
    lr: float
    seed: int
    crop: list
    save_dir: str
    save_interval: int
    log_interval: int
    num_workers: int
    amp: bool
    device: str
    threads: int
    weights: str | None = None
    resume: str | None = None
    start_iter: int = 0
    world_size: int = 1


# --- command line -------------------------------------------------------------------------------
PRECISIONS = {"fp32": False, "bf16": True}  # --precision word -> --amp


def _precision(value: str) -> bool:
    if value not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(PRECISIONS)})")
    return PRECISIONS[value]


def build_parser(tree: str) -> argparse.ArgumentParser:
    script = TREES[tree]
    parser = argparse.ArgumentParser(
        prog=script, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(f"Train a registered model ({tree}) with the original recipe (SGD momentum, weight decay, "
                    "global-norm clipping, poly LR) on the embedded sample data or an iSAID / Sentinel-1 folder. "
                    "Logs the standard PaddleSeg line and a progress bar to stderr, one JSON line per iteration "
                    f"to SAVE_DIR/{LOG_FILE}, checkpoints to SAVE_DIR/iter_<k>/ that --resume continues exactly. "
                    "Multi-process: torchrun / python -m paddle.distributed.launch (each rank reads its own shard).", 100, break_on_hyphens=False),
        epilog="examples:\n"
               f"  python {script} --model factseg50 --variant tiny --crop 128 128 --iters 200\n"
               f"  python {script} --resume output/train/factseg50/{tree}/iter_100\n"
               + ("  torchrun --nproc_per_node 2 torch_ref/train.py --model factseg50 --variant tiny --iters 20"
                  if tree == "torch" else
                  "  python -m paddle.distributed.launch --nproc_per_node 2 paddle_impl/train.py --model factseg50 "
                  "--variant tiny --iters 20"))
    add = parser.add_argument
    add_model_args(parser)  # --model (required unless --resume), --spec
    add("--data", help="dataset root in the spec's layout (default: the embedded sample data, generated if missing)")
    add("--iters", type=int, help="iterations; also the poly schedule's max_iters (default: the recipe's, 60000)")
    add("--batch-size", "--batch_size", dest="batch_size", type=int, help="samples per process (default: 2)")
    add("--lr", "--learning_rate", dest="lr", type=float, help="base learning rate (default: the recipe's, 0.007)")
    add("--save-dir", "--save_dir", dest="save_dir",
        help=f"output folder (default: {OUTPUT_ROOT}/<model>/{tree}; on --resume: the checkpoint's parent)")
    add("--resume", "--resume_model", dest="resume", help="checkpoint folder SAVE_DIR/iter_<k> to continue from")
    add("--seed", type=int, help=f"seed of the data order, augmentation and dropout (default: {DEFAULT_SEED})")
    add("--num-workers", "--num_workers", dest="num_workers", type=int,
        help="data loader worker threads; batches are the same with any number (default: 0)")
    add("--amp", action="store_true", default=None,
        help="mixed precision: bfloat16 autocast (torch CPU/GPU, paddle GPU; paddle 3.3.1 has none on CPU)")
    add("--precision", dest="amp", type=_precision, metavar="{fp32,bf16}",
        help="the same as a word, as PaddleSeg's TIPC runner passes it: fp32 (no --amp) or bf16 (--amp)")
    add("--log-interval", "--log_interval", "--log_iters", dest="log_interval", type=int,
        help="iterations between log lines (default: 10)")
    add("--variant", choices=VARIANTS, help="model size; 'tiny' is the CI-sized variant (default: default)")
    add("--crop", type=int, nargs=2, metavar=("H", "W"), help="training patch size (default: the spec's, 896 896)")
    add("--weights", help="initial weights, either framework's file (.pth / .pdparams, converted on the fly) "
                          "(default: the embedded seeded reference, identical in both trees)")
    add("--save-interval", "--save_interval", dest="save_interval", type=int,
        help="iterations between checkpoints; the last iteration is always saved (default: 1000)")
    add("--threads", type=int, help="math threads per process (default: CPU cores / processes)")
    add("--device", choices=("cpu", "gpu"), help="where to train (default: cpu)")
    return parser


def read_state(folder: str | os.PathLike) -> dict:
    """The ``train_state.json`` of a checkpoint folder, or TrainError naming what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainError(f"--resume {folder}: no such folder")
    path = folder / STATE_FILE
    if not path.is_file():
        raise TrainError(f"--resume {folder}: no checkpoint there ({STATE_FILE} missing; checkpoints are the "
                         f"iter_<k> folders under a save dir)")
    try:
        state = json.loads(path.read_text())
        TrainConfig(**state["config"])
        int(state["iter"])
    except (ValueError, KeyError, TypeError) as err:
        raise TrainError(f"{path} is not a training state: {type(err).__name__}: {err}") from None
    return state


def resolve_config(tree: str, args: argparse.Namespace, world_size: int = 1) -> tuple[TrainConfig, list[str]]:
    """The run's configuration: defaults < the resumed checkpoint's configuration < explicit flags.
    Returns it with notes (resume differences that break exactness)."""
    from rsport.registry import get as get_spec
    from rsport.cli import CliError, selected_models

    try:
        chosen = selected_models(args, required=False)
    except CliError as err:
        raise TrainError(str(err)) from None
    explicit = {k: v for k, v in vars(args).items() if v is not None and k != "spec"}
    if chosen:
        explicit["model"] = chosen[0]
    notes = []
    if "resume" in explicit:
        state = read_state(explicit["resume"])
        saved = state["config"]
        if saved["tree"] != tree:
            raise TrainError(f"--resume {explicit['resume']}: written by {TREES[saved['tree']]}, not {TREES[tree]} "
                             f"(convert the weights and start a new run with --weights instead)")
        if explicit.get("model", saved["model"]) != saved["model"]:
            raise TrainError(f"--resume {explicit['resume']} is a {saved['model']} checkpoint, not "
                             f"{explicit['model']}")
        if "weights" in explicit:
            raise TrainError("--weights and --resume exclude each other (a checkpoint holds its own weights)")
        base = dict(saved, resume=str(explicit["resume"]), start_iter=int(state["iter"]), weights=None,
                    save_dir=str(Path(explicit["resume"]).parent))
        changed = [k for k in EXACTNESS_KEYS if k in explicit and _same(explicit[k]) != _same(saved[k])]
        if world_size != saved["world_size"]:
            changed.append("world_size")
        if changed:
            notes.append("resume with changed " + ", ".join(f"{k} ({saved[k]} -> {explicit.get(k, world_size)})"
                                                            for k in changed)
                         + ": the run will not equal an uninterrupted one")
    else:
        if "model" not in explicit:
            raise TrainError("--model is required (or --resume a checkpoint)")
        try:
            spec = get_spec(explicit["model"])
        except UnknownModelError as err:
            raise TrainError(str(err)) from None
        recipe = spec.recipe
        base = dict(tree=tree, model=spec.name, variant="default", data=None, iters=recipe["max_iters"],
                    batch_size=2, lr=recipe["lr"], seed=DEFAULT_SEED, crop=list(spec.input_size),
                    save_dir=str(OUTPUT_ROOT / spec.name / tree), save_interval=1000, log_interval=10,
                    num_workers=0, amp=False, device="cpu", threads=0, weights=None, resume=None, start_iter=0)
    base.update({k: v for k, v in explicit.items() if k in {f.name for f in fields(TrainConfig)} and k != "resume"})
    base["crop"] = list(base["crop"])
    base["world_size"] = world_size
    if not base.get("threads"):
        base["threads"] = max(1, (os.cpu_count() or 1) // world_size)
    cfg = TrainConfig(**base)
    for name in ("iters", "batch_size", "save_interval", "log_interval", "threads"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.num_workers < 0 or min(cfg.crop) < 1 or not cfg.lr > 0:
        raise TrainError(f"bad value: --num-workers {cfg.num_workers}, --crop {cfg.crop}, --lr {cfg.lr}")
    if cfg.start_iter >= cfg.iters:
        raise TrainError(f"--resume {cfg.resume}: the checkpoint is at iteration {cfg.start_iter}, nothing left "
                         f"of --iters {cfg.iters}")
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise TrainError(f"--weights {cfg.weights}: no such file")
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise TrainError(f"--data {cfg.data}: no such folder")
    return cfg, notes


def _same(value):
    return list(value) if isinstance(value, (list, tuple)) else value


# --- small pieces -------------------------------------------------------------------------------
def step_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """The framework RNG seed of one iteration of one process (dropout masks): a pure function,
    so a resumed run draws what the uninterrupted one drew."""
    digest = hashlib.sha256(f"rsport-train/{seed}/{iteration}/{rank}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def format_eta(seconds: float) -> str:
    """hh:mm:ss (hours may exceed 24), as PaddleSeg's calculate_eta."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def log_line(epoch: int, iteration: int, iters: int, loss: float, lr: float, batch_cost: float,
             reader_cost: float, ips: float, eta: str) -> str:
    """PaddleSeg's standard training line (paddleseg/core/train.py), field for field."""
    return (f"[TRAIN] epoch: {epoch}, iter: {iteration}/{iters}, loss: {loss:.4f}, lr: {lr:.6f}, "
            f"batch_cost: {batch_cost:.4f}, reader_cost: {reader_cost:.5f}, ips: {ips:.4f} samples/sec | ETA {eta}")


class Window:
    """Averages over the iterations since the last log line (PaddleSeg's TimeAverager)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.count, self.loss, self.batch, self.reader, self.samples = 0, 0.0, 0.0, 0.0, 0

    def add(self, loss: float, batch_cost: float, reader_cost: float, samples: int):
        self.count += 1
        self.loss += loss
        self.batch += batch_cost
        self.reader += reader_cost
        self.samples += samples

    def averages(self) -> tuple[float, float, float, float]:
        """(loss, batch_cost, reader_cost, ips) over the window."""
        n = max(self.count, 1)
        return self.loss / n, self.batch / n, self.reader / n, self.samples / max(self.batch, 1e-12)


class TrainLog:
    """``train_log.jsonl``: one JSON object per iteration (iter, epoch, loss, lr), flushed each line.
    On resume the file keeps the lines up to the checkpoint's iteration (taken from the save dir's
    log, else from the log beside the checkpoint), so it reads like one uninterrupted run.
    ``rollback()`` puts the save dir back as it was before (a run that fails before its first
    checkpoint leaves nothing behind)."""

    def __init__(self, path: Path, start_iter: int = 0, previous: Path | None = None):
        self.path = path
        self.before = path.read_bytes() if path.is_file() else None
        kept = []
        if start_iter:
            for source in (path, previous):
                if source is not None and source.is_file():
                    kept = [line for line in source.read_text().splitlines()
                            if line.strip() and json.loads(line)["iter"] <= start_iter]
                    if kept:
                        break
        self.created: list[Path] = []
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            self.created.append(folder)
            folder = folder.parent
        with Staged() as staged:
            staged.path(path).write_text("".join(line + "\n" for line in kept))
            staged.commit()
        self.file = open(path, "a")

    def write(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def rollback(self) -> None:
        """Restore the log as it was before this run (remove it, and the folders created for it,
        if there was none); never raises, so the error that caused it is the one reported."""
        self.close()
        try:
            if self.before is None:
                self.path.unlink(missing_ok=True)
                for folder in self.created:
                    folder.rmdir()
            else:
                with Staged() as staged:
                    staged.path(self.path).write_bytes(self.before)
                    staged.commit()
        except OSError as err:
            log.warning("warning: could not restore %s: %s", self.path, err)


def read_log(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def checkpoint_dir(save_dir: str | os.PathLike, iteration: int) -> Path:
    return Path(save_dir) / f"iter_{iteration}"


# --- the run ------------------------------------------------------------------------------------
def open_data(cfg: TrainConfig, spec):
    """The training set of a run (layout, image/label pairs and sizes checked; DataError)."""
    from rsport import data

    root = Path(cfg.data) if cfg.data is not None else data.default_root(spec)
    return data.build_dataset(spec, root, "train", crop=tuple(cfg.crop), seed=cfg.seed)


def check_data(dataset, cfg: TrainConfig) -> None:
    """Read every training scene (images and labels, label values included) before anything is
    written; DataError names the first bad file. All of them, not only those the first
    iterations draw: wrong data is refused whatever the run's length, and every rank of a
    multi-process run stops on the same error. Costs one decoding pass over the training set
    (threads)."""
    start = time.perf_counter()
    n = dataset.check(workers=max(1, min(cfg.threads, 8)))
    log.info("checked %d training scenes (images, labels, label values) in %.1f s", n, time.perf_counter() - start)


def train(cfg: TrainConfig, engine, spec, progress: bool = True, dataset=None) -> list[float]:
    """The loop: batches from ``rsport.data``, ``engine.step``, logs, checkpoints, final weights.
    The training data is checked before anything is written; a run that fails before its
    first checkpoint puts the save dir back as it was. Returns this process's logged losses."""
    from tqdm import tqdm

    from rsport import data

    main_process = engine.rank == 0
    dataset = open_data(cfg, spec) if dataset is None else dataset
    check_data(dataset, cfg)
    iters_per_epoch = max(1, len(dataset) // (cfg.batch_size * engine.world_size))
    loader = data.Loader(dataset, cfg.batch_size, seed=cfg.seed, shuffle=True, drop_last=True,
                         num_workers=cfg.num_workers, start_iter=cfg.start_iter, rank=engine.rank,
                         world_size=engine.world_size)
    save_dir = Path(cfg.save_dir)
    train_log = None
    if main_process:
        previous = Path(cfg.resume).parent / LOG_FILE if cfg.resume else None
        train_log = TrainLog(save_dir / LOG_FILE, cfg.start_iter, previous)
        log.info("%s %s (%s) on %s: %d train samples, iters %d..%d, batch %d x %d, crop %s, lr %g, seed %d%s",
                 TREES[cfg.tree], cfg.model, cfg.variant, cfg.data or data.default_root(spec), len(dataset),
                 cfg.start_iter + 1, cfg.iters, cfg.batch_size, engine.world_size, "x".join(map(str, cfg.crop)),
                 cfg.lr, cfg.seed, f", resumed from {cfg.resume}" if cfg.resume else "")
    bar = tqdm(total=cfg.iters, initial=cfg.start_iter, disable=not (progress and main_process), file=sys.stderr,
               dynamic_ncols=True, leave=False, desc=f"train {cfg.model}")
    window, losses = Window(), []
    batches = iter(loader)
    iteration, tic = cfg.start_iter, time.perf_counter()
    last_saved = None
    try:
        while iteration < cfg.iters:
            x, y = next(batches)
            reader_cost = time.perf_counter() - tic
            iteration += 1
            loss, lr = engine.step(x, y, step_seed(cfg.seed, iteration, engine.rank))
            loss = engine.mean(loss)
            if not math.isfinite(loss):
                raise TrainFailure(f"loss is {loss} at iteration {iteration} (lr {lr:g}): training diverged; "
                                   + (f"the last checkpoint is {last_saved}" if last_saved else
                                      f"no checkpoint was saved, {save_dir} is as it was"))
            losses.append(loss)
            window.add(loss, time.perf_counter() - tic, reader_cost, len(x))
            epoch = (iteration - 1) // iters_per_epoch + 1
            if main_process:
                train_log.write(iter=iteration, epoch=epoch, loss=loss, lr=lr)
                if iteration % cfg.log_interval == 0 or iteration == cfg.iters:
                    avg_loss, batch_cost, avg_reader, ips = window.averages()
                    line = log_line(epoch, iteration, cfg.iters, avg_loss, lr, batch_cost, avg_reader, ips,
                                    format_eta((cfg.iters - iteration) * batch_cost))
                    bar.write(line, file=sys.stderr)
                    window.reset()
                if iteration % cfg.save_interval == 0 or iteration == cfg.iters:
                    last_saved = save_checkpoint(cfg, engine, iteration)
            bar.update(1)
            tic = time.perf_counter()
    except Exception:
        bar.leave = True  # the bar stays where the run stopped and ends its line: the error starts a new one
        bar.close()
        if train_log is not None and last_saved is None:
            train_log.rollback()
        raise
    finally:
        bar.close()
        if train_log is not None:
            train_log.close()
    if main_process:
        with Staged() as staged:
            engine.write_weights(staged, save_dir / f"model{engine.weights_suffix}")
            staged.commit()
        log.info("saved %s and checkpoints under %s", save_dir / f"model{engine.weights_suffix}", save_dir)
    return losses


def save_checkpoint(cfg: TrainConfig, engine, iteration: int) -> Path:
    folder = checkpoint_dir(cfg.save_dir, iteration)
    with Staged() as staged:
        engine.write_checkpoint(staged, folder)
        staged.write_json(folder / STATE_FILE, {"iter": iteration, "config": asdict(cfg),
                                                "framework": engine.framework})
        staged.commit()
    return folder


def setup_logging() -> None:
    """rsport's loggers write bare lines to stderr, whatever handlers a framework put on the root."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("rsport")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(tree: str, make_engine, argv=None) -> int:
    """The whole command line of ``<tree>/train.py``: parse, resolve, check, build, train; bad
    input -> one ``error:`` line and exit 2, with nothing created: the flags, the save folder,
    the data (every scene the run reads) and the weights are checked before the first file is
    written."""
    from rsport import data
    from rsport.io import PATH_ERRNOS, OutputError, check_output, describe_os_error

    args = build_parser(tree).parse_args(argv)
    setup_logging()
    world_size = int(os.environ.get("WORLD_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", "1")))
    try:
        cfg, notes = resolve_config(tree, args, world_size)
        from rsport.registry import get as get_spec

        spec = get_spec(cfg.model)
        check_output(cfg.save_dir, "folder", "--save-dir")
        dataset = open_data(cfg, spec)
        engine = make_engine(spec, cfg)
        if engine.rank == 0:
            for note in notes:
                log.warning("warning: %s", note)
        train(cfg, engine, spec, dataset=dataset)
    except (TrainError, data.DataError, UnknownModelError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainFailure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the checks passed, yet writing failed (e.g. a full disk)
        print(f"error: writing failed: {describe_os_error(err)}", file=sys.stderr)
        return 2 if err.errno in PATH_ERRNOS else 1
    return 0
