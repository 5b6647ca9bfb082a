"""TIPC configs: PaddleSeg's ``train_infer_python.txt`` line layout, rendered from the registry.

Every registered model gets ``test_tipc/configs/<model>/train_infer_python.txt``. The file is a
list of ``key:value`` lines that ``test_train_inference_python.sh`` reads BY LINE NUMBER, so the
layout below is the contract: ``LAYOUT[i]`` describes line ``i`` (0-based, as the shell script's
``lines[i]``). Values: ``a|b`` lists alternatives to loop over, ``mode=value|mode=value`` picks
one value per TIPC mode, ``null`` leaves the argument out, an empty value is filled in by the
script (save and output folders).

The configs are generated, never edited by hand: ``python test_tipc/configs.py`` rewrites them
from the registry and ``python test_tipc/configs.py --check`` (run by the tests) fails when a file
differs from what the registry gives, so a config cannot drift from its model.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path


import rsport
from rsport import data
from rsport.io import Staged
from rsport.registry import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path("test_tipc") / "configs"
CONFIG_NAME = "train_infer_python.txt"
MODES = ("lite_train_lite_infer", "lite_train_whole_infer", "whole_infer")
LITE_MODES = ("lite_train_lite_infer", "lite_train_whole_infer")
PYTHON = "python"
HEADER = "=" * 27
SAMPLE_ROOT = Path(data.SAMPLE_ROOT)  # relative to the repository root
SCENE_ROOT = Path("output") / "tipc" / "scenes"  # whole-size scenes made by prepare.sh
INPUT_FOLDER = {"isaid": "images", "sen12ms_s1": "s1"}  # where a dataset split keeps its input scenes
INFER_COMBOS = dict(enable_mkldnn="True|False", cpu_threads="1|2", batch_size="1|2", precision="fp32")


class ConfigError(ValueError):
    """A config file that does not follow the layout; the message names the file and line."""


@dataclass(frozen=True)
class Line:
    """One line of the layout: ``field`` is how the tools name it; ``key`` is the fixed text
    left of the first ``:`` (``None``: the key is the command-line flag the value is passed
    with, so a config may rename it)."""

    field: str
    key: str | None
    doc: str


def _header(name: str) -> str:
    return f"{HEADER}{name}{HEADER}"


# Line i of every config. PaddleSeg's test_train_inference_python.sh reads the same positions.
LAYOUT: tuple[Line, ...] = (
    Line("train_header", _header("train_params"), "section header"),
    Line("model_name", "model_name", "registry name; names the output folder"),
    Line("python", "python", "interpreter"),
    Line("gpu_list", "gpu_list", "training devices to loop over: -1 = CPU, 0 = one GPU, 0,1 = multi-GPU "
                                 "(paddle.distributed.launch); GPU entries are skipped without CUDA"),
    Line("train_device", None, "train.py device flag, one value per gpu_list entry"),
    Line("autocast", "autocast", "precision list: fp32 (nothing added) or amp (adds train.py --amp)"),
    Line("iters", None, "iterations, per mode"),
    Line("save_dir", None, "train.py save-dir flag (value filled in by the script)"),
    Line("batch_size", None, "train batch size, per mode"),
    Line("pretrained", None, "weights flag of train.py and eval.py (null: train from scratch)"),
    Line("train_model_name", "train_model_name", "weights file inside the save dir that eval/export use"),
    Line("train_infer_img_dir", "train_infer_img_dir", "inference input after training, per mode"),
    Line("train_param1", None, "extra train.py flag: the dataset folder"),
    Line("sep_train", "##", "separator"),
    Line("trainer", "trainer", "trainers to loop over"),
    Line("norm_train", "norm_train", "the train command (script + fixed flags)"),
    Line("pact_train", "pact_train", "unused (null)"),
    Line("fpgm_train", "fpgm_train", "unused (null)"),
    Line("distill_train", "distill_train", "unused (null)"),
    Line("trainer1", None, "unused extra trainer (null:null)"),
    Line("trainer2", None, "unused extra trainer (null:null)"),
    Line("sep_trainers", "##", "separator"),
    Line("eval_header", _header("eval_params"), "section header"),
    Line("eval", "eval", "the eval command (script + fixed flags); gets the flags of lines 4 and 9"),
    Line("eval_out", None, "eval.py metrics-JSON flag (value filled in by the script)"),
    Line("sep_eval", "##", "separator"),
    Line("export_header", _header("export_params"), "section header"),
    Line("export_save_dir", None, "export.py output flag (value filled in by the script)"),
    Line("export_weights", None, "export.py weights flag (value filled in by the script)"),
    Line("norm_export", "norm_export", "the export command after training"),
    Line("quant_export", "quant_export", "unused (null)"),
    Line("fpgm_export", "fpgm_export", "unused (null)"),
    Line("distill_export", "distill_export", "unused (null)"),
    Line("export1", "export1", "unused (null)"),
    Line("export2", "export2", "unused (null)"),
    Line("infer_header", _header("infer_params"), "section header (PaddleSeg reads it as inference_dir: empty)"),
    Line("infer_model", "infer_model", "whole_infer: weights to export and infer (the converted reference)"),
    Line("infer_export", "infer_export", "whole_infer: the export command for infer_model"),
    Line("infer_quant", "infer_quant", "quantized model? (False)"),
    Line("inference", "inference", "the inference script"),
    Line("infer_device", None, "inference devices to loop over (key null: infer.py takes no device flag)"),
    Line("enable_mkldnn", None, "CPU: oneDNN on/off to loop over"),
    Line("cpu_threads", None, "CPU: thread counts to loop over"),
    Line("infer_batch_size", None, "batch sizes (windows per predictor call) to loop over"),
    Line("use_trt", None, "GPU: TensorRT (False; not run here)"),
    Line("infer_precision", None, "precisions to loop over (fp32; key null: infer.py takes no precision flag)"),
    Line("infer_model_dir", None, "infer.py model-dir flag (value filled in by the script)"),
    Line("image_path", None, "infer.py input flag, per mode"),
    Line("save_log_path", None, "unused (null)"),
    Line("benchmark", None, "unused (null)"),
    Line("infer_out", None, "infer.py output flag (value filled in by the script, one folder per combination)"),
    Line("infer_param2", None, "extra infer.py flag: the backend"),
)
INDEX = {line.field: i for i, line in enumerate(LAYOUT)}


def per_mode(values: dict[str, object]) -> str:
    return "|".join(f"{mode}={value}" for mode, value in values.items())


def data_dir(spec: ModelSpec) -> Path:
    return SAMPLE_ROOT / spec.dataset


def lite_input(spec: ModelSpec) -> Path:
    """The lite inference input: every val scene of the sample data."""
    return data_dir(spec) / "val" / INPUT_FOLDER[spec.dataset]


def whole_input(spec: ModelSpec) -> Path:
    """The whole-size scene that prepare.sh writes for whole modes (test_tipc/scenes.py)."""
    return SCENE_ROOT / spec.name / "val" / INPUT_FOLDER[spec.dataset]


def fields(spec: ModelSpec) -> dict[str, tuple[str, str | None]]:
    """field -> (key, value) of the spec's config; value None: a line without ``:`` (headers, ``##``)."""
    lite = spec.lite
    crop_h, crop_w = lite["crop"]
    lite_flags = f"--model {spec.name} --variant {lite['variant']}"
    lr = f" --lr {lite['lr']}" if "lr" in lite else ""
    img = {mode: lite_input(spec) if mode == "lite_train_lite_infer" else whole_input(spec) for mode in MODES}
    return {
        "train_header": (LAYOUT[0].key, None),
        "model_name": ("model_name", spec.name),
        "python": ("python", PYTHON),
        "gpu_list": ("gpu_list", "-1|0|0,1"),
        "train_device": ("--device", "cpu|gpu|gpu"),
        "autocast": ("autocast", "fp32"),
        "iters": ("--iters", per_mode({mode: lite["iters"] for mode in LITE_MODES})),
        "save_dir": ("--save_dir", ""),
        "batch_size": ("--batch_size", per_mode({mode: lite["batch_size"] for mode in LITE_MODES})),
        "pretrained": ("--weights", "null"),
        "train_model_name": ("train_model_name", "model.pdparams"),
        "train_infer_img_dir": ("train_infer_img_dir", per_mode({mode: img[mode] for mode in LITE_MODES})),
        "train_param1": ("--data", str(data_dir(spec))),
        "sep_train": ("##", None),
        "trainer": ("trainer", "norm_train"),
        "norm_train": ("norm_train", f"paddle_impl/train.py {lite_flags} --crop {crop_h} {crop_w}{lr} --seed 0"),
        "pact_train": ("pact_train", "null"),
        "fpgm_train": ("fpgm_train", "null"),
        "distill_train": ("distill_train", "null"),
        "trainer1": ("null", "null"),
        "trainer2": ("null", "null"),
        "sep_trainers": ("##", None),
        "eval_header": (LAYOUT[INDEX["eval_header"]].key, None),
        "eval": ("eval", f"paddle_impl/eval.py {lite_flags} --data {data_dir(spec)}"),
        "eval_out": ("--out", ""),
        "sep_eval": ("##", None),
        "export_header": (LAYOUT[INDEX["export_header"]].key, None),
        "export_save_dir": ("--out", ""),
        "export_weights": ("--weights", ""),
        "norm_export": ("norm_export", f"deploy/export.py {spec.name} --variant {lite['variant']} --format paddle"),
        "quant_export": ("quant_export", "null"),
        "fpgm_export": ("fpgm_export", "null"),
        "distill_export": ("distill_export", "null"),
        "export1": ("export1", "null"),
        "export2": ("export2", "null"),
        "infer_header": (LAYOUT[INDEX["infer_header"]].key, None),
        "infer_model": ("infer_model", f"output/weights/{spec.name}.pdparams"),
        "infer_export": ("infer_export", f"deploy/export.py {spec.name} --variant default --format paddle"),
        "infer_quant": ("infer_quant", "False"),
        "inference": ("inference", "deploy/infer.py"),
        "infer_device": ("null", "cpu"),  # deploy/infer.py runs on the CPU and has no --device
        "enable_mkldnn": ("--enable_mkldnn", INFER_COMBOS["enable_mkldnn"]),
        "cpu_threads": ("--cpu_threads", INFER_COMBOS["cpu_threads"]),
        "infer_batch_size": ("--batch_size", INFER_COMBOS["batch_size"]),
        "use_trt": ("--use_trt", "False"),
        "infer_precision": ("null", INFER_COMBOS["precision"]),  # fp32 only; infer.py has no --precision
        "infer_model_dir": ("--model_dir", ""),
        "image_path": ("--image_path", per_mode({mode: img[mode] for mode in MODES})),
        "save_log_path": ("--save_log_path", "null"),
        "benchmark": ("--benchmark", "null"),
        "infer_out": ("--out", ""),
        "infer_param2": ("--backend", "paddle"),
    }


