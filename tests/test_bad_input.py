"""Bad input to every command that reads a checkpoint or writes an output, as one table.

Each case runs the real command line (a subprocess, as a user runs it) and asserts:
- the exit code (2 bad input, 1 a check that failed after the input was accepted);
- exactly one line containing ``error:`` on stderr, and it STARTS with ``error: `` (a line split
  on ``\\n`` only: an error printed onto a progress bar's ``\\r`` line fails), no traceback;
- the expected words: the first in that error line, the others anywhere in stderr (the hints);
- nothing changed: a snapshot (paths, sizes, mtimes) of the output folder, which holds a file of
  a previous run, and of the inputs, taken before and after.

The README's "bad input" lists match these rows (cases 'issue 15' are the ones that issue reported).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest

import rsport
from rsport import data, training
from tests.conftest import ROOT

T2P, P2T = "convert/torch2paddle.py", "convert/paddle2torch.py"
TRAIN, PTRAIN = "torch_ref/train.py", "paddle_impl/train.py"
EVAL, PEVAL = "torch_ref/eval.py", "paddle_impl/eval.py"
ALIGN, EXPORT = "align/run_all.py", "deploy/export.py"

CONVERT = ["factseg50", "--variant", "tiny", "--dst", "{out}/result.pdparams"]
TRAIN_ARGS = ["--model", "factseg50", "--variant", "tiny", "--crop", "64", "64", "--batch-size", "2", "--threads", "1",
              "--iters", "1", "--save-dir", "{out}/run"]
EVAL_ARGS = ["--model", "factseg50", "--variant", "tiny", "--out", "{out}/metrics.json"]
ALIGN_ARGS = ["--variant", "tiny", "--steps", "data,forward", "--dtype", "float32", "--threads", "1", "--out",
              "{out}/align"]
EXPORT_ARGS = ["--variant", "tiny", "--out", "{out}/deploy"]

# convert/torch2paddle.py with a porting bug injected into the paddle twin (BN epsilon 1e-3 in the
# decoders): conversion is accepted, the float64 parity check fails -> exit 1, nothing written
TWINS_DISAGREE = """
import sys
import paddle_impl.models.semantic_fpn as psemantic
from paddle_impl.ops import BatchNorm2D
psemantic.norm_layer = lambda c: BatchNorm2D(c, epsilon=1e-3, momentum=0.9)
from convert.cli import main
sys.exit(main("torch", sys.argv[1:]))
"""


@dataclass
class Case:
    script: str                  # a script of the repo, or "-c" with ``code``
    args: list[str]              # {in}: the inputs folder, {out}: the output folder, {sample}: the sample data
    expect: tuple[str, ...]      # first: in the error line; others: anywhere in stderr
    code: int = 2
    readonly: bool = False       # the output folder is made unwritable first
    python: str = ""             # the program for script "-c"
    skip: str = ""               # a reason to skip, decided at collection (see SKIPS)


CASES: dict[str, Case] = {
    # --- convert/torch2paddle.py, convert/paddle2torch.py: the source ------------------------------
    "convert: missing file": Case(T2P, [*CONVERT, "--src", "{in}/none.pth"], ("no such file",)),
    "convert: a folder as --src": Case(T2P, [*CONVERT, "--src", "{in}"], ("is a folder, not a checkpoint file",)),
    "convert: text file renamed .pth (issue 15)": Case(
        T2P, [*CONVERT, "--src", "{in}/text.pth"], ("is not a readable torch checkpoint: it is a text file",)),
    "convert: truncated": Case(T2P, [*CONVERT, "--src", "{in}/truncated.pth"],
                               ("is not a readable torch checkpoint (corrupt, truncated or another format)",)),
    "convert: empty file": Case(T2P, [*CONVERT, "--src", "{in}/empty.pth"], ("the file is empty",)),
    "convert: not a dict": Case(T2P, [*CONVERT, "--src", "{in}/list.pth"], ("expected a dict of tensors, found list",)),
    "convert: no tensors": Case(T2P, [*CONVERT, "--src", "{in}/no_tensors.pth"],
                                ("no tensors at the top level and no entry holding weights", "epoch (int)")),
    "convert: an optimizer state": Case(T2P, [*CONVERT, "--src", "{in}/optimizer.pth"], ("torch optimizer state",)),
    "convert: several weight dicts": Case(T2P, [*CONVERT, "--src", "{in}/several.pth"],
                                          ("several entries hold tensors: generator, discriminator", "--key")),
    "convert: --key names no entry": Case(T2P, [*CONVERT, "--src", "{in}/simplecv.pth", "--key", "ema"],
                                          ("no entry 'ema'", "model (dict)")),
    "convert: another model's checkpoint (issue 15)": Case(
        T2P, [*CONVERT, "--src", "{in}/farseg.pth"],
        ("likely a farseg50 checkpoint", "is this another model's checkpoint? its keys match farseg50 best",
         "--model farseg50")),
    "convert: another model's SimpleCV checkpoint with best_miou (issue 15)": Case(
        T2P, [*CONVERT, "--src", "{in}/farseg_simplecv.pth"],
        ("likely a farseg50 checkpoint", "set aside: best_miou (0-d tensor)", "--model farseg50")),
    "convert: unknown keys": Case(T2P, [*CONVERT, "--src", "{in}/unknown_keys.pth"],
                                  ("0 mapped", "is this another model's checkpoint? source keys look like")),
    "convert: BN buffers missing": Case(T2P, [*CONVERT, "--src", "{in}/no_bn.pth"],
                                        ("62 missing", "running statistics of BatchNorm layers",
                                         "resencoder.resnet.bn1._mean  <- expected source "
                                         "resencoder.resnet.bn1.running_mean")),
    "convert: shape mismatch": Case(T2P, [*CONVERT, "--src", "{in}/shape.pth"],
                                    ("1 shape/dtype mismatches", "fg_cls.weight -> fg_cls.weight: source (5, 8, 1, 1) "
                                     "float32, target (16, 8, 1, 1) float32")),
    "convert: a prefix on only some keys": Case(T2P, [*CONVERT, "--src", "{in}/prefix_some.pth"],
                                                ("unexpected", "source keys start with 'module.'")),
    "convert: unknown model": Case(T2P, ["facseg50", "--variant", "tiny", "--src", "{in}/factseg.pth"],
                                   ("unknown model 'facseg50'; known: factseg50",)),
    "convert: --dst with several models": Case(T2P, ["--model", "all", "--dst", "{out}/result.pdparams"],
                                               ("--src/--dst name one model's files",)),
    "paddle2torch: text file renamed .pdparams": Case(
        P2T, ["factseg50", "--variant", "tiny", "--dst", "{out}/result.pth", "--src", "{in}/text.pdparams"],
        ("is not a readable paddle checkpoint: it is a text file",)),
    "paddle2torch: an optimizer state (model.pdopt)": Case(
        P2T, ["factseg50", "--variant", "tiny", "--dst", "{out}/result.pth", "--src", "{in}/model.pdopt"],
        ("likely an optimizer state, not weights", "pass the model.pdparams beside it")),
    "paddle2torch: another model's checkpoint": Case(
        P2T, ["factseg50", "--variant", "tiny", "--dst", "{out}/result.pth", "--src", "{in}/farseg.pdparams"],
        ("likely a farseg50 checkpoint",)),
    # --- convert: the destination, checked before any work -------------------------------------------
    # the source is another model's: a --dst error (not the mapping report) proves the order
    "convert: --dst is an existing folder (issue 15)": Case(
        T2P, ["factseg50", "--variant", "tiny", "--src", "{in}/farseg.pth", "--dst", "{out}"],
        ("--dst {out} is a folder; name the file to write",)),
    "convert: --dst in a read-only folder (issue 15)": Case(
        T2P, ["factseg50", "--variant", "tiny", "--src", "{in}/farseg.pth", "--dst", "{out}/result.pdparams"],
        ("cannot write into {out}",), readonly=True),
    "convert: --dst under a file": Case(
        T2P, ["factseg50", "--variant", "tiny", "--src", "{in}/farseg.pth", "--dst", "{in}/text.pth/result.pdparams"],
        ("{in}/text.pth is a file, not a folder",)),
    "convert: twins disagree after conversion": Case(
        "-c", ["--model", "factseg50", "--variant", "tiny", "--dst", "{out}/result.pdparams"],
        ("converted factseg50 but the twins disagree, nothing written", "float64 prob: max_abs"), code=1,
        python=TWINS_DISAGREE),
    # --- torch_ref/train.py, paddle_impl/train.py -------------------------------------------------
    "train: a label value 20 (issue 15)": Case(
        TRAIN, [*TRAIN_ARGS, "--data", "{in}/data_label20"],
        ("{in}/data_label20/train/masks/P0003.png: label values outside classes 0..15 and not 255: [20]",)),
    "train: truncated image (found before writing)": Case(
        TRAIN, [*TRAIN_ARGS, "--data", "{in}/data_truncated"], ("P0004.png: cannot decode image",)),
    "train: an image without a mask": Case(TRAIN, [*TRAIN_ARGS, "--data", "{in}/data_no_mask"],
                                           ("P0002.png: no mask",)),
    "train: image/mask size mismatch": Case(TRAIN, [*TRAIN_ARGS, "--data", "{in}/data_size"],
                                            ("mask size 20x30 differs from image",)),
    "train: missing data folder": Case(TRAIN, [*TRAIN_ARGS, "--data", "{in}/nowhere"],
                                       ("--data {in}/nowhere: no such folder",)),
    "train: missing weights": Case(TRAIN, [*TRAIN_ARGS, "--weights", "{in}/none.pth"],
                                   ("--weights {in}/none.pth: no such file",)),
    "train: text file as weights": Case(TRAIN, [*TRAIN_ARGS, "--weights", "{in}/text.pth"],
                                        ("{in}/text.pth is not a readable torch checkpoint: it is a text file",)),
    "train: another model's weights": Case(TRAIN, [*TRAIN_ARGS, "--weights", "{in}/farseg.pth"],
                                           ("{in}/farseg.pth: weights do not fit factseg50 (torch)",
                                            "likely a farseg50 checkpoint")),
    "train: --resume without a checkpoint": Case(TRAIN, [*TRAIN_ARGS, "--resume", "{in}"],
                                                 ("--resume {in}: no checkpoint there",)),
    "train: --resume a checkpoint of the other tree": Case(
        TRAIN, ["--resume", "{in}/paddle_run/iter_1", "--save-dir", "{out}/run"],
        ("written by paddle_impl/train.py, not torch_ref/train.py",)),
    "train: unknown model": Case(TRAIN, [*TRAIN_ARGS[2:], "--model", "facseg50"],
                                 ("unknown model 'facseg50'; known: factseg50",)),
    "train: --save-dir is a file": Case(TRAIN, [*TRAIN_ARGS, "--save-dir", "{in}/text.pth"],
                                        ("--save-dir {in}/text.pth is a file, not a folder",)),
    "train: --save-dir in a read-only folder": Case(TRAIN, TRAIN_ARGS, ("--save-dir {out}/run: cannot write into {out}",),
                                                    readonly=True),
    "train: --device gpu without CUDA": Case(TRAIN, [*TRAIN_ARGS, "--device", "gpu"],
                                             ("--device gpu: no CUDA device available to torch",), skip="cuda"),
    "train: the loss diverges before the first checkpoint": Case(
        TRAIN, [*TRAIN_ARGS, "--iters", "6", "--lr", "1e12"],
        ("training diverged; no checkpoint was saved, {out}/run is as it was",), code=1),
    "train (paddle): a label value 20": Case(PTRAIN, [*TRAIN_ARGS, "--data", "{in}/data_label20"],
                                             ("label values outside classes 0..15 and not 255: [20]",)),
    "train (paddle): text file as weights": Case(
        PTRAIN, [*TRAIN_ARGS, "--weights", "{in}/text.pdparams"],
        ("{in}/text.pdparams is not a readable paddle checkpoint: it is a text file",)),
    "train (paddle): another model's weights": Case(PTRAIN, [*TRAIN_ARGS, "--weights", "{in}/farseg.pdparams"],
                                                    ("weights do not fit factseg50 (paddle)",
                                                     "likely a farseg50 checkpoint")),
    "train (paddle): --amp on CPU": Case(PTRAIN, [*TRAIN_ARGS, "--amp"],
                                         ("--amp: paddle 3.3.1 has no mixed precision on CPU",)),
    # --- torch_ref/eval.py, paddle_impl/eval.py ---------------------------------------------------
    "eval: missing weights": Case(EVAL, [*EVAL_ARGS, "--weights", "{in}/none.pth"],
                                  ("--weights {in}/none.pth: no such file",)),
    "eval (paddle): unreadable weights": Case(PEVAL, [*EVAL_ARGS, "--weights", "{in}/junk.pdparams"],
                                              ("{in}/junk.pdparams is not a readable paddle checkpoint",)),
    "eval: another model's weights": Case(EVAL, [*EVAL_ARGS, "--weights", "{in}/farseg.pth"],
                                          ("likely a farseg50 checkpoint",)),
    "eval: missing data folder": Case(EVAL, [*EVAL_ARGS, "--data", "{in}/nowhere"],
                                      ("--data {in}/nowhere: no such folder",)),
    "eval: a label value 20 in a val scene": Case(EVAL, [*EVAL_ARGS, "--data", "{in}/data_label20"],
                                                  ("P1001.png: label values outside classes 0..15 and not 255: [20]",)),
    "eval: unknown model": Case(EVAL, [*EVAL_ARGS[2:], "--model", "facseg50"],
                                ("unknown model 'facseg50'; known: factseg50",)),
    "eval: --out is a folder": Case(EVAL, [*EVAL_ARGS, "--out", "{out}"], ("--out {out} is a folder",)),
    # --- align/run_all.py --------------------------------------------------------------------------
    "align: truncated --torch-ckpt (issue 15)": Case(
        ALIGN, [*ALIGN_ARGS, "--model", "factseg50", "--torch-ckpt", "{in}/truncated.pth"],
        ("--torch-ckpt: {in}/truncated.pth is not a readable torch checkpoint",)),
    "align: another model's --torch-ckpt": Case(
        ALIGN, [*ALIGN_ARGS, "--model", "factseg50", "--torch-ckpt", "{in}/farseg.pth"],
        ("--torch-ckpt: {in}/farseg.pth: weights do not fit factseg50 (torch)", "likely a farseg50 checkpoint")),
    "align: missing --torch-ckpt": Case(ALIGN, [*ALIGN_ARGS, "--model", "factseg50", "--torch-ckpt", "{in}/none.pth"],
                                        ("--torch-ckpt: no such file: {in}/none.pth",)),
    "align: --torch-ckpt with several models": Case(
        ALIGN, [*ALIGN_ARGS, "--model", "factseg50,farseg50", "--torch-ckpt", "{in}/factseg.pth"],
        ("--torch-ckpt is one model's file; got 2 models",)),
    "align: unknown model": Case(ALIGN, [*ALIGN_ARGS, "--model", "facseg50"], ("unknown model 'facseg50'",)),
    "align: unknown step": Case(ALIGN, [*ALIGN_ARGS, "--model", "factseg50", "--steps", "forwrd"],
                                ("unknown step 'forwrd'",)),
    "align: --out is a file": Case(ALIGN, [*ALIGN_ARGS, "--model", "factseg50", "--out", "{in}/text.pth"],
                                   ("--out {in}/text.pth is a file, not a folder",)),
    # --- deploy/export.py (reads weights through rsport.weights.load_for) ---------------------------
    "export: unknown model": Case(EXPORT, ["facseg50", *EXPORT_ARGS], ("unknown model 'facseg50'",)),
    "export: missing weights": Case(EXPORT, ["factseg50", *EXPORT_ARGS, "--weights", "{in}/none.pth"],
                                    ("{in}/none.pth: no such weights file",)),
    "export: text file as weights": Case(EXPORT, ["factseg50", *EXPORT_ARGS, "--weights", "{in}/text.pth"],
                                         ("{in}/text.pth is not a readable torch checkpoint: it is a text file",)),
    "export: another model's weights": Case(EXPORT, ["factseg50", *EXPORT_ARGS, "--weights", "{in}/farseg.pth"],
                                            ("likely a farseg50 checkpoint",)),
    "export: --out is a file": Case(EXPORT, ["factseg50", "--variant", "tiny", "--format", "onnx", "--out",
                                             "{in}/text.pth"], ("--out {in}/text.pth is a file, not a folder",)),
}


def _skip(case: Case) -> str:
    if case.skip == "cuda":
        import torch

        return "a GPU is available" if torch.cuda.is_available() else ""
    return ""


# --- inputs ------------------------------------------------------------------------------------------
def _copy_isaid(sample: Path, folder: Path) -> Path:
    shutil.copytree(sample, folder)
    return folder


def _id_mask_with(folder: Path, split: str, scene: str, value: int) -> None:
    """Replace a scene's color mask by a class-id mask holding ``value`` in one pixel."""
    from rsport.data.images import encode_png, image_size

    masks = folder / split / "masks"
    (masks / f"{scene}_instance_color_RGB.png").unlink()
    h, w = image_size(folder / split / "images" / f"{scene}.png")
    ids = np.zeros((h, w), np.uint8)
    ids[5, 5] = value
    (masks / f"{scene}.png").write_bytes(encode_png(ids))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every input file a case names, built once (tiny models, random initialisation: the cases
    fail before any value matters)."""
    import paddle
    import torch

    from rsport.data.images import encode_png
    from rsport.frameworks import adapter

    folder = tmp_path_factory.mktemp("inputs")
    tb, pb = adapter("torch"), adapter("paddle")
    factseg = dict(tb.build(rsport.get("factseg50"), "tiny").state_dict())
    farseg = dict(tb.build(rsport.get("farseg50"), "tiny").state_dict())
    saves = {
        "factseg.pth": factseg,
        "farseg.pth": farseg,
        "farseg_simplecv.pth": {"model": {f"module.{k}": v for k, v in farseg.items()}, "best_miou": torch.tensor(0.5)},
        "simplecv.pth": {"model": factseg, "opt": {"lr": 0.007}, "global_step": 10},
        "list.pth": [torch.zeros(1)],
        "no_tensors.pth": {"epoch": 3, "meta": {"lr": 0.1}},
        "optimizer.pth": {"state": {}, "param_groups": [{"lr": 0.1}]},
        "several.pth": {"generator": {"conv.weight": torch.zeros(2, 3)}, "discriminator": {"fc.weight": torch.zeros(2)}},
        "unknown_keys.pth": {"backbone.conv.weight": torch.zeros(8, 3, 3, 3), "head.fc.weight": torch.zeros(10, 8)},
        "no_bn.pth": {k: v for k, v in factseg.items() if "running_" not in k},
        "shape.pth": {**factseg, "fg_cls.weight": torch.zeros(5, *factseg["fg_cls.weight"].shape[1:])},
        "prefix_some.pth": {(f"module.{k}" if i % 2 else k): v for i, (k, v) in enumerate(factseg.items())},
    }
    for name, obj in saves.items():
        torch.save(obj, folder / name)
    whole = (folder / "factseg.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.pth").write_bytes(b"")
    (folder / "text.pth").write_text("a,b\n1,2\n")   # torch.load: IndexError: pop from empty list
    (folder / "text.pdparams").write_text("a,b\n1,2\n")
    (folder / "junk.pdparams").write_bytes(b"\x80\x04garbage" * 8)
    pfarseg = pb.build(rsport.get("farseg50"), "tiny").state_dict()
    paddle.save(dict(pfarseg), str(folder / "farseg.pdparams"))
    pfactseg = pb.build(rsport.get("factseg50"), "tiny").state_dict()
    paddle.save({**{f"{k}_velocity_0": paddle.zeros_like(v) for k, v in pfactseg.items()},
                 "LR_Scheduler": {"last_epoch": 3, "last_lr": 0.007}}, str(folder / "model.pdopt"))
    # a checkpoint folder written by the paddle tree
    run = folder / "paddle_run" / "iter_1"
    run.mkdir(parents=True)
    cfg = training.TrainConfig(tree="paddle", model="factseg50", variant="tiny", data=None, iters=2, batch_size=2,
                               lr=0.007, seed=1, crop=[64, 64], save_dir=str(run.parent), save_interval=1,
                               log_interval=1, num_workers=0, amp=False, device="cpu", threads=1)
    (run / training.STATE_FILE).write_text(json.dumps({"iter": 1, "config": asdict(cfg), "framework": "paddle"}))
    # data folders (copies of the sample data, each with one defect)
    sample = data.ensure_samples(ROOT / data.SAMPLE_ROOT) / "isaid"
    label20 = _copy_isaid(sample, folder / "data_label20")
    _id_mask_with(label20, "train", "P0003", 20)
    _id_mask_with(label20, "val", "P1001", 20)
    truncated = _copy_isaid(sample, folder / "data_truncated")
    image = truncated / "train" / "images" / "P0004.png"
    image.write_bytes(image.read_bytes()[:3000])   # the header reads, the pixels do not
    (_copy_isaid(sample, folder / "data_no_mask") / "train" / "masks" / "P0002_instance_color_RGB.png").unlink()
    size = _copy_isaid(sample, folder / "data_size")
    (size / "train" / "masks" / "P0001_instance_color_RGB.png").write_bytes(encode_png(np.zeros((20, 30, 3), np.uint8)))
    return folder


# --- helpers ---------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict:
    """path -> (kind, size, mtime) of everything under ``folder`` (and the folder itself)."""
    out = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.lstat()
        out[str(path.relative_to(folder.parent))] = ("dir" if path.is_dir() else "file", st.st_size if path.is_file()
                                                     else 0, st.st_mtime_ns if path.is_file() else 0)
    return out


def make_readonly(folder: Path):
    """Make ``folder`` unwritable for this process; returns the undo. Root ignores permission
    bits, so as root the folder is made immutable (chattr +i), which os.access reports."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        def undo():
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        if not os.access(folder, os.W_OK):
            return undo
        undo()
    pytest.skip("cannot make a folder unwritable here (root, and chattr +i unavailable on this file system)")


def run(case: Case, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-c", case.python] if case.script == "-c" else [sys.executable, str(ROOT / case.script)]
    return subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, inputs, tmp_path):
    case = CASES[name]
    reason = _skip(case)
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("a file of an earlier run\n")
    fill = {"in": str(inputs), "out": str(out)}
    args = [a.format(**fill) for a in case.args]
    expect = [e.format(**fill) for e in case.expect]
    before, inputs_before = snapshot(out), snapshot(inputs)
    undo = make_readonly(out) if case.readonly else None
    try:
        proc = run(case, args)
    finally:
        if undo is not None:
            undo()
    stderr = proc.stderr
    errors = [line for line in stderr.split("\n") if "error:" in line]
    assert proc.returncode == case.code, stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert expect[0] in errors[0], (expect[0], errors[0])
    for words in expect[1:]:
        assert words in stderr, (words, stderr[-3000:])
    assert snapshot(out) == before, "the output folder changed"
    assert snapshot(inputs) == inputs_before, "an input changed"
