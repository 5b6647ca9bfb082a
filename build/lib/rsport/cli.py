"""The command-line convention every tool shares, and the ``rsport`` command.

One spelling of model selection in every command: ``--model NAME`` (``--model a,b`` or
``--model all`` where a command takes several), plus ``--spec package.module[:ATTR]``
(repeatable) to load a user's ModelSpec from their own package; a command given only ``--spec``
works on the specs it loaded. Bad input is one ``error:`` line on stderr and exit code 2.

``rsport <command> ...`` runs the same tools as the scripts (``python align/run_all.py`` is
``rsport align``); the tools are found by import string, like the registry's model entries, so
the core has no import edge towards them.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from rsport.registry import SpecError, UnknownModelError, get, load_spec, names

COMMANDS = {  # name -> (module:function taking argv, one line)
    "align": ("align.run_all:main", "alignment harness: data, forward, metric, loss, backward, optimizer, train"),
    "convert": ("convert.cli:main_any", "convert weights torch <-> paddle, strictly, with a verified manifest"),
    "export": ("deploy.export:main", "export Paddle static (PIR + legacy) and ONNX, each artifact checked"),
    "infer": ("deploy.infer:main", "sliding-window inference on whole images / GeoTIFF scenes"),
    "benchmark": ("deploy.benchmark:main", "deployment latency, throughput and memory per backend"),
    "train": (None, "train a registered model (--framework torch|paddle)"),
    "eval": (None, "evaluate a registered model on whole scenes (--framework torch|paddle)"),
    "tipc": ("test_tipc.configs:main", "generate the TIPC train_infer_python.txt configs"),
    "twins": ("rsport.twins:main", "check that torch_ref/ and paddle_impl/ twins diff cleanly"),
    "data": ("rsport.data.samples:main", "build the embedded sample data"),
    "labels": ("rsport.data.labels:main", "label tool: color masks to ids, class weights"),
    "models": ("rsport.cli:list_models", "list the registered models (zoo, --spec, entry points)"),
}
FRAMEWORK_COMMANDS = {"train": {"torch": "torch_ref.train:main", "paddle": "paddle_impl.train:main"},
                      "eval": {"torch": "torch_ref.eval:main", "paddle": "paddle_impl.eval:main"}}

USAGE = """usage: rsport <command> [options]      (rsport <command> --help for each command's options)

commands:
{commands}

examples:
  rsport align --model factseg50 --dtype float64
  rsport align --spec my_package.my_spec               # a model from your own package
  rsport convert --model factseg50 --src factseg50.pth --dst factseg50.pdparams
  rsport train --framework paddle --model factseg50 --variant tiny --iters 20
  rsport export --model factseg50 --out output/deploy/factseg50
  rsport infer --model-dir output/deploy/factseg50 --input scene.tif --out output/infer
  rsport models"""


class CliError(ValueError):
    """Bad command-line input: printed as one ``error:`` line, exit code 2."""


def add_model_args(parser: argparse.ArgumentParser, several: bool = False, required: bool = False,
                   positional: bool = False) -> None:
    """``--model`` (and ``--spec``) in the one spelling every command uses. ``several``: a
    comma-separated list or ``all``. ``positional``: the first positional argument is accepted
    as the model too (the documented ``convert/torch2paddle.py factseg50`` form)."""
    what = "comma-separated registered models, or 'all'" if several else "registered model"
    default = " (default: all)" if several else (" (required)" if required else "")
    parser.add_argument("--model", "--models", dest="model", default=None, help=f"{what}{default}")
    if positional:
        parser.add_argument("model_positional", nargs="?", metavar="MODEL", help="same as --model")
    parser.add_argument("--spec", action="append", default=[], metavar="MODULE[:ATTR]",
                        help="load a ModelSpec from your own package first (repeatable); with no --model, "
                             "the command works on the models it registered")


def selected_models(args: argparse.Namespace, several: bool = False, required: bool = True) -> list[str]:
    """The models the command works on: load ``--spec``s, then read ``--model``; CliError on bad input."""
    loaded = []
    for target in getattr(args, "spec", []) or []:
        try:
            loaded += load_spec(target)
        except SpecError as err:
            raise CliError(str(err)) from None
    value = args.model or getattr(args, "model_positional", None)
    if getattr(args, "model_positional", None) and args.model and args.model != args.model_positional:
        raise CliError(f"two models given: {args.model_positional!r} and --model {args.model!r}")
    if value is None:
        if loaded:
            value = ",".join(loaded)
        elif several:
            value = "all"
        elif required:
            raise CliError("--model is required (or --spec a package that registers one)")
        else:
            return []
    known = names()
    chosen = known if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    if not several and len(chosen) != 1:
        raise CliError(f"--model takes one model here, got {value!r}")
    for name in chosen:
        try:
            get(name)
        except UnknownModelError as err:
            raise CliError(str(err)) from None
    if not chosen:
        raise CliError("--model: no model given")
    return chosen


def list_models(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rsport models", description="List the registered models: the zoo, "
                                     "the packages that register through the 'rsport.models' entry point, and --spec.",
                                     epilog="examples:\n  rsport models --long\n  rsport models --spec my_package.my_spec",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", action="append", default=[], metavar="MODULE[:ATTR]",
                        help="load a ModelSpec from your own package first (repeatable)")
    parser.add_argument("--long", action="store_true", help="also print each model's provenance")
    args = parser.parse_args(argv)
    try:
        for target in args.spec:
            load_spec(target)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name in names():
        spec = get(name)
        print(f"{name:<20} {spec.summary or '(no summary)'}")
        if args.long and spec.reference:
            print(f"{'':<20} source: {spec.reference}")
    return 0


def _call(entry: str, argv: list[str]) -> int:
    module, _, function = entry.partition(":")
    return importlib.import_module(module).__dict__[function](argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        print(USAGE.format(commands="\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if command in FRAMEWORK_COMMANDS:
        parser = argparse.ArgumentParser(prog=f"rsport {command}", add_help=False)
        parser.add_argument("--framework", choices=sorted(FRAMEWORK_COMMANDS[command]))
        known, rest = parser.parse_known_args(rest)
        if known.framework is None:
            if {"-h", "--help"} & set(rest):
                print(f"usage: rsport {command} --framework {{torch,paddle}} [options]\n\n"
                      f"{COMMANDS[command][1]}; the options are the tree's own script's "
                      f"(rsport {command} --framework paddle --help), the same in both trees.")
                return 0
            print(f"error: rsport {command} needs --framework torch or --framework paddle", file=sys.stderr)
            return 2
        return _call(FRAMEWORK_COMMANDS[command][known.framework], rest)
    return _call(COMMANDS[command][0], rest)


if __name__ == "__main__":
    sys.exit(main())