def render(spec: ModelSpec) -> str:
    values = fields(spec)
    assert list(values) == [line.field for line in LAYOUT], "fields() must follow LAYOUT"
    out = []
    for line in LAYOUT:
        key, value = values[line.field]
        out.append(key if value is None else f"{key}:{value}")
    return "\n".join(out) + "\n"


def path_for(name: str) -> Path:
    return CONFIG_DIR / name / CONFIG_NAME


def parse(text: str, source: str = "<config>") -> dict[str, tuple[str, str]]:
    """field -> (key, value), read by position like the shell script; ConfigError when a line
    is missing or a fixed key is not where the layout puts it."""
    lines = text.splitlines()
    if len(lines) < len(LAYOUT):
        raise ConfigError(f"{source}: {len(lines)} lines, the layout needs {len(LAYOUT)}")
    out = {}
    for i, (line, spec) in enumerate(zip(lines, LAYOUT)):
        key, _, value = line.partition(":")
        if spec.key is not None and key != spec.key:
            raise ConfigError(f"{source}:{i + 1}: expected key {spec.key!r} ({spec.doc}), found {key!r}")
        out[spec.field] = (key, value)
    return out


def value_for_mode(value: str, mode: str) -> str:
    """``mode=value|mode=value`` -> the value for ``mode`` (empty when the mode is not listed);
    any other value is returned as is."""
    items = value.split("|")
    if not all(item.partition("=")[0] in MODES for item in items):
        return value
    return next((item.partition("=")[2] for item in items if item.partition("=")[0] == mode), "")


