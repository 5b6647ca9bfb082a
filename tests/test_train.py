"""torch_ref/train.py and paddle_impl/train.py as a user runs them: the standard log line, the
per-iteration log, checkpoints, exact resume, the same start in both frameworks, mixed precision,
two processes, and one `error:` line for bad input. Tiny variant, 64x64 crops, a few iterations."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import rsport
from rsport import data, training
from tests.conftest import ROOT, run_cli

SPEC = rsport.get("factseg50")
TREES = {"torch": "torch_ref/train.py", "paddle": "paddle_impl/train.py"}
SUFFIX = {"torch": (".pth", ".pth"), "paddle": (".pdparams", ".pdopt")}
LITE = ["--model", "factseg50", "--variant", "tiny", "--crop", "64", "64", "--batch-size", "2", "--threads", "1"]
LINE = re.compile(r"^\[TRAIN\] epoch: \d+, iter: (\d+)/(\d+), loss: \d+\.\d{4}, lr: \d\.\d{6}, batch_cost: \d+\.\d{4}, "
                  r"reader_cost: \d+\.\d{5}, ips: \d+\.\d{4} samples/sec \| ETA \d\d:\d\d:\d\d$", re.M)


@pytest.fixture(scope="module")
def sample_root():
    return str(data.ensure_samples(ROOT / data.SAMPLE_ROOT) / SPEC.dataset)


@pytest.fixture(scope="module")
def runs(sample_root, tmp_path_factory):
    """Per tree: 4 iterations with checkpoints at 2 and 4, then a resume from iter_2 to 4."""
    out = {}
    for tree, script in TREES.items():
        folder = tmp_path_factory.mktemp(tree)
        full = run_cli(script, *LITE, "--data", sample_root, "--iters", "4", "--save-interval", "2",
                       "--log-interval", "2", "--save-dir", folder / "full")
        assert full.returncode == 0, full.stderr[-3000:]
        resumed = run_cli(script, "--resume", folder / "full" / "iter_2", "--save-dir", folder / "resumed")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        out[tree] = {"folder": folder, "full": full, "resumed": resumed}
    return out


@pytest.mark.parametrize("tree", TREES)
def test_log_lines_log_file_and_checkpoints(runs, tree):
    run, (weights, optimizer) = runs[tree], SUFFIX[tree]
    assert [m.groups() for m in LINE.finditer(run["full"].stderr)] == [("2", "4"), ("4", "4")]
    assert "train factseg50" in run["full"].stderr and "it/s" in run["full"].stderr     # the progress bar
    assert run["full"].stdout == ""
    records = training.read_log(run["folder"] / "full" / training.LOG_FILE)
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    lr = SPEC.recipe["lr"]
    np.testing.assert_allclose([r["lr"] for r in records], [lr * (1 - k / 4) ** 0.9 for k in range(4)], rtol=1e-12)
    for k in (2, 4):
        folder = run["folder"] / "full" / f"iter_{k}"
        assert sorted(p.name for p in folder.iterdir()) == sorted([f"model{weights}", f"optimizer{optimizer}",
                                                                   training.STATE_FILE])
        state = json.loads((folder / training.STATE_FILE).read_text())
        assert state["iter"] == k and state["config"]["model"] == "factseg50" and state["framework"] == tree
    assert (run["folder"] / "full" / f"model{weights}").is_file()


@pytest.mark.parametrize("tree", TREES)
def test_resume_is_exact(runs, tree):
    """float32, same process layout: the resumed curve and final weights equal the uninterrupted
    ones bit for bit (the checkpoint holds everything the step depends on; batches and dropout
    seeds are functions of the iteration)."""
    run, weights = runs[tree], SUFFIX[tree][0]
    full = training.read_log(run["folder"] / "full" / training.LOG_FILE)
    resumed = training.read_log(run["folder"] / "resumed" / training.LOG_FILE)
    assert resumed == full
    assert "resumed from" in run["resumed"].stderr
    assert [m.group(1) for m in LINE.finditer(run["resumed"].stderr)] == ["4"]
    from rsport.weights import read_source

    a, b = (read_source(run["folder"] / d / f"model{weights}", tree)[0] for d in ("full", "resumed"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_both_frameworks_start_alike(runs):
    """Same embedded weights, same batches, same recipe: loss_1 agrees to float32 noise, lr exactly,
    and the 4-iteration curves stay within training noise."""
    torch_log, paddle_log = (training.read_log(runs[t]["folder"] / "full" / training.LOG_FILE) for t in TREES)
    assert [r["lr"] for r in torch_log] == [r["lr"] for r in paddle_log]
    assert paddle_log[0]["loss"] == pytest.approx(torch_log[0]["loss"], rel=1e-5)
    np.testing.assert_allclose([r["loss"] for r in paddle_log], [r["loss"] for r in torch_log], rtol=1e-3)


def test_torch_amp_is_bfloat16_autocast(runs, sample_root, tmp_path):
    proc = run_cli("torch_ref/train.py", *LITE, "--data", sample_root, "--iters", "1", "--amp", "--save-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    amp = training.read_log(tmp_path / training.LOG_FILE)[0]["loss"]
    fp32 = training.read_log(runs["torch"]["folder"] / "full" / training.LOG_FILE)[0]["loss"]
    assert amp != fp32 and amp == pytest.approx(fp32, rel=2e-2)   # bfloat16 has 8 mantissa bits


@pytest.mark.parametrize("tree", TREES)
def test_gpu_and_paddle_amp_unavailable_are_clear_errors(tree, sample_root, tmp_path):
    if tree == "torch":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is available")
        proc = run_cli(TREES[tree], *LITE, "--data", sample_root, "--iters", "1", "--device", "gpu",
                       "--save-dir", tmp_path)
        expected = "error: --device gpu: no CUDA device available to torch"
    else:
        proc = run_cli(TREES[tree], *LITE, "--data", sample_root, "--iters", "1", "--amp", "--save-dir", tmp_path)
        expected = "error: --amp: paddle 3.3.1 has no mixed precision on CPU"
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(expected), proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())


BAD = {
    "missing data folder": (["--data", "{tmp}/nowhere"], "error: --data {tmp}/nowhere: no such folder"),
    "missing weights": (["--weights", "{tmp}/none.pth"], "error: --weights {tmp}/none.pth: no such file"),
    "corrupt weights": (["--weights", "{tmp}/junk.pth"], "error: {tmp}/junk.pth is not a readable"),
    "other model's weights": (["--weights", "{tmp}/farseg.pth"], "error: {tmp}/farseg.pth: "),
    "resume without checkpoint": (["--resume", "{tmp}"], "error: --resume {tmp}: no checkpoint there"),
    "unknown model": (["--model", "facseg50"], "error: unknown model 'facseg50'; known: factseg50"),
}


# Every case in torch; in paddle the two that reach framework code (the rest is the shared
# rsport/training.py path), which keeps the suite fast.
BAD_RUNS = [("torch", case) for case in BAD] + [("paddle", "corrupt weights"), ("paddle", "other model's weights")]


@pytest.mark.parametrize("tree,case", BAD_RUNS, ids=[f"{t}-{c}" for t, c in BAD_RUNS])
def test_bad_input_is_one_error_line(tree, case, sample_root, tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    if case == "other model's weights":
        import torch

        torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "farseg.pth")
    flags, expected = BAD[case]
    flags = [f.format(tmp=tmp_path) for f in flags]
    base = LITE[2:] if case == "unknown model" else LITE    # without --model factseg50
    if "--data" not in flags:
        flags += ["--data", sample_root]
    proc = run_cli(TREES[tree], *base, "--iters", "1", "--save-dir", tmp_path / "out", *flags)
    lines = [line for line in proc.stderr.strip().splitlines() if not line.lstrip().startswith(("warnings.warn", "/"))]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines[-1].startswith(expected.format(tmp=tmp_path)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def shard_losses(world_size):
    """The iteration-1 loss of each rank's shard, computed directly (embedded weights, train mode)."""
    import torch

    from rsport.reference import reference_arrays
    from torch_ref import backend

    model = backend.build(SPEC, "tiny")
    backend.load_state(model, reference_arrays(SPEC, "tiny", "torch", model))
    model.train()
    dataset = data.build_dataset(SPEC, data.ensure_samples(ROOT / data.SAMPLE_ROOT) / SPEC.dataset, "train",
                                 crop=(64, 64), seed=training.DEFAULT_SEED)
    losses = []
    for rank in range(world_size):
        x, y = next(iter(data.Loader(dataset, 1, seed=training.DEFAULT_SEED, rank=rank, world_size=world_size)))
        with torch.no_grad():
            losses.append(float(backend.build_loss(SPEC)(*model(torch.from_numpy(x)), torch.from_numpy(y))))
    return losses


