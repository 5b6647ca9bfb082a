"""The whole-size scene of TIPC's whole modes: one deterministic scene per model, generated offline
with the sample data's own scene painters (``rsport.data.samples``), in the dataset's layout.

"Whole" means a scene larger than one inference window, at a size the model meets in practice:
``WHOLE_SCALE`` x the registry's ``input_size`` (the training patch and default window), plus a
few odd pixels, so sliding-window inference visits a 2 x 3 grid of overlapping windows and the
last window of each row and column is shifted back to the border: 1123 x 1573 px for the 896 px
iSAID models (a typical iSAID scene is 800 to 4000 px wide), 323 x 453 px for the 256 px
Sentinel-1 model (a few SEN12MS patches). The sample val scenes (256 to 420 px) fit in one window.

Layout (``OUT``, by default ``output/tipc/scenes/<model>/val/images`` or ``.../val/s1``):
``OUT/<name>.png`` + ``OUT/../masks/<name>_instance_color_RGB.png`` (iSAID) or ``OUT/<name>.tif``
(2-band float32 dB GeoTIFF, EPSG:32632, 10 m) + ``OUT/../lc/<name>.tif`` (Sentinel-1), so the
scene can be evaluated like a val split as well. Files are written atomically; an existing
scene is kept unless ``--force``.

With ``--mode MODE --infer-dir DIR`` (prepare.sh) it then puts MODE's inference input into DIR, the
one folder a config names on lines 11 and 47: copies of the sample val scenes for
``lite_train_lite_infer``, of the whole-size scene for the whole modes. DIR is replaced, and
``DIR.mode`` names the mode, which our runner checks (PaddleSeg's runner reads the folder as is).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

import rsport
from rsport.io import Staged
from rsport.registry import ModelSpec, UnknownModelError
from test_tipc import configs

WHOLE_SCALE = (5 / 4, 7 / 4)  # (height, width) x input_size
ODD = (3, 5)  # extra pixels: sizes that are no multiple of the window, stride or 32
SEED = 7
OBJECTS_PER_SAMPLE_AREA = 20  # iSAID objects per 120k px, like the sample scenes


def whole_size(spec: ModelSpec) -> tuple[int, int]:
    return tuple(int(size * scale) + odd for size, scale, odd in zip(spec.input_size, WHOLE_SCALE, ODD))


def scene_name(spec: ModelSpec) -> str:
    h, w = whole_size(spec)
    return f"WHOLE_{h}x{w}"


def write_isaid(out: Path, name: str, h: int, w: int, staged: Staged) -> list[Path]:
    from rsport.data.images import encode_png
    from rsport.data.labels import ISAID_CLASSES, ISAID_MASK_SUFFIX
    from rsport.data.samples import isaid_scene

    rng = np.random.default_rng([SEED, 0, h, w])
    rounds = max(1, round(h * w / 120_000 * OBJECTS_PER_SAMPLE_AREA / len(ISAID_CLASSES)))
    classes = list(range(1, len(ISAID_CLASSES))) * rounds
    classes = [classes[j] for j in rng.permutation(len(classes))]
    image, mask = isaid_scene(rng, h, w, classes)
    files = [out / f"{name}.png", out.parent / "masks" / f"{name}{ISAID_MASK_SUFFIX}.png"]
    for path, array in zip(files, (image, mask)):
        staged.path(path).write_bytes(encode_png(array))
    return files


def write_sen12ms(out: Path, name: str, h: int, w: int, staged: Staged) -> list[Path]:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    from rsport.data.labels import DFC_CLASSES
    from rsport.data.samples import S1_EPSG, S1_PIXEL, s1_scene

    rng = np.random.default_rng([SEED, 1, h, w])
    regions = max(len(DFC_CLASSES), round(h * w / 65_536 * 14))  # region density of the sample tiles
    classes = list(range(1, len(DFC_CLASSES) + 1)) + list(rng.integers(1, len(DFC_CLASSES) + 1, regions - len(DFC_CLASSES)))
    db, labels = s1_scene(rng, h, w, classes)
    transform = Affine(S1_PIXEL, 0.0, 600000.0, 0.0, -S1_PIXEL, 5500000.0)
    files = [out / f"{name}.tif", out.parent / "lc" / f"{name}.tif"]
    for path, data, nodata in zip(files, (db, labels[None]), (None, 0)):
        profile = dict(driver="GTiff", height=h, width=w, count=data.shape[0], dtype=str(data.dtype),
                       crs=CRS.from_epsg(S1_EPSG), transform=transform, compress="deflate")
        if nodata is not None:
            profile["nodata"] = nodata
        with rasterio.open(staged.path(path), "w", **profile) as dst:
            dst.write(data)
    return files


WRITERS = {"isaid": write_isaid, "sen12ms_s1": write_sen12ms}


def fill_input(source: Path, dest: Path, mode: str) -> list[Path]:
    """Replace ``dest`` with copies of the files in ``source`` and write ``dest.mode`` = ``mode``."""
    files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{source}: no scenes to copy")
    stage = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, stage / path.name)
    stamp = Path(f"{dest}.mode")
    stamp.unlink(missing_ok=True)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    os.replace(stage, dest)
    stamp.write_text(f"{mode}\n")
    return [dest / path.name for path in files]


def write_scene(spec: ModelSpec, out: Path, force: bool) -> None:
    (h, w), name = whole_size(spec), scene_name(spec)
    existing = sorted(out.glob(f"{name}.*")) if out.is_dir() else []
    if existing and not force:
        print(f"kept {existing[0]} ({h}x{w})")
        return
    with Staged() as staged:
        files = WRITERS[spec.dataset](out, name, h, w, staged)
        staged.commit()
    for path in files:
        print(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="test_tipc/scenes.py", description="Write the whole-size scene TIPC's whole modes infer on "
        "(deterministic, offline; see the module docstring for what 'whole' means); with --mode and "
        "--infer-dir, then put the mode's inference input into the config's input folder.",
        epilog="examples:\n"
               "  python test_tipc/scenes.py --model factseg50\n"
               "  python test_tipc/scenes.py --model factseg50 --mode lite_train_whole_infer \\\n"
               "      --infer-dir output/tipc/input/factseg50",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="registered model (its dataset and input size)")
    parser.add_argument("--out", type=Path, default=None,
                        help="image folder to write the scene into (default: output/tipc/scenes/<model>/val/<images|s1>)")
    parser.add_argument("--force", action="store_true", help="write even if the scene exists")
    parser.add_argument("--mode", choices=configs.MODES, default=None,
                        help="TIPC mode whose inference input goes into --infer-dir (lite_train_lite_infer: the "
                             "sample val scenes, no whole-size scene written)")
    parser.add_argument("--infer-dir", type=Path, default=None, help="the config's inference input folder, replaced")
    args = parser.parse_args(argv)
    try:
        spec = rsport.get(args.model)
    except UnknownModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if (args.mode is None) != (args.infer_dir is None):
        print("error: --mode and --infer-dir go together", file=sys.stderr)
        return 2
    out = args.out or configs.whole_input(spec)
    if out.exists() and not out.is_dir():
        print(f"error: {out}: exists and is not a folder", file=sys.stderr)
        return 2
    if args.mode != "lite_train_lite_infer":
        write_scene(spec, out, args.force)
    if args.mode is not None:
        source = configs.lite_input(spec) if args.mode == "lite_train_lite_infer" else out
        try:
            files = fill_input(source, args.infer_dir, args.mode)
        except FileNotFoundError as err:
            print(f"error: {err} (python -m rsport.data.samples writes the sample data)", file=sys.stderr)
            return 2
        print(f"{args.infer_dir}: the {args.mode} input, {len(files)} scene(s) copied from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
