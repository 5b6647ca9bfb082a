"""TIPC under PaddleSeg's own, unmodified runner: the configs in test_tipc/configs/ are valid for it,
not only for ours.

The runner of Paddle's TIPC certification is PaddleSeg's ``test_tipc/test_train_inference_python.sh``
with its ``common_func.sh``; an unmodified copy lives outside the repository, in
``../shared/upstream/paddleseg_tipc/``. Certification drops the two files into a clone's
``test_tipc/`` (replacing our runner of the same name) and runs from the clone's root, so each test
builds that tree in a temporary folder: the repository's entries linked, ``test_tipc/`` a real
folder with ours linked and upstream's two files copied in, ``output/`` empty. The files never
enter the repository.

* ``test_upstream_builds_commands_our_scripts_accept`` (every model, every mode we offer, seconds):
  upstream's runner with a stand-in ``python`` on PATH that records each command instead of
  running it; every recorded command must parse with our scripts' own argument parsers and mean
  what the config says (save dir, weights, export folder, inference input, combinations).
* ``test_upstream_lite_train_lite_infer`` (factseg50 and vit_s16_upernet, minutes): our offline
  ``prepare.sh``, then upstream's runner for real, on CPU. Upstream exits 0 even when commands
  fail, so its ``results_python.log`` is the verdict: every line must say ``Run successfully``,
  one line per command (train, eval, export, every inference combination). Then our numeric gates
  judge upstream's outputs: the loss went down, and every inference combination predicts what the
  dygraph model predicts.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rsport
from test_tipc import configs

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT.parent / "shared" / "upstream" / "paddleseg_tipc"
UPSTREAM_FILES = ("test_train_inference_python.sh", "common_func.sh")
RUNNER = "test_tipc/test_train_inference_python.sh"
LITE = "lite_train_lite_infer"
REAL_RUN_MODELS = ("factseg50", "vit_s16_upernet")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.skipif(not UPSTREAM.is_dir(), reason=f"no copy of PaddleSeg's TIPC runner at {UPSTREAM}")


def certification_tree(tmp_path: Path) -> Path:
    """The repository laid out as certification runs it (see the module docstring)."""
    tree = tmp_path / "repo"
    (tree / "test_tipc").mkdir(parents=True)
    (tree / "output").mkdir()
    for entry in ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name not in ("output", "test_tipc"):
            (tree / entry.name).symlink_to(entry)
    for entry in (ROOT / "test_tipc").iterdir():
        if entry.name not in ("output", "__pycache__", *UPSTREAM_FILES):
            (tree / "test_tipc" / entry.name).symlink_to(entry)
    for name in UPSTREAM_FILES:
        shutil.copy(UPSTREAM / name, tree / "test_tipc" / name)
    return tree


def env(**extra) -> dict:
    # our scripts import the package from the repository (PYTHONPATH), whatever folder they run from
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                PYTHONWARNINGS="ignore", **extra)


def upstream_status(tree: Path, name: str, mode: str) -> list[str]:
    """results_python.log without colour codes and without the mode header upstream writes first."""
    log = tree / "test_tipc" / "output" / name / mode / "results_python.log"
    assert log.is_file(), f"{log}: PaddleSeg's runner wrote no status log"
    lines = [ANSI.sub("", line).rstrip() for line in log.read_text().splitlines()]
    assert lines[0] == f"------------------------ {mode} ------------------------"
    return lines[1:]


def combinations(fields: dict) -> list[tuple[str, str, str]]:
    """The CPU inference combinations (oneDNN, threads, batch) a config asks for; precision fp32 only."""
    split = {f: fields[f][1].split("|") for f in ("enable_mkldnn", "cpu_threads", "infer_batch_size")}
    assert fields["infer_precision"][1].split("|") == ["fp32"] and fields["infer_device"][1] == "cpu"
    return [(m, t, b) for m in split["enable_mkldnn"] for t in split["cpu_threads"] for b in split["infer_batch_size"]]


# --- upstream's parser on our configs ----------------------------------------------------------------
# The first lines of upstream's runner, as they are: read the file into an array split at newlines
# (IFS stays $'\n'), then func_parser_key / func_parser_value / func_parser_params of its common_func.sh.
READ_AS_UPSTREAM = r"""
source "$UPSTREAM/common_func.sh"
MODE=$2
dataline=$(awk 'NR>=1{print}'  $1)
IFS=$'\n'
lines=(${dataline})
for i in "${!lines[@]}"; do
    printf '%s\t%s\t%s\n' "$(func_parser_key "${lines[$i]}")" "$(func_parser_value "${lines[$i]}")" \
        "$(func_parser_params "${lines[$i]}")"
