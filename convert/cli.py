"""Shared command line of convert/torch2paddle.py, convert/paddle2torch.py and `rsport convert`."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import rsport
from rsport.cli import CliError, add_model_args, selected_models
from rsport.registry import VARIANTS
from rsport.rules import PADDLE, TORCH

EXAMPLES = {
    TORCH: "examples:\n"
           "  python convert/torch2paddle.py factseg50                      # embedded seeded reference\n"
           "  python convert/torch2paddle.py --model factseg50 --src factseg50.pth --dst factseg50.pdparams\n"
           "  python convert/torch2paddle.py --model all                    # every registered model\n"
           "  python convert/torch2paddle.py --spec my_package.my_spec      # a model from your own package",
    PADDLE: "examples:\n"
            "  python convert/paddle2torch.py --model factseg50 --src output/weights/factseg50.pdparams\n"
            "  python convert/paddle2torch.py --model factseg50 --src factseg_isaid.pdparams --naming paddlers",
}


def parse(source_side: str, argv, prog: str | None = None) -> argparse.Namespace:
    target_side = PADDLE if source_side == TORCH else TORCH
    parser = argparse.ArgumentParser(
        prog=prog or f"convert/{source_side}2{target_side}.py",
        description=f"Convert {source_side} weights of a registered model to {target_side}, strictly: a checked "
                    f"one-to-one rename from the registry's rule table, then forward parity of both twins in "
                    f"float32 and float64 on a seeded fixture. Nothing is written unless every check passes.",
        epilog=EXAMPLES[source_side] + "\nexit status: 0 converted and verified, 1 the twins disagree (nothing "
                                       "written), 2 bad input", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, several=True, positional=True)
    parser.add_argument("--src", type=Path, required=source_side == PADDLE,
                        help="source checkpoint: a state_dict or a training checkpoint that holds one (SimpleCV "
                             "{'model', 'opt', 'global_step'}, mmseg {'meta', 'state_dict', 'optimizer'}, timm EMA "
                             "...; extra entries are reported, not converted), 'module.' prefixes allowed"
                             + ("" if source_side == PADDLE else " (default: the embedded seeded reference)"))
    parser.add_argument("--key", help="the checkpoint entry that holds the weights, e.g. 'state_dict' to take the "
                                      "raw weights where EMA weights are present (default: automatic, EMA first; "
                                      "the choice is reported)")
    parser.add_argument("--dst", type=Path, help="where to write (default: under output/weights/)")
    parser.add_argument("--variant", choices=VARIANTS, default="default",
                        help="model size: 'tiny' is the CI-sized variant (default: %(default)s)")
    if source_side == TORCH:
        parser.add_argument("--seed", type=int, default=None,
                            help="seed of the embedded reference when no --src is given (default: 2333)")
        parser.add_argument("--allow-pickle", action="store_true",
                            help="let torch unpickle arbitrary objects (only for files you trust)")
    parser.add_argument("--naming", default="auto",
                        help=f"{source_side}-side naming of the source: auto, native, or a spec's alternative "
                             "such as 'paddlers' (paddle) or 'mmseg1' (torch) (default: %(default)s, detection is "
                             "reported)")
    return parser.parse_args(argv)


def main(source_side: str, argv=None, prog: str | None = None) -> int:
    args = parse(source_side, argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        models = selected_models(args, several=True)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from convert import core  # after argparse, so --help needs no framework import

    specs = [rsport.get(n) for n in models]
    if len(specs) > 1 and (args.src or args.dst):
        print("error: --src/--dst name one model's files; they cannot be used with several models", file=sys.stderr)
        return 2
    status = 0
    destinations = {spec.name: args.dst or core.default_path(spec, args.variant, core.other(source_side))
                    for spec in specs}
    try:  # every output path before any work
        for dst in destinations.values():
            core.check_destination(dst)
    except core.ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for spec in specs:
        try:
            src, note = args.src, None
            if src is None:
                src, note = core.write_reference(spec, args.variant, args.seed)
            result = core.convert(spec, source_side, src, destinations[spec.name], args.variant, naming=args.naming,
                                  allow_pickle=getattr(args, "allow_pickle", False), source_note=note, key=args.key)
        except core.ConversionError as err:
            print(f"error: {err}", file=sys.stderr)
            status = max(status, err.exit_code)
            continue
        print(core.summary(result))
    return status


def main_any(argv=None) -> int:
    """``rsport convert``: the direction from ``--to`` (default: paddle), or from ``--src``'s suffix."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--to", choices=(TORCH, PADDLE))
    pre.add_argument("--src", type=Path)
    known, rest = pre.parse_known_args(argv)
    target = known.to or (TORCH if known.src is not None and known.src.suffix == ".pdparams" else PADDLE)
    source = TORCH if target == PADDLE else PADDLE
    if known.src is not None:
        rest += ["--src", str(known.src)]
    if known.to is None and {"-h", "--help"} & set(rest):
        print("rsport convert: --to paddle (default; or a .pth --src) or --to torch (or a .pdparams --src); "
              "the options are the direction's own:\n")
    return main(source, rest, prog=f"rsport convert --to {target}")
