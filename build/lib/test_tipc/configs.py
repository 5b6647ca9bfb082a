"""TIPC configs: PaddleSeg's ``train_infer_python.txt`` line layout, rendered from the registry.

Every registered model gets ``test_tipc/configs/<model>/train_infer_python.txt``. The file is a
list of ``key:value`` lines that ``test_train_inference_python.sh`` reads BY LINE NUMBER, so the
layout below is the contract: ``LAYOUT[i]`` describes line ``i`` (0-based, as the shell script's
``lines[i]``). Values: ``a|b`` lists alternatives to loop over, ``mode=value|mode=value`` picks
one value per TIPC mode (lines 6 and 8 only), ``null`` leaves the argument out, an empty value is
filled in by the script (save and output folders).

The same file runs under PaddleSeg's own, unmodified ``test_train_inference_python.sh`` (the
runner of Paddle's TIPC certification) and under ours (``test_tipc/test_train_inference_python.sh``,
which adds numeric gates). ``parse`` therefore also rejects what PaddleSeg's runner would misread
(``UPSTREAM_RULES``): a ``mode=value`` list outside lines 6 and 8, a ``null`` key where it passes
the key unconditionally, a ``:`` inside a value, a blank line.

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
from rsport.cli import CliError, add_model_args, selected_models
from rsport.io import Staged
from rsport.registry import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path("test_tipc") / "configs"
CONFIG_NAME = "train_infer_python.txt"
MODES = ("lite_train_lite_infer", "lite_train_whole_infer", "whole_infer")
LITE_MODES = ("lite_train_lite_infer", "lite_train_whole_infer")
UPSTREAM_MODES = MODES + ("whole_train_whole_infer",)  # PaddleSeg's; the last needs a full dataset
PYTHON = "python"
HEADER = "=" * 27
SAMPLE_ROOT = Path(data.SAMPLE_ROOT)  # relative to the repository root
SCENE_ROOT = Path("output") / "tipc" / "scenes"  # whole-size scenes made by prepare.sh
INFER_ROOT = Path("output") / "tipc" / "input"  # <model>/: the mode's inference input, filled by prepare.sh
WEIGHTS_ROOT = Path("output") / "tipc" / "weights"  # <model>/model.pdparams: whole_infer's converted reference
INPUT_FOLDER = {"isaid": "images", "sen12ms_s1": "s1"}  # where a dataset split keeps its input scenes
INFER_COMBOS = dict(enable_mkldnn="True|False", cpu_threads="1|2", batch_size="1|2", precision="fp32")
# Lines PaddleSeg's runner reads per mode (func_parser_params); every other value is one literal string.
PER_MODE_FIELDS = ("iters", "batch_size")
# Lines whose key PaddleSeg's runner passes without func_set_params (``${key}=${value}``): never null.
UNCONDITIONAL_KEY_FIELDS = ("infer_device", "enable_mkldnn")


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
    Line("gpu_list", "gpu_list", "training devices to loop over: -1 = CPU (generated), 0 = one GPU, 0,1 = "
                                 "multi-GPU (paddle.distributed.launch)"),
    Line("train_device", None, "train.py (and eval.py) device flag, one value per gpu_list entry"),
    Line("autocast", None, "train.py precision flag and the precisions to loop over: fp32; bf16 = bfloat16 "
                           "autocast (--amp)"),
    Line("iters", None, "iterations, per mode"),
    Line("save_dir", None, "train.py save-dir flag (value filled in by the script)"),
    Line("batch_size", None, "train batch size, per mode"),
    Line("pretrained", None, "weights flag of train.py and eval.py (null: train.py's default, the embedded "
                             "seeded reference)"),
    Line("train_model_name", "train_model_name", "weights file inside the save dir that eval/export use"),
    Line("train_infer_img_dir", "train_infer_img_dir", "inference input after training (filled per mode by prepare.sh)"),
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
    Line("infer_device", None, "infer.py device flag and the devices to loop over (cpu)"),
    Line("enable_mkldnn", None, "CPU: oneDNN on/off to loop over"),
    Line("cpu_threads", None, "CPU: thread counts to loop over"),
    Line("infer_batch_size", None, "batch sizes (windows per predictor call) to loop over"),
    Line("use_trt", None, "GPU: TensorRT (False; not run here)"),
    Line("infer_precision", None, "infer.py precision flag and the precisions to loop over (fp32)"),
    Line("infer_model_dir", None, "infer.py flag that takes the export's deploy.yaml (value filled in by the script)"),
    Line("image_path", None, "infer.py input flag; whole_infer's input (filled per mode by prepare.sh)"),
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


def infer_input(spec: ModelSpec) -> Path:
    """The config's inference input (lines 11 and 47): one folder that ``prepare.sh CONFIG MODE``
    fills with the mode's scenes (``lite_input`` or ``whole_input``), as PaddleSeg's prepare.sh
    fills one data folder per mode; PaddleSeg's runner reads these lines as literal paths."""
    return INFER_ROOT / spec.name