def launch(tree, tmp_path, sample_root):
    args = [*LITE[:7], "--batch-size", "1", "--threads", "1", "--data", sample_root, "--iters", "2",
            "--log-interval", "1", "--save-dir", str(tmp_path / "run")]
    if tree == "torch":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    else:
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", str(tmp_path / "launch_log")]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([*cmd, str(ROOT / TREES[tree]), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("tree", TREES)
def test_two_processes_on_cpu(tree, tmp_path, sample_root):
    """torchrun (DDP, gloo) / paddle.distributed.launch (DataParallel, gloo): each rank reads its own
    shard, the logged loss is their mean, rank 0 alone writes."""
    proc = launch(tree, tmp_path, sample_root)
    logs = "".join(p.read_text() for p in sorted((tmp_path / "launch_log").glob("workerlog.*"))) \
        if tree == "paddle" else proc.stderr
    assert proc.returncode == 0, (proc.stderr + logs)[-4000:]
    records = training.read_log(tmp_path / "run" / training.LOG_FILE)
    assert [r["iter"] for r in records] == [1, 2]
    state = json.loads((tmp_path / "run" / "iter_2" / training.STATE_FILE).read_text())
    assert state["config"]["world_size"] == 2
    assert [m.group(1) for m in LINE.finditer(logs)] == ["1", "2"]       # rank 0 logs, once
    per_rank = shard_losses(2)
    assert per_rank[0] != per_rank[1]
    assert records[0]["loss"] == pytest.approx(sum(per_rank) / 2, rel=1e-5)


