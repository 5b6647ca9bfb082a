"""Label schemes and the label tool: color masks -> class ids, id checks, class weights.

iSAID (Z-Zheng/FarSeg ``data/isaid.py`` @ 90fc047d, ``COLOR_MAP``): 16 classes, the index in the
palette is the class id. The original decodes a color mask with a weighted key ``R + 2G + 3B``
matched against the palette's keys and sends every unmatched color to 0 (background,
``RemoveColorMap``). Here the full RGB triple is matched instead: identical for every palette
color (their keys are distinct) and for unknown colors (-> 0), except that the original's key
also aliases some unknown colors onto classes (e.g. (189, 0, 0) has the key of ship
(0, 0, 63)); that aliasing is a defect we do not copy.

CLI (``python -m rsport.data.labels --help``):

* ``to-ids``: color (or gray-value) masks -> single-channel class-id PNGs, from the iSAID palette,
  a palette JSON file or an explicit ``--values`` list; ``_instance_color_RGB`` is dropped from
  the output names so they match the image ids.
* ``weights``: class weights ``max(count) / count_c`` from pixel frequencies of id masks, as JSON.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rsport.data.errors import DataError
from rsport.data.images import IMAGE_SUFFIXES, encode_png, read_array

IGNORE_INDEX = 255

ISAID_CLASSES = ("background", "ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court",
                 "ground_Track_Field", "bridge", "large_Vehicle", "small_Vehicle", "helicopter", "swimming_pool",
                 "roundabout", "soccer_ball_field", "plane", "harbor")
ISAID_PALETTE = ((0, 0, 0), (0, 0, 63), (0, 191, 127), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255),
                 (0, 127, 63), (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 63, 63), (0, 127, 191),
                 (0, 127, 255), (0, 100, 155))
ISAID_MASK_SUFFIX = "_instance_color_RGB"

# DFC2020 land-cover classes, 0-based ids 0..9 (lukasliebel/dfc2020_baseline code/datasets.py).
DFC_CLASSES = ("forest", "shrubland", "savanna", "grassland", "wetland", "cropland", "urban_built_up", "snow_ice",
               "barren", "water")
# SEN12MS IGBP value (index) -> 1-based DFC class, 0 = no class (the original DFC2020_CLASSES table).
IGBP_TO_DFC = (0, 1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 6, 8, 9, 10)

UNKNOWN_POLICIES = ("background", "ignore", "error")


@dataclass(frozen=True)
class Palette:
    """A label scheme: ``entries[i]`` is the RGB triple (``kind='rgb'``) or the gray value
    (``kind='value'``) of class ``i``."""
    kind: str
    entries: tuple
    names: tuple = ()

    def __len__(self) -> int:
        return len(self.entries)


ISAID = Palette("rgb", ISAID_PALETTE, ISAID_CLASSES)


def _lookup(keys: np.ndarray, table: np.ndarray, unknown, *, return_unknown: bool):
    """Map ``keys`` through ``table`` (position = class id); unmatched keys get ``unknown`` (an
    id) or raise ``ValueError`` when ``unknown == 'error'``."""
    order = np.argsort(table, kind="stable")
    sorted_table = table[order]
    pos = np.clip(np.searchsorted(sorted_table, keys), 0, len(table) - 1)
    hit = sorted_table[pos] == keys
    n_unknown = int(keys.size - np.count_nonzero(hit))
    if n_unknown and unknown == "error":
        bad = np.unique(keys[~hit])[:5]
        raise ValueError(f"{n_unknown} pixels have values outside the palette (first: {bad.tolist()})")
    fill = 0 if unknown == "error" else int(unknown)
    ids = np.where(hit, order[pos], fill).astype(np.uint8)
    return (ids, n_unknown) if return_unknown else ids


@functools.lru_cache(maxsize=8)
def _color_table(palette: tuple) -> np.ndarray:
    """A 2**24-entry lookup table: packed RGB -> class id, 255 for colors not in ``palette``."""
    table = np.full(1 << 24, 255, np.uint8)
    for cls, (r, g, b) in enumerate(palette):
        table[(r << 16) | (g << 8) | b] = cls
    return table


def colors_to_ids(rgb: np.ndarray, palette: Sequence[Sequence[int]] = ISAID_PALETTE, unknown=0, *,
                  return_unknown: bool = False):
    """Class ids ``[H, W]`` uint8 of a color mask ``[H, W, 3]`` (RGB, uint8).

    Args:
        rgb: the color mask.
        palette: RGB triple per class id (default: iSAID).
        unknown: id for colors not in the palette (default 0 = background, the original iSAID
            behaviour; 255 = ignore), or ``'error'`` to raise ``ValueError``.
        return_unknown: also return the number of unknown pixels.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit RGB color mask [H, W, 3], got shape {rgb.shape} {rgb.dtype}")
    palette = tuple(tuple(int(v) for v in color) for color in palette)
    if len(palette) > 255:
        raise ValueError("at most 255 classes fit in a uint8 id mask with 255 = ignore")
    keys = rgb[..., 0].astype(np.int32) << 16
    keys |= rgb[..., 1].astype(np.int32) << 8
    keys |= rgb[..., 2]
    ids = _color_table(palette)[keys]
    miss = ids == 255
    n_unknown = int(np.count_nonzero(miss))
    if n_unknown:
        if unknown == "error":
            bad = [tuple(int(v) for v in c) for c in np.unique(rgb[miss], axis=0)[:5]]
            raise ValueError(f"{n_unknown} pixels have colors outside the palette (first: {bad})")
        if int(unknown) != 255:
            ids[miss] = int(unknown)
    return (ids, n_unknown) if return_unknown else ids