def check(names: list[str]) -> list[str]:
    """Problems (one line each) between the files on disk and what the registry renders."""
    problems = []
    for name in names:
        path = ROOT / path_for(name)
        if not path.is_file():
            problems.append(f"{path_for(name)}: missing")
        elif path.read_text() != render(rsport.get(name)):
            problems.append(f"{path_for(name)}: differs from the registry")
    known = set(names)
    for path in sorted((ROOT / CONFIG_DIR).glob(f"*/{CONFIG_NAME}")):
        if path.parent.name not in known:
            problems.append(f"{path.relative_to(ROOT)}: no registered model {path.parent.name!r}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="test_tipc/configs.py",
        description="Write (or --check) test_tipc/configs/<model>/train_infer_python.txt for every registered "
                    "model from the registry, in PaddleSeg's TIPC line layout; --layout prints the line map.",
        epilog="examples:\n"
               "  python test_tipc/configs.py            # rewrite every config\n"
               "  python test_tipc/configs.py --check    # exit 1 if a config differs from the registry\n"
               "  python test_tipc/configs.py --layout   # which line holds what",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 listing every drifted file")
    parser.add_argument("--layout", action="store_true", help="print the line map and exit")
    args = parser.parse_args(argv)
    if args.layout:
        for i, line in enumerate(LAYOUT):
            print(f"{i:3d}  {line.key or '<flag>':<28} {line.doc}")
        return 0
    names = rsport.names()
    if args.check:
        problems = check(names)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            print("fix: python test_tipc/configs.py", file=sys.stderr)
            return 1
        print(f"{len(names)} TIPC configs match the registry")
        return 0
    with Staged() as staged:
        for name in names:
            staged.path(ROOT / path_for(name)).write_text(render(rsport.get(name)))
        staged.commit()
    for name in names:
        print(path_for(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