done
"""


@pytest.mark.parametrize("name", rsport.names())
def test_upstream_parser_reads_our_fields(name):
    """Every line reads under PaddleSeg's parser as under ours: same key, same value, and per-mode
    values (func_parser_params, lines 6 and 8) equal to ours."""
    config = configs.path_for(name)
    fields = configs.parse((ROOT / config).read_text(), str(config))
    for mode in configs.MODES:
        proc = subprocess.run(["bash", "-c", READ_AS_UPSTREAM, "bash", str(config), mode], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env=env(UPSTREAM=str(UPSTREAM)))
        assert proc.returncode == 0, proc.stderr
        rows = [row.split("\t") for row in proc.stdout.splitlines()]
        assert len(rows) == len(configs.LAYOUT), "PaddleSeg's runner sees another number of lines"
        for line, (key, value, params) in zip(configs.LAYOUT, rows):
            ours_key, ours_value = fields[line.field]
            assert (key, value) == (ours_key, ours_value or ""), f"line {configs.INDEX[line.field]} ({line.field})"
            if line.field in configs.PER_MODE_FIELDS:
                assert params == configs.value_for_mode(ours_value, mode), line.field


# --- what upstream's runner builds, checked against our parsers -------------------------------------
FAKE_PYTHON = """#!/usr/bin/env bash
# records the command line instead of running it; a training "writes" its weights like train.py does
{ printf '%s\\n' "$#"; printf '%s\\n' "$@"; } >> "$TIPC_COMMANDS"
for arg in "$@"; do
    case "$arg" in --save_dir=*) mkdir -p "${arg#*=}" && : > "${arg#*=}/model.pdparams" ;; esac
done
"""


def recorded(path: Path) -> list[list[str]]:
    words, out = path.read_text().splitlines(), []
    while words:
        n = int(words.pop(0))
        out.append(words[:n])
        del words[:n]
    return out


def parse_with_ours(argv: list[str]):
    """(script, namespace) for one recorded command, parsed by the script's own parser."""
    from deploy import export, infer
    from rsport import evaluation, training

    script, args = argv[0], argv[1:]
    parsers = {"paddle_impl/train.py": training.build_parser("paddle").parse_args,
               "paddle_impl/eval.py": evaluation.build_parser("paddle").parse_args,
               "deploy/export.py": export.parse, "deploy/infer.py": infer.parse}
    assert script in parsers, f"upstream ran {script}, which the config does not name"
    try:
        return script, parsers[script](args)
    except SystemExit:
        pytest.fail(f"{script} rejects the arguments PaddleSeg's runner gives it: {' '.join(args)}")