def values_to_ids(gray: np.ndarray, values: Sequence[int], unknown="error", *, return_unknown: bool = False):
    """Class ids ``[H, W]`` uint8 of a single-channel mask whose class ``i`` is stored as
    ``values[i]`` (an explicit value list); ``unknown`` as in ``colors_to_ids``."""
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"expected a single-channel mask [H, W], got shape {gray.shape}")
    return _lookup(gray.astype(np.int64), np.asarray(values, np.int64), unknown, return_unknown=return_unknown)


def check_ids(ids: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise ``ValueError`` if ``ids`` holds a value that is neither a class (0..K-1) nor ignore."""
    ids = np.asarray(ids)
    if ids.dtype == np.uint8:   # the common case: a histogram is faster than np.unique
        present = np.flatnonzero(np.bincount(ids.ravel(), minlength=256))
    else:
        present = np.unique(ids)
    bad = [int(v) for v in present if not (0 <= v < num_classes or v == ignore_index)]
    if bad:
        raise ValueError(f"label values outside classes 0..{num_classes - 1} and not {ignore_index}: {bad[:8]}")


def dfc_to_ids(lc: np.ndarray, scheme: str = "dfc") -> np.ndarray:
    """DFC2020 class ids ``[H, W]`` int64 (0..9, 255 = ignore) of a land-cover band.

    ``scheme='dfc'`` (DFC2020 ``dfc_*`` tiles, the sample data): stored values 1..10 are the
    1-based DFC classes -> 0..9; 0 (no data) -> 255. ``scheme='igbp'`` (SEN12MS ``lc_*`` band 1):
    IGBP values 0..17 go through the original ``DFC2020_CLASSES`` table first. Exactly the
    original ``load_lc`` (``lc -= 1; lc[lc == -1] = 255``) without ``no_savanna`` (the model has
    all 10 classes); a stored 255 is kept as ignore. Any other value raises ``ValueError``
    (the original would emit garbage ids or an IndexError).
    """
    lc = np.asarray(lc).astype(np.int64)
    if scheme == "igbp":
        table = np.asarray(IGBP_TO_DFC + (0,) * (256 - len(IGBP_TO_DFC)), np.int64)
        table[255] = 256
        valid = (lc >= 0) & ((lc < len(IGBP_TO_DFC)) | (lc == 255))
        limit = f"IGBP values 0..{len(IGBP_TO_DFC) - 1}"
    elif scheme == "dfc":
        table = np.arange(256, dtype=np.int64)
        table[255] = 256
        valid = (lc >= 0) & ((lc <= len(DFC_CLASSES)) | (lc == 255))
        limit = f"DFC values 0..{len(DFC_CLASSES)}"
    else:
        raise ValueError(f"unknown label scheme {scheme!r}; known: dfc, igbp")
    if not valid.all():
        bad = np.unique(lc[~valid])[:8].tolist()
        raise ValueError(f"land-cover values outside {limit} and not 255: {bad}")
    ids = table[lc] - 1
    ids[(ids == -1) | (ids == 255)] = IGNORE_INDEX
    return ids


def class_weights(counts: Sequence[int]) -> list[float]:
    """``max(count) / count_c`` per class; a class with no pixels gets weight 0.0 (it never
    occurs in the loss on this data, so any weight is unobservable; 0 says so explicitly)."""
    counts = np.asarray(counts, np.float64)
    if counts.sum() <= 0:
        raise ValueError("no labelled pixels: every class count is zero")
    top = counts.max()
    return [float(top / c) if c > 0 else 0.0 for c in counts]


def load_palette(name_or_path: str) -> Palette:
    """``isaid`` or a JSON file: ``{"classes": [...], "colors": [[r, g, b], ...]}``, an ordered
    ``{"name": [r, g, b], ...}`` mapping, a list of ``[r, g, b]``, or a gray-value list
    (``{"values": [...]}`` / ``[v0, v1, ...]``); the position is the class id."""
    if name_or_path == "isaid":
        return ISAID
    path = Path(name_or_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: palette file not found (or use --palette isaid)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read palette JSON ({exc})") from None
    names: tuple = ()
    if isinstance(data, dict) and "colors" in data:
        entries, names = data["colors"], tuple(data.get("classes", ()))
    elif isinstance(data, dict) and "values" in data:
        entries, names = data["values"], tuple(data.get("classes", ()))
    elif isinstance(data, dict):
        names, entries = tuple(data), list(data.values())
    else:
        entries = data
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: palette must list at least one color or value")
    if all(isinstance(e, int) and 0 <= e < 65536 for e in entries):
        kind = "value"
    elif all(isinstance(e, list) and len(e) == 3 and all(isinstance(v, int) and 0 <= v < 256 for v in e)
             for e in entries):
        kind, entries = "rgb", [tuple(e) for e in entries]
    else:
        raise DataError(f"{path}: palette entries must all be [r, g, b] triples (0..255) or all integers")
    if len(set(entries)) != len(entries):
        raise DataError(f"{path}: palette has duplicate entries")
    if names and len(names) != len(entries):
        raise DataError(f"{path}: {len(names)} class names for {len(entries)} palette entries")
    if len(entries) > 255:
        raise DataError(f"{path}: at most 255 classes fit in a uint8 id mask with 255 = ignore")
    return Palette(kind, tuple(entries), names)


def mask_to_ids(path: Path, palette: Palette, unknown) -> tuple[np.ndarray, int]:
    """Read one mask file and map it through ``palette``; ``DataError`` names the file."""
    array = read_array(path, expand_palette=palette.kind == "rgb")
    try:
        if palette.kind == "rgb":
            if array.ndim != 3:
                raise ValueError("expected an RGB color mask, got a single-channel image")
            return colors_to_ids(array[:, :, :3], palette.entries, unknown, return_unknown=True)
        if array.ndim != 2:
            raise ValueError("expected a single-channel mask for a value palette, got a color image")
        return values_to_ids(array, palette.entries, unknown, return_unknown=True)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def read_ids(path: Path, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A single-channel class-id mask, checked against ``num_classes``; ``DataError`` names the file."""
    array = read_array(path)
    if array.ndim != 2:
        raise DataError(f"{path}: expected a single-channel class-id mask, got {array.shape[2]} channels "
                        f"(for color masks pass --palette isaid or a palette JSON)")
    try:
        check_ids(array, num_classes, ignore_index)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    return array


def mask_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no mask images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _first_missing(path: Path) -> Path | None:
    """The outermost ancestor of ``path`` (or itself) that does not exist yet."""
    missing = None
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return missing
        missing = candidate
    return missing


def _remove_empty_tree(top: Path | None) -> None:
    """Remove folders created by a failed run (only if they hold no files)."""
    if top is None or not top.is_dir():
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(top.iterdir()):
        top.rmdir()


def _to_ids(args) -> dict:
    from rsport.io import Staged
    if args.values is not None:
        try:
            values = [int(v) for v in args.values.split(",")]
        except ValueError:
            raise DataError(f"--values must be comma-separated integers, got {args.values!r}") from None
        if len(set(values)) != len(values):
            raise DataError(f"--values has duplicates: {args.values}")
        palette = Palette("value", tuple(values))
    else:
        palette = load_palette(args.palette)
    unknown = args.unknown or ("background" if palette is ISAID else "error")
    fill = {"background": 0, "ignore": IGNORE_INDEX, "error": "error"}[unknown]
    files = mask_files(Path(args.input))
    out = Path(args.out)
    counts = np.zeros(256, np.int64)
    n_unknown = 0
    new_dir = _first_missing(out)
    try:
        with Staged() as staged:
            written = {}
            for path in files:
                ids, unk = mask_to_ids(path, palette, fill)
                name = path.stem.replace(ISAID_MASK_SUFFIX, "") + ".png"
                if name in written:
                    raise DataError(f"{path}: output {out / name} would also be written from {written[name]}")
                written[name] = path
                staged.path(out / name).write_bytes(encode_png(ids))
                counts += np.bincount(ids.ravel(), minlength=256)
                n_unknown += unk
                logging.getLogger(__name__).info("%s -> %s (%d unknown pixels)", path, out / name, unk)
            staged.commit()
    except BaseException:
        _remove_empty_tree(new_dir)
        raise
    k = len(palette)
    return {"files": len(files), "out": str(out), "palette": args.palette if args.values is None else "values",
            "num_classes": k, "unknown_policy": unknown, "unknown_pixels": int(n_unknown),
            "pixels_per_class": counts[:k].tolist(), "ignored_pixels": int(counts[IGNORE_INDEX])}


def _weights(args) -> dict:
    from rsport.io import Staged
    if not 1 <= args.num_classes <= 255:
        raise DataError(f"--num-classes must be in 1..255, got {args.num_classes}")
    palette = load_palette(args.palette) if args.palette else None
    counts = np.zeros(args.num_classes, np.int64)
    files = mask_files(Path(args.input))
    for path in files:
        if palette is not None:
            ids, _ = mask_to_ids(path, palette, 0 if palette is ISAID else "error")
            try:
                check_ids(ids, args.num_classes, args.ignore_index)
            except ValueError as exc:
                raise DataError(f"{path}: {exc}") from None
        else:
            ids = read_ids(path, args.num_classes, args.ignore_index)
        flat = ids.ravel()
        counts += np.bincount(flat[flat != args.ignore_index].astype(np.int64), minlength=args.num_classes)
    try:
        weights = class_weights(counts)
    except ValueError as exc:
        raise DataError(f"{args.input}: {exc}") from None
    total = counts.sum()
    result = {"num_classes": args.num_classes, "ignore_index": args.ignore_index, "files": len(files),
              "counts": counts.tolist(), "frequency": (counts / total).tolist(), "weights": weights,
              "missing_classes": np.flatnonzero(counts == 0).tolist(),
              "rule": "weight_c = max(count) / count_c; classes with no pixels get 0.0"}
    with Staged() as staged:
        staged.write_json(args.out, result)
        staged.commit()
    return result


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rsport.data.labels",
        description="Label tool: convert color (or gray-value) masks to single-channel class-id PNGs, and "
                    "compute class weights from pixel frequencies. Bad input (missing folder, unreadable "
                    "mask, value outside the palette/classes) stops with one 'error:' line naming the file "
                    "and writes nothing.",
        epilog="examples:\n"
               "  python -m rsport.data.labels to-ids --palette isaid --in output/data/sample/isaid/train/masks "
               "--out output/ids/train\n"
               "  python -m rsport.data.labels to-ids --values 0,38,75,113 --in masks/ --out ids/\n"
               "  python -m rsport.data.labels weights --in output/ids/train --num-classes 16 "
               "--out output/ids/weights.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    to_ids = sub.add_parser(
        "to-ids", help="color / gray-value masks -> class-id PNGs (255 = ignore)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Writes OUT/<name>.png (uint8, one channel) for every mask in IN; the iSAID suffix "
                    "'_instance_color_RGB' is dropped from the name. Prints a JSON summary (files, pixels "
                    "per class, unknown pixels).")
    source = to_ids.add_mutually_exclusive_group()
    source.add_argument("--palette", default="isaid",
                        help="'isaid' or a JSON file: {\"classes\": [...], \"colors\": [[r,g,b], ...]}, "
                             "{\"name\": [r,g,b], ...}, [[r,g,b], ...] or {\"values\": [...]}")
    source.add_argument("--values", default=None,
                        help="explicit gray-value list, class i stored as the i-th value, e.g. 0,38,75")
    to_ids.add_argument("--in", dest="input", required=True, help="folder of masks (png/jpg/tif/bmp)")
    to_ids.add_argument("--out", required=True, help="output folder")
    to_ids.add_argument("--unknown", choices=UNKNOWN_POLICIES, default=None,
                        help="colors/values not in the palette: 'background' -> 0 (the original iSAID "
                             "behaviour, default for --palette isaid), 'ignore' -> 255, 'error' (default "
                             "for other palettes)")
    weights = sub.add_parser(
        "weights", help="class weights max(count)/count from pixel frequencies, as JSON",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Counts pixels per class over every mask in IN (255 = ignore, not counted) and writes "
                    "counts, frequencies and weights max(count)/count_c to OUT; a class with no pixels gets "
                    "weight 0.0 and is listed under missing_classes. A value that is neither a class nor "
                    "the ignore index is an error.")
    weights.add_argument("--in", dest="input", required=True, help="folder of class-id masks")
    weights.add_argument("--num-classes", "--num_classes", type=int, required=True, help="number of classes K")
    weights.add_argument("--out", required=True, help="output JSON file")
    weights.add_argument("--ignore-index", "--ignore_index", type=int, default=IGNORE_INDEX,
                         help="label value that is not counted")
    weights.add_argument("--palette", default=None,
                         help="read color masks through this palette ('isaid' or JSON) instead of id masks")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        result = _to_ids(args) if args.command == "to-ids" else _weights(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