def test_resume_configuration_comes_from_the_checkpoint(tmp_path):
    """defaults < checkpoint < explicit flags; changes that break exactness are said; a checkpoint of
    the other tree is refused."""
    parser = training.build_parser("torch")
    cfg, notes = training.resolve_config("torch", parser.parse_args([*LITE, "--iters", "8", "--seed", "5"]))
    assert (cfg.iters, cfg.seed, cfg.crop, cfg.lr, cfg.save_interval) == (8, 5, [64, 64], SPEC.recipe["lr"], 1000)
    assert cfg.save_dir == str(training.OUTPUT_ROOT / "factseg50" / "torch") and notes == []
    folder = tmp_path / "run" / "iter_4"
    folder.mkdir(parents=True)
    (folder / training.STATE_FILE).write_text(json.dumps({"iter": 4, "config": vars(cfg) | {"save_dir": "x"}}))
    resumed, notes = training.resolve_config("torch", parser.parse_args(["--resume", str(folder)]))
    assert (resumed.iters, resumed.seed, resumed.start_iter, resumed.save_dir) == (8, 5, 4, str(tmp_path / "run"))
    assert notes == []
    changed, notes = training.resolve_config("torch", parser.parse_args(["--resume", str(folder), "--seed", "6",
                                                                         "--log-interval", "3"]))
    assert changed.seed == 6 and changed.log_interval == 3
    assert notes == ["resume with changed seed (5 -> 6): the run will not equal an uninterrupted one"]
    with pytest.raises(training.TrainError, match="written by torch_ref/train.py, not paddle_impl/train.py"):
        training.resolve_config("paddle", training.build_parser("paddle").parse_args(["--resume", str(folder)]))
    with pytest.raises(training.TrainError, match="nothing left of --iters 4"):
        training.resolve_config("torch", parser.parse_args(["--resume", str(folder), "--iters", "4"]))


def test_precision_is_the_paddleseg_tipc_spelling_of_amp(capsys):
    """PaddleSeg's TIPC runner passes line 5 of a config as --precision=VALUE."""
    parser = training.build_parser("paddle")
    assert parser.parse_args([*LITE, "--precision=fp32"]).amp is False
    assert parser.parse_args([*LITE, "--precision", "bf16"]).amp is True
    assert parser.parse_args(LITE).amp is None  # unset: the default (or a resumed run's setting)
    with pytest.raises(SystemExit):
        parser.parse_args([*LITE, "--precision", "fp16"])
    assert "invalid choice: 'fp16' (choose from fp32, bf16)" in capsys.readouterr().err


def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_save_dir_as_it_was(tmp_path):
    """TrainLog.rollback: a new save dir disappears (with the folders made for it); on resume
    the log, truncated to the checkpoint's iteration at the start, gets its old bytes back."""
    path = tmp_path / "new" / "run" / training.LOG_FILE
    log = training.TrainLog(path)
    log.write(iter=1, epoch=1, loss=1.0, lr=0.1)
    log.rollback()
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / training.LOG_FILE
    path.write_text("".join(json.dumps({"iter": k, "epoch": 1, "loss": 1.0, "lr": 0.1}) + "\n" for k in (1, 2, 3)))
    before = path.read_bytes()
    log = training.TrainLog(path, start_iter=1)
    assert [r["iter"] for r in training.read_log(path)] == [1]
    log.write(iter=2, epoch=1, loss=2.0, lr=0.1)
    log.rollback()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [training.LOG_FILE]