def infer_weights(spec: ModelSpec) -> Path:
    """whole_infer's weights (line 36), converted by prepare.sh. In a folder of their own: PaddleSeg's
    runner exports next to them (``--out=$(dirname infer_model)``)."""
    return WEIGHTS_ROOT / spec.name / "model.pdparams"


def fields(spec: ModelSpec, spec_module: str | None = None) -> dict[str, tuple[str, str | None]]:
    """field -> (key, value) of the spec's config; value None: a line without ``:`` (headers, ``##``).
    ``spec_module``: the ``--spec`` that registers a model from outside the zoo (every command loads
    it first)."""
    lite = spec.lite
    crop_h, crop_w = lite["crop"]
    select = (f"--spec {spec_module} " if spec_module else "") + f"--model {spec.name}"
    lite_flags = f"{select} --variant {lite['variant']}"
    lr = f" --lr {lite['lr']}" if "lr" in lite else ""
    return {
        "train_header": (LAYOUT[0].key, None),
        "model_name": ("model_name", spec.name),
        "python": ("python", PYTHON),
        # CPU only: PaddleSeg's runner runs every gpu_list entry (it skips none), and this port is
        # certified on CPU machines; a GPU machine adds 0|0,1 and gpu|gpu here (test_tipc/README.md).
        "gpu_list": ("gpu_list", "-1"),
        "train_device": ("--device", "cpu"),
        "autocast": ("--precision", "fp32"),
        "iters": ("--iters", per_mode({mode: lite["iters"] for mode in LITE_MODES})),
        "save_dir": ("--save_dir", ""),
        "batch_size": ("--batch_size", per_mode({mode: lite["batch_size"] for mode in LITE_MODES})),
        "pretrained": ("--weights", "null"),
        "train_model_name": ("train_model_name", "model.pdparams"),
        "train_infer_img_dir": ("train_infer_img_dir", str(infer_input(spec))),
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
        "norm_export": ("norm_export", f"deploy/export.py {select} --variant {lite['variant']} --format paddle"),
        "quant_export": ("quant_export", "null"),
        "fpgm_export": ("fpgm_export", "null"),
        "distill_export": ("distill_export", "null"),
        "export1": ("export1", "null"),
        "export2": ("export2", "null"),
        "infer_header": (LAYOUT[INDEX["infer_header"]].key, None),
        "infer_model": ("infer_model", str(infer_weights(spec))),
        "infer_export": ("infer_export", f"deploy/export.py {select} --variant default --format paddle"),
        "infer_quant": ("infer_quant", "False"),
        "inference": ("inference", "deploy/infer.py"),
        "infer_device": ("--device", "cpu"),
        "enable_mkldnn": ("--enable_mkldnn", INFER_COMBOS["enable_mkldnn"]),
        "cpu_threads": ("--cpu_threads", INFER_COMBOS["cpu_threads"]),
        "infer_batch_size": ("--batch_size", INFER_COMBOS["batch_size"]),
        "use_trt": ("--use_trt", "False"),
        "infer_precision": ("--precision", INFER_COMBOS["precision"]),
        # PaddleSeg's runner passes <export folder>/deploy.yaml here, as PaddleSeg's own infer.py --config
        "infer_model_dir": ("--config", ""),
        "image_path": ("--image_path", str(infer_input(spec))),
        "save_log_path": ("--save_log_path", "null"),
        "benchmark": ("--benchmark", "null"),
        "infer_out": ("--out", ""),
        "infer_param2": ("--backend", "paddle"),
    }


def render(spec: ModelSpec, spec_module: str | None = None) -> str:
    values = fields(spec, spec_module)
    assert list(values) == [line.field for line in LAYOUT], "fields() must follow LAYOUT"
    out = []
    for line in LAYOUT:
        key, value = values[line.field]
        out.append(key if value is None else f"{key}:{value}")
    text = "\n".join(out) + "\n"
    parse(text, f"<{spec.name} config>")  # never write what either runner would misread
    return text


def path_for(name: str) -> Path:
    return CONFIG_DIR / name / CONFIG_NAME


