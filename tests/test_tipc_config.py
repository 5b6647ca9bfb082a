"""TIPC configs: the line layout is pinned, every config equals what the registry renders, the shell
parser reads the same fields (and builds the same commands) as the layout says, and nothing in a
config is what PaddleSeg's own runner would misread (tests/test_tipc_upstream.py runs that runner)."""
import os
import re
import subprocess
from pathlib import Path

import pytest

import rsport
from test_tipc import configs

ROOT = Path(__file__).resolve().parents[1]
MODELS = rsport.names()
SCRIPT = "test_tipc/test_train_inference_python.sh"
RULE = "=" * 27

# Every line position, written out: PaddleSeg's test_train_inference_python.sh reads the same
# indices (lines[1] model_name ... lines[51] infer_key2). Moving a field breaks this on purpose.
# Flag keys are the flags both runners pass (PaddleSeg's passes lines 40 and 41 even when null).
PINNED = {
    0: ("train_header", f"{RULE}train_params{RULE}"), 1: ("model_name", "model_name"), 2: ("python", "python"),
    3: ("gpu_list", "gpu_list"), 4: ("train_device", "--device"), 5: ("autocast", "--precision"),
    6: ("iters", "--iters"), 7: ("save_dir", "--save_dir"), 8: ("batch_size", "--batch_size"),
    9: ("pretrained", "--weights"), 10: ("train_model_name", "train_model_name"),
    11: ("train_infer_img_dir", "train_infer_img_dir"), 12: ("train_param1", "--data"), 13: ("sep_train", "##"),
    14: ("trainer", "trainer"), 15: ("norm_train", "norm_train"), 16: ("pact_train", "pact_train"),
    17: ("fpgm_train", "fpgm_train"), 18: ("distill_train", "distill_train"), 19: ("trainer1", "null"),
    20: ("trainer2", "null"), 21: ("sep_trainers", "##"), 22: ("eval_header", f"{RULE}eval_params{RULE}"),
    23: ("eval", "eval"), 24: ("eval_out", "--out"), 25: ("sep_eval", "##"),
    26: ("export_header", f"{RULE}export_params{RULE}"), 27: ("export_save_dir", "--out"),
    28: ("export_weights", "--weights"), 29: ("norm_export", "norm_export"), 30: ("quant_export", "quant_export"),
    31: ("fpgm_export", "fpgm_export"), 32: ("distill_export", "distill_export"), 33: ("export1", "export1"),
    34: ("export2", "export2"), 35: ("infer_header", f"{RULE}infer_params{RULE}"),
    36: ("infer_model", "infer_model"), 37: ("infer_export", "infer_export"), 38: ("infer_quant", "infer_quant"),
    39: ("inference", "inference"), 40: ("infer_device", "--device"), 41: ("enable_mkldnn", "--enable_mkldnn"),
    42: ("cpu_threads", "--cpu_threads"), 43: ("infer_batch_size", "--batch_size"), 44: ("use_trt", "--use_trt"),
    45: ("infer_precision", "--precision"), 46: ("infer_model_dir", "--config"),
    47: ("image_path", "--image_path"), 48: ("save_log_path", "--save_log_path"), 49: ("benchmark", "--benchmark"),
    50: ("infer_out", "--out"), 51: ("infer_param2", "--backend"),
}


def read(name: str) -> str:
    return (ROOT / configs.path_for(name)).read_text()