@pytest.mark.parametrize("mode", configs.MODES)
@pytest.mark.parametrize("name", rsport.names())
def test_upstream_builds_commands_our_scripts_accept(name, mode, tmp_path):
    tree = certification_tree(tmp_path)
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    commands = tmp_path / "commands.txt"
    config = configs.path_for(name)
    fields = configs.parse((ROOT / config).read_text(), str(config))
    proc = subprocess.run(["bash", RUNNER, str(config), mode], cwd=tree, capture_output=True, text=True, timeout=300,
                          env=env(PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", TIPC_COMMANDS=str(commands)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [parse_with_ours(argv) for argv in recorded(commands)]
    by_script = {}
    for script, args in runs:
        by_script.setdefault(script, []).append(args)
    combos = combinations(fields)
    infer_input = Path(fields["train_infer_img_dir" if mode != "whole_infer" else "image_path"][1])
    assert infer_input == configs.infer_input(rsport.get(name))
    if mode == "whole_infer":
        weights = Path(fields["infer_model"][1])
        assert sorted(by_script) == ["deploy/export.py", "deploy/infer.py"]
        export_dir = weights.parent  # upstream exports next to infer_model
    else:
        assert sorted(by_script) == ["deploy/export.py", "deploy/infer.py", "paddle_impl/eval.py", "paddle_impl/train.py"]
        [train] = by_script["paddle_impl/train.py"]
        save_dir = Path(train.save_dir)
        assert save_dir == Path("test_tipc/output") / name / mode / "norm_train_gpus_-1_autocast_fp32"
        assert (train.model, train.device, train.amp) == (name, "cpu", False)
        assert (train.iters, train.batch_size) == (rsport.get(name).lite["iters"], rsport.get(name).lite["batch_size"])
        assert train.data == configs.parse((ROOT / config).read_text())["train_param1"][1] and train.weights is None
        weights = save_dir / "model.pdparams"
        [evaluation] = by_script["paddle_impl/eval.py"]
        assert (evaluation.model, Path(evaluation.weights), evaluation.device) == (name, weights, "cpu")
        export_dir = save_dir  # upstream exports into the training save dir
    [export] = by_script["deploy/export.py"]
    assert (export.model, export.weights, export.out) == (name, weights, export_dir)
    infers = by_script["deploy/infer.py"]
    assert sorted((str(a.enable_mkldnn), str(a.threads), str(a.batch)) for a in infers) == sorted(combos)
    for args in infers:
        assert args.model_dir == [export_dir] and args.input == [str(infer_input)]
        assert (args.device, args.precision, args.backend) == ("cpu", "fp32", "paddle")
    assert len({args.out for args in infers}) == len(infers)  # one output folder per combination
    status = upstream_status(tree, name, mode)
    assert len(status) == len(runs) and all(line.startswith(" Run successfully with command - ") for line in status)


# --- the real run ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", REAL_RUN_MODELS)
def test_upstream_lite_train_lite_infer(name, tmp_path):
    tree = certification_tree(tmp_path)
    config = str(configs.path_for(name))
    fields = configs.parse((ROOT / config).read_text(), config)
    proc = subprocess.run(["bash", "test_tipc/prepare.sh", config, LITE], cwd=tree, capture_output=True, text=True,
                          timeout=600, env=env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    proc = subprocess.run(["bash", RUNNER, config, LITE], cwd=tree, capture_output=True, text=True, timeout=3600,
                          env=env())
    (tmp_path / "upstream_stdout.log").write_text(proc.stdout + proc.stderr)  # kept by pytest for inspection
    status = upstream_status(tree, name, LITE)
    failed = [line for line in status if not line.startswith(f" Run successfully with command - {name} - ")]
    assert not failed, "failed under PaddleSeg's runner (log named at the end of each line):\n" + "\n".join(failed)
    combos = combinations(fields)
    scripts = [re.search(f" - {fields['python'][1]} (\\S+) ", line).group(1) for line in status]
    expected = ["paddle_impl/train.py", "paddle_impl/eval.py", "deploy/export.py"] + ["deploy/infer.py"] * len(combos)
    assert scripts == expected, "\n".join(status)

    # our gates on upstream's outputs: the loss went down; every combination predicts what dygraph predicts
    logs = tree / "test_tipc" / "output" / name / LITE
    save_dir = logs / "norm_train_gpus_-1_autocast_fp32"
    assert (save_dir / "model.pdparams").is_file() and (save_dir / "deploy.yaml").is_file()  # export kept the weights
    results = sorted(str(p) for p in logs.glob("python_infer_cpu_*_results"))
    assert len(results) == len(combos)
    gates = [[sys.executable, "test_tipc/gates.py", "loss", "--log", str(save_dir / "train_log.jsonl"),
              "--iters", str(rsport.get(name).lite["iters"])],
             [sys.executable, "test_tipc/gates.py", "parity", "--model-dir", str(save_dir), "--weights",
              str(save_dir / "model.pdparams"), "--input", fields["train_infer_img_dir"][1], "--results", *results]]
    for cmd in gates:
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=600, env=env())
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