def is_mode_list(value: str) -> bool:
    """``mode=value|mode=value`` (any TIPC mode, PaddleSeg's whole_train_whole_infer included)."""
    return any(item.partition("=")[0] in UPSTREAM_MODES and "=" in item for item in value.split("|"))


def upstream_problem(spec: Line, key: str, value: str) -> str | None:
    """Why PaddleSeg's runner would misread this line (None: it reads it as we do). It splits a
    line at every ``:`` and keeps the second piece, reads ``mode=value`` lists only on lines 6 and 8
    (func_parser_params), passes the keys of lines 40 and 41 as ``${key}=${value}`` even when
    ``null``, passes every other flag line as ``key=value`` (so a key must be a flag or ``null``)
    and expands shell patterns in a line."""
    if ":" in value:
        return "':' inside the value (PaddleSeg's runner keeps only the text up to it)"
    if any(ch in key + value for ch in "*?["):
        return "a shell pattern character (*, ? or [): PaddleSeg's runner expands it against file names"
    if spec.field not in PER_MODE_FIELDS and is_mode_list(value):
        lines = " and ".join(str(INDEX[f]) for f in PER_MODE_FIELDS)
        return (f"a mode=value list: PaddleSeg's runner picks per mode only on lines {lines}, here it reads one "
                "literal string")
    if spec.field in UNCONDITIONAL_KEY_FIELDS and key == "null":
        return "key null: PaddleSeg's runner passes this key unconditionally (null=VALUE)"
    if spec.key is None and key != "null" and not key.startswith("-"):
        return f"key {key!r} is no flag: both runners would pass the argument {key}=VALUE"
    return None


def parse(text: str, source: str = "<config>") -> dict[str, tuple[str, str]]:
    """field -> (key, value), read by position like the shell scripts; ConfigError when a line is
    missing, a fixed key is not where the layout puts it, or PaddleSeg's runner would misread a line
    (``upstream_problem``; a blank line, which it skips, shifts every later field)."""
    lines = text.splitlines()
    if len(lines) < len(LAYOUT):
        raise ConfigError(f"{source}: {len(lines)} lines, the layout needs {len(LAYOUT)}")
    out = {}
    for i, (line, spec) in enumerate(zip(lines, LAYOUT)):
        key, _, value = line.partition(":")
        if not line:
            raise ConfigError(f"{source}:{i + 1}: blank line (PaddleSeg's runner skips it: every later field would shift)")
        if spec.key is not None and key != spec.key:
            raise ConfigError(f"{source}:{i + 1}: expected key {spec.key!r} ({spec.doc}), found {key!r}")
        problem = upstream_problem(spec, key, value)
        if problem:
            raise ConfigError(f"{source}:{i + 1}: {problem}")
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
                    "model from the registry, in PaddleSeg's TIPC line layout; --layout prints the line map. "
                    "A model from your own package (--spec) gets its config under --out.",
        epilog="examples:\n"
               "  python test_tipc/configs.py            # rewrite every config\n"
               "  python test_tipc/configs.py --check    # exit 1 if a config differs from the registry\n"
               "  python test_tipc/configs.py --layout   # which line holds what\n"
               "  python test_tipc/configs.py --spec my_package.my_spec --out my_tipc/configs",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, several=True)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"configs folder (default: {CONFIG_DIR}; required with --spec)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 listing every drifted file")
    parser.add_argument("--layout", action="store_true", help="print the line map and exit")
    args = parser.parse_args(argv)
    if args.layout:
        for i, line in enumerate(LAYOUT):
            print(f"{i:3d}  {line.key or '<flag>':<28} {line.doc}")
        return 0
    try:
        modules = {}
        for target in args.spec:
            if ":" in target:
                raise CliError(f"--spec {target}: give the module (it registers its specs or holds SPEC); "
                               f"PaddleSeg's runner cuts a config value at ':'")
            modules.update(dict.fromkeys(rsport.load_spec(target), target))
        names = (list(modules) if modules and args.model is None
                 else selected_models(argparse.Namespace(model=args.model, spec=[]), several=True))
        if modules and args.out is None:
            raise CliError("--out is required with --spec (the repository's folder holds the zoo's configs)")
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        problems = check(names)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            print("fix: python test_tipc/configs.py", file=sys.stderr)
            return 1
        print(f"{len(names)} TIPC configs match the registry")
        return 0
    folder = ROOT / CONFIG_DIR if args.out is None else args.out
    with Staged() as staged:
        for name in names:
            staged.path(folder / name / CONFIG_NAME).write_text(render(rsport.get(name), modules.get(name)))
        staged.commit()
    for name in names:
        print(folder / name / CONFIG_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