def bash(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", code, "bash", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=120)


def dry_run(config: Path, mode: str, gpus: int = 0) -> list[str]:
    proc = subprocess.run(["bash", SCRIPT, str(config), mode], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, TIPC_DRY_RUN="1", TIPC_GPU_COUNT=str(gpus)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line[4:] for line in proc.stdout.splitlines() if line.startswith("DRY ")]


def test_layout_is_pinned():
    assert len(configs.LAYOUT) == len(PINNED) == 52
    for i, line in enumerate(configs.LAYOUT):
        assert line.field == PINNED[i][0], f"line {i}"
        assert configs.INDEX[line.field] == i


@pytest.mark.parametrize("name", MODELS)
def test_every_line_position(name):
    parsed = configs.parse(read(name), name)
    lines = read(name).splitlines()
    assert len(lines) == 52
    for i, (field, key) in PINNED.items():
        assert parsed[field][0] == key, f"{name} line {i}: {lines[i]!r}"
        assert lines[i].partition(":")[0] == key
    assert parsed["model_name"][1] == name
    spec = rsport.get(name)
    lite = spec.lite
    assert configs.value_for_mode(parsed["iters"][1], "lite_train_lite_infer") == str(lite["iters"])
    assert configs.value_for_mode(parsed["batch_size"][1], "lite_train_whole_infer") == str(lite["batch_size"])
    assert f"--variant {lite['variant']} --crop {lite['crop'][0]} {lite['crop'][1]}" in parsed["norm_train"][1]
    assert ("--lr " in parsed["norm_train"][1]) == ("lr" in lite)
    if "lr" in lite:
        assert f"--lr {lite['lr']} " in parsed["norm_train"][1]
    assert f"--variant {lite['variant']}" in parsed["norm_export"][1]
    assert "--variant default" in parsed["infer_export"][1]
    assert parsed["train_param1"][1].endswith(spec.dataset)
    # values PaddleSeg's runner reads as they are: CPU only, one input folder for every mode
    assert (parsed["gpu_list"][1], parsed["train_device"][1], parsed["autocast"][1]) == ("-1", "cpu", "fp32")
    assert parsed["train_infer_img_dir"][1] == parsed["image_path"][1] == str(configs.infer_input(spec))
    assert parsed["infer_model"][1] == str(configs.infer_weights(spec))
    assert [i for i, line in enumerate(lines) if configs.is_mode_list(line.partition(":")[2])] == [6, 8]


@pytest.mark.parametrize("name", MODELS)
def test_config_equals_registry(name):
    assert read(name) == configs.render(rsport.get(name)), "regenerate: python test_tipc/configs.py"


def test_check_mode_passes_and_catches_drift(tmp_path, monkeypatch):
    assert configs.check(MODELS) == []
    fake_root = tmp_path / "repo"
    for name in MODELS:
        target = fake_root / configs.path_for(name)
        target.parent.mkdir(parents=True)
        target.write_text(read(name))
    monkeypatch.setattr(configs, "ROOT", fake_root)
    assert configs.check(MODELS) == []
    (fake_root / configs.path_for("factseg50")).write_text(read("factseg50").replace("--iters:", "--epochs:"))
    (fake_root / configs.path_for("farseg50")).unlink()
    orphan = fake_root / configs.CONFIG_DIR / "facseg50" / configs.CONFIG_NAME
    orphan.parent.mkdir()
    orphan.write_text(read("factseg50"))
    assert configs.check(MODELS) == [
        "test_tipc/configs/factseg50/train_infer_python.txt: differs from the registry",
        "test_tipc/configs/farseg50/train_infer_python.txt: missing",
        "test_tipc/configs/facseg50/train_infer_python.txt: no registered model 'facseg50'",
    ]


def test_parse_rejects_shifted_lines():
    text = read("factseg50").splitlines()
    with pytest.raises(configs.ConfigError, match=r"<config>:4: expected key 'gpu_list'"):
        configs.parse("\n".join(text[:2] + ["python:python3"] + text[2:]))
    with pytest.raises(configs.ConfigError, match="51 lines"):
        configs.parse("\n".join(text[:-1]))


@pytest.mark.parametrize("line, edit, message", [
    (11, "train_infer_img_dir:lite_train_lite_infer=a|lite_train_whole_infer=b",
     "mode=value list: PaddleSeg's runner picks per mode only on lines 6 and 8"),
    (47, "--image_path:whole_infer=some/scene.png", "here it reads one literal string"),
    (5, "autocast:fp32", "key 'autocast' is no flag: both runners would pass the argument autocast=VALUE"),
    (40, "null:cpu", "key null: PaddleSeg's runner passes this key unconditionally"),
    (41, "null:True|False", "key null"),
    (15, "norm_train:paddle_impl/train.py --opts a:b", "':' inside the value"),
    (42, "--cpu_threads:[12]", "shell pattern character"),
    (13, "", "blank line (PaddleSeg's runner skips it"),
])
def test_parse_rejects_what_paddleseg_misreads(line, edit, message):
    lines = read("factseg50").splitlines()
    lines[line] = edit
    with pytest.raises(configs.ConfigError, match=re.escape(f"<config>:{line + 1}: ") + ".*" + re.escape(message)):
        configs.parse("\n".join(lines))


def test_value_for_mode():
    value = "lite_train_lite_infer=40|lite_train_whole_infer=80"
    assert configs.value_for_mode(value, "lite_train_whole_infer") == "80"
    assert configs.value_for_mode(value, "whole_infer") == ""
    assert configs.value_for_mode("True|False", "whole_infer") == "True|False"
    assert configs.value_for_mode("a=b", "whole_infer") == "a=b"


@pytest.mark.parametrize("name", MODELS)
def test_shell_parser_reads_the_same_fields(name):
    """tipc_lib.sh's key/value/per-mode readers agree with the python parser on every line."""
    code = ('source test_tipc/tipc_lib.sh; mapfile -t L < "$1"; '
            'for line in "${L[@]}"; do printf "%s\\t%s\\t%s\\n" "$(tipc_key "$line")" "$(tipc_value "$line")" '
            '"$(tipc_for_mode "$(tipc_value "$line")" "$2")"; done')
    for mode in configs.MODES:
        proc = bash(code, str(configs.path_for(name)), mode)
        assert proc.returncode == 0, proc.stderr
        rows = [row.split("\t") for row in proc.stdout.splitlines()]
        parsed = configs.parse(read(name))
        for line, (key, value, for_mode) in zip(configs.LAYOUT, rows):
            assert (key, value) == (parsed[line.field][0], parsed[line.field][1] or ""), line.field
            assert for_mode == configs.value_for_mode(value, mode), line.field


def test_shell_fixed_keys_match_layout():
    code = 'source test_tipc/tipc_lib.sh; for i in "${!TIPC_FIXED_KEYS[@]}"; do printf "%s\\t%s\\n" "$i" "${TIPC_FIXED_KEYS[$i]}"; done'
    proc = bash(code)
    shell = {int(i): key for i, key in (row.split("\t") for row in proc.stdout.splitlines())}
    assert shell == {i: line.key for i, line in enumerate(configs.LAYOUT) if line.key is not None}


def test_dry_run_builds_every_combination(tmp_path):
    config = ROOT / configs.path_for("factseg50")
    cmds = dry_run(config, "lite_train_lite_infer")
    trains = [c for c in cmds if "paddle_impl/train.py" in c]
    infers = [c for c in cmds if "deploy/infer.py" in c]
    assert len(trains) == 1 and "--device=cpu" in trains[0] and "--iters=40" in trains[0]
    assert "--batch_size=2" in trains[0] and "--crop 128 128" in trains[0] and "--precision=fp32" in trains[0]
    assert len(infers) == 8  # oneDNN on/off x 1|2 threads x batch 1|2
    entry = "test_tipc/output/factseg50/lite_train_lite_infer/norm_train_gpus_-1_autocast_fp32"
    for flag in ("--device=cpu", "--precision=fp32", f"--config={entry}/export/deploy.yaml",
                 "--image_path=output/tipc/input/factseg50"):
        assert all(flag in c.split() for c in infers), flag
    combos = {tuple(re.search(f"{flag}=(\\S+)", c).group(1) for flag in ("--enable_mkldnn", "--cpu_threads", "--batch_size"))
              for c in infers}
    assert combos == {(m, t, b) for m in ("True", "False") for t in ("1", "2") for b in ("1", "2")}
    assert [c.split()[1:3] for c in cmds if "gates.py" in c] == [["test_tipc/gates.py", "loss"],
                                                                  ["test_tipc/gates.py", "parity"]]
    parity = next(c for c in cmds if "gates.py parity" in c)
    assert (f"--model-dir {entry}/export --weights {entry}/train/model.pdparams --input output/tipc/input/factseg50 "
            "--results ") in parity
    # a config edit changes the commands: the script reads the lines the layout names
    lines = config.read_text().splitlines()
    lines[42] = "--cpu_threads:3"
    lines[47] = "--image_path:some/scene.png"
    edited = tmp_path / "train_infer_python.txt"
    edited.write_text("\n".join(lines) + "\n")
    infers = [c for c in dry_run(edited, "whole_infer") if "deploy/infer.py" in c]
    assert len(infers) == 4 and all("--cpu_threads=3" in c and "--image_path=some/scene.png" in c for c in infers)


def test_dry_run_gpu_entries(tmp_path):
    """The generated configs are CPU-only; a GPU machine's copy lists GPUs on lines 3 and 4."""
    config = ROOT / configs.path_for("factseg50")
    lines = config.read_text().splitlines()
    lines[3], lines[4] = "gpu_list:-1|0|0,1", "--device:cpu|gpu|gpu"
    gpu_config = tmp_path / "train_infer_python.txt"
    gpu_config.write_text("\n".join(lines) + "\n")
    trains = [c for c in dry_run(gpu_config, "lite_train_lite_infer", gpus=2) if "paddle_impl/train.py" in c]
    assert len(trains) == 3
    assert trains[1].startswith("env CUDA_VISIBLE_DEVICES=0 python ") and "--device=gpu" in trains[1]
    assert trains[2].startswith("python -m paddle.distributed.launch --devices=0,1 ")
    whole = dry_run(config, "whole_infer")
    assert not any("train.py" in c for c in whole)
    export = next(c for c in whole if "deploy/export.py" in c)
    assert "--variant default" in export and "--weights=output/tipc/weights/factseg50/model.pdparams" in export


@pytest.mark.parametrize("script", ["test_tipc/prepare.sh", SCRIPT])
def test_bad_arguments(script, tmp_path):
    proc = subprocess.run(["bash", str(ROOT / script), "missing.txt", "lite_train_lite_infer"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing.txt: no such config file" in proc.stderr
    config = str(ROOT / configs.path_for("factseg50"))
    proc = subprocess.run(["bash", str(ROOT / script), config, "whole_train_whole_infer"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown mode whole_train_whole_infer" in proc.stderr
    shifted = tmp_path / "shifted.txt"
    lines = Path(config).read_text().splitlines()
    shifted.write_text("\n".join(lines[:5] + ["--seed:0"] + lines[5:]) + "\n")
    proc = subprocess.run(["bash", str(ROOT / script), str(shifted), "lite_train_lite_infer"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "shifted.txt:11: expected key train_model_name, found --weights" in proc.stderr


def test_input_prepared_for_another_mode_is_refused(tmp_path):
    """Lines 11 and 47 name one input folder that prepare.sh fills per mode; ours refuses a folder
    prepared for another mode (PaddleSeg's runner would infer on whatever is there)."""
    lines = (ROOT / configs.path_for("factseg50")).read_text().splitlines()
    lines[11] = f"train_infer_img_dir:{tmp_path / 'input'}"
    config = tmp_path / "train_infer_python.txt"
    config.write_text("\n".join(lines) + "\n")
    (tmp_path / "input").mkdir()
    (tmp_path / "input.mode").write_text("lite_train_whole_infer\n")
    proc = subprocess.run(["bash", SCRIPT, str(config), "lite_train_lite_infer"], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, TIPC_OUTPUT=str(tmp_path / "out")), timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    assert proc.stderr.strip() == (f"error: {tmp_path / 'input'} holds the inference input of lite_train_whole_infer, not "
                                   f"lite_train_lite_infer: run bash test_tipc/prepare.sh {config} lite_train_lite_infer first")


def test_prepare_fills_the_input_folder_per_mode(tmp_path):
    from test_tipc.scenes import fill_input

    lite, whole, dest = tmp_path / "lite", tmp_path / "whole", tmp_path / "input" / "factseg50"
    for folder, names in ((lite, ["P1.png", "P2.png"]), (whole, ["WHOLE.png"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(name)
    assert [p.name for p in fill_input(lite, dest, "lite_train_lite_infer")] == ["P1.png", "P2.png"]
    assert fill_input(whole, dest, "whole_infer") == [dest / "WHOLE.png"]
    assert sorted(p.name for p in dest.iterdir()) == ["WHOLE.png"]
    assert (tmp_path / "input" / "factseg50.mode").read_text() == "whole_infer\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["factseg50", "factseg50.mode"]  # no staging left
    with pytest.raises(FileNotFoundError, match="no scenes to copy"):
        fill_input(tmp_path / "missing", dest, "whole_infer")


def test_failed_command_fails_the_run(tmp_path):
    """A command that fails is logged as `Run failed`, and the run exits 1 (no GPU probe: CPU only)."""
    lines = (ROOT / configs.path_for("factseg50")).read_text().splitlines()
    lines[11] = f"train_infer_img_dir:{tmp_path / 'input'}"  # not prepared: the runner checks no mode stamp
    lines[15] = "norm_train:test_tipc/no_such_script.py --model factseg50"
    lines[23] = "eval:null"
    lines[29] = "norm_export:null"
    config = tmp_path / "train_infer_python.txt"
    config.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(["bash", SCRIPT, str(config), "lite_train_lite_infer"], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, TIPC_OUTPUT=str(tmp_path / "out")), timeout=120)
    assert proc.returncode == 1
    status = (tmp_path / "out" / "factseg50" / "lite_train_lite_infer" / "results_python.log").read_text().splitlines()
    assert len(status) == 2
    assert status[0].startswith(" Run failed with command - factseg50 - python test_tipc/no_such_script.py ")
    assert status[0].endswith("/norm_train_gpus_-1_autocast_fp32/train.log")
    assert status[1].startswith(" Run failed with command - factseg50 - python test_tipc/gates.py loss ")
    assert "2 commands, 2 failed" in proc.stdout


def _records(losses):
    return list(enumerate(losses, 1))


def test_loss_gate():
    from test_tipc.gates import loss_gate

    learned = [3.0 - 0.03 * i + 0.05 * (-1) ** i for i in range(40)]
    assert loss_gate(_records(learned), 40, 5, 2.0)[0]
    # flat noise that happens to end 0.6% lower (the tiny ViT at the recipe's lr) must not pass
    flat = [3.13 + 0.05 * ((i * 7919) % 11 - 5) / 5 for i in range(40)]
    flat[-5:] = [x - 0.02 for x in flat[-5:]]
    passed, verdict = loss_gate(_records(flat), 40, 5, 2.0)
    assert not passed and "standard errors (needs > 2)" in verdict
    assert not loss_gate(_records(learned[:39]), 40, 5, 2.0)[0]  # an iteration missing
    assert not loss_gate(_records(learned[:-1] + [float("nan")]), 40, 5, 2.0)[0]
    assert not loss_gate(_records(learned[::-1]), 40, 5, 2.0)[0]  # loss went up


def test_loss_gate_cli_bad_input(tmp_path):
    proc = subprocess.run(["python", "test_tipc/gates.py", "loss", "--log", str(tmp_path / "none.jsonl")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'none.jsonl'}: no training log (did the training run?)"
    bad = tmp_path / "train_log.jsonl"
    bad.write_text('{"iter": 1, "loss": 2.0}\n{"iteration": 2}\n')
    proc = subprocess.run(["python", "test_tipc/gates.py", "loss", "--log", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and f"{bad}:2: not a training record" in proc.stderr


def test_parity_agreement_and_predictions(tmp_path):
    import numpy as np

    from rsport.data.images import encode_png
    from test_tipc.gates import GateError, agreement, read_prediction

    rng = np.random.default_rng(0)
    probs = rng.random((4, 50, 60)).astype(np.float32)
    probs /= probs.sum(0)
    pred = probs.argmax(0)
    assert agreement(probs, pred, 1e-4) == (1.0, 0, 0.0)
    flipped = pred.copy()
    flipped[0, 0] = (pred[0, 0] + 1) % 4
    share, count, widest = agreement(probs, flipped, 1e-4)
    assert count == 1 and share == 1 - 1 / 3000 and widest > 1e-4  # a real flip, not a near-tie
    scene = tmp_path / "P0001.png"
    (tmp_path / "P0001_class.png").write_bytes(encode_png(pred.astype(np.uint8)))
    assert (read_prediction(tmp_path, scene) == pred).all()
    with pytest.raises(GateError, match="no P0002_class.png or .tif"):
        read_prediction(tmp_path, tmp_path / "P0002.png")


def test_parity_gate_cli_bad_input(tmp_path):
    proc = subprocess.run(["python", "test_tipc/gates.py", "parity", "--model-dir", str(tmp_path / "none"), "--weights",
                           str(tmp_path / "w.pdparams"), "--input", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'none'}: no such model directory"
