"""The embedded sample data: a tiny iSAID-like set and a tiny Sentinel-1 set, generated
deterministically (seeded numpy, no download) into ``output/data/sample``.

* ``isaid/{train,val}``: 6 + 3 RGB scenes of a few hundred pixels (odd sizes such as 300 x 412)
  over a textured background, with objects of all 15 foreground classes drawn as rotated
  rectangles, ellipses, rings and crosses in class-specific colors and textures (so a model can
  learn them), their color masks in the iSAID palette, and a few pixels of colors outside the
  palette (decoded as background, as the original does).
* ``sen12ms_s1/{train,val}``: 6 + 2 two-band float32 GeoTIFFs (VV, VH in dB; EPSG:32632 with a
  10 m transform) of land-cover regions with class-specific backscatter and multiplicative
  speckle, values beyond [-25, 0] dB and a few NaN pixels; labels are single-band uint8 DFC
  ids 1..10 with 0 = no data in some pixels (same CRS and transform).

The tree is written into a temporary sibling folder and renamed into place, with a
``manifest.json`` (generator version, seed, sha256 of every file); ``ensure_samples`` reuses a
tree whose manifest has the current version.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from rsport.data.errors import DataError
from rsport.data.images import encode_png
from rsport.data.labels import DFC_CLASSES, ISAID_CLASSES, ISAID_MASK_SUFFIX, ISAID_PALETTE

logger = logging.getLogger(__name__)

SAMPLE_ROOT = "output/data/sample"
VERSION = 2
SEED = 2333

ISAID_SIZES = {"train": ((300, 412), (356, 290), (412, 300), (333, 333), (280, 450), (390, 370)),
               "val": ((310, 405), (295, 350), (420, 315))}
S1_SIZES = {"train": ((256, 256), (200, 300), (256, 256), (240, 272), (256, 256), (220, 260)),
            "val": ((256, 256), (230, 290))}
S1_EPSG = 32632
S1_PIXEL = 10.0

# class -> (shape, (length, width) range in px, base RGB, second RGB, texture)
_ISAID_LOOK = {
    "ship": ("ellipse", (12, 20), (4, 7), (232, 232, 236), (180, 180, 190), "solid"),
    "storage_tank": ("ring", (14, 22), (14, 22), (205, 205, 195), (120, 120, 110), "solid"),
    "baseball_diamond": ("diamond", (28, 40), (28, 40), (200, 160, 110), (90, 150, 70), "solid"),
    "tennis_court": ("rect", (34, 44), (18, 24), (40, 140, 80), (245, 245, 245), "stripes"),
    "basketball_court": ("rect", (26, 34), (16, 22), (195, 95, 60), (230, 200, 170), "checker"),
    "ground_Track_Field": ("ring", (70, 95), (40, 55), (175, 60, 50), (70, 160, 70), "solid"),
    "bridge": ("rect", (60, 90), (6, 9), (150, 150, 155), (110, 110, 115), "stripes"),
    "large_Vehicle": ("rect", (18, 24), (7, 9), (60, 90, 175), (220, 220, 230), "stripes"),
    "small_Vehicle": ("rect", (9, 12), (4, 6), (205, 40, 40), (30, 30, 30), "solid"),
    "helicopter": ("cross", (14, 18), (3, 4), (50, 85, 50), (200, 200, 60), "solid"),
    "swimming_pool": ("rect", (18, 28), (10, 14), (40, 175, 225), (200, 240, 255), "dots"),
    "roundabout": ("ring", (30, 42), (30, 42), (120, 120, 125), (60, 140, 60), "solid"),
    "soccer_ball_field": ("rect", (50, 64), (34, 42), (60, 185, 60), (100, 210, 100), "stripes"),
    "plane": ("cross", (24, 34), (5, 7), (238, 238, 242), (150, 150, 160), "solid"),
    "harbor": ("rect", (40, 60), (22, 30), (90, 90, 105), (160, 150, 140), "checker"),
}
_UNKNOWN_COLORS = ((255, 255, 255), (189, 0, 0), (0, 64, 127))   # not in the palette -> background

# DFC class (1-based) -> mean (VV, VH) backscatter in dB: separated by >= 3.5 dB in the (VV, VH)
# plane so that, under 4-look speckle, a 3x3 neighbourhood tells the classes apart (~96%).
_S1_DB = {1: (-6.0, -12.0), 2: (-9.0, -19.0), 3: (-12.5, -15.0), 4: (-15.0, -22.0), 5: (-4.0, -20.0),
          6: (-10.0, -10.5), 7: (0.5, -5.0), 8: (-19.0, -14.0), 9: (-21.0, -25.5), 10: (-25.0, -30.0)}


def _cv2():
    import cv2
    return cv2


def _background(rng, h, w):
    """Smooth terrain (low-frequency noise) plus pixel noise, uint8 RGB."""
    cv2 = _cv2()
    coarse = rng.normal(0, 1, (h // 24 + 2, w // 24 + 2, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    base = np.array([118, 112, 88], np.float32) + 14 * smooth + rng.normal(0, 6, (h, w, 3))
    return base


def _texture(kind, yy, xx, angle):
    c, s = np.cos(angle), np.sin(angle)
    u, v = xx * c + yy * s, -xx * s + yy * c
    if kind == "stripes":
        return (np.floor(u / 3) % 2).astype(bool)
    if kind == "checker":
        return ((np.floor(u / 4) + np.floor(v / 4)) % 2).astype(bool)
    if kind == "dots":
        return (np.floor(u / 3) % 3 == 0) & (np.floor(v / 3) % 3 == 0)
    return np.zeros_like(u, bool)


def _shape_mask(shape, h, w, cy, cx, length, width, angle_deg):
    """Boolean ``[h, w]`` of one object, and its inner part (rings: the center, else empty)."""
    cv2 = _cv2()
    mask = np.zeros((h, w), np.uint8)
    inner = np.zeros((h, w), np.uint8)
    center = (float(cx), float(cy))
    if shape in ("rect", "diamond"):
        angle = angle_deg + (45 if shape == "diamond" else 0)
        box = cv2.boxPoints((center, (float(length), float(width)), float(angle)))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif shape in ("ellipse", "ring"):
        axes = (int(length // 2), int(width // 2))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(angle_deg), 0, 360, 1, -1)
        if shape == "ring":
            cv2.ellipse(inner, (int(cx), int(cy)), (max(1, axes[0] * 3 // 5), max(1, axes[1] * 3 // 5)),
                        float(angle_deg), 0, 360, 1, -1)
    elif shape == "cross":
        for a, size in ((angle_deg, (length, width)), (angle_deg + 90, (length * 0.8, width))):
            box = cv2.boxPoints((center, (float(size[0]), float(size[1])), float(a)))
            cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    return mask.astype(bool), inner.astype(bool)


def isaid_scene(rng: np.random.Generator, h: int, w: int, classes: list[int]):
    """One RGB scene ``[h, w, 3]`` uint8 and its iSAID color mask, objects of ``classes``."""
    image = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    taken = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for cls in classes:
        shape, lengths, widths, color, second, texture = _ISAID_LOOK[ISAID_CLASSES[cls]]
        for _ in range(50):   # rejection sampling: objects do not overlap
            length = rng.uniform(*lengths)
            width = length if shape == "ring" and lengths == widths else rng.uniform(*widths)
            angle = rng.uniform(0, 180)
            margin = int(length // 2 + 2)
            cy, cx = rng.integers(margin, h - margin), rng.integers(margin, w - margin)
            mask, inner = _shape_mask(shape, h, w, cy, cx, length, width, angle)
            if not (mask & taken).any():
                break
        else:
            continue   # no free place left for this object
        pattern = _texture(texture, yy[mask], xx[mask], np.deg2rad(angle))
        pixels = np.where(pattern[:, None], np.array(second, np.float32), np.array(color, np.float32))
        image[mask] = pixels + rng.normal(0, 5, pixels.shape)
        image[inner] = np.array(second, np.float32) + rng.normal(0, 5, (int(inner.sum()), 3))
        label[mask] = cls
        taken |= mask
    color_mask = np.asarray(ISAID_PALETTE, np.uint8)[label]
    for color in _UNKNOWN_COLORS:   # a few off-palette pixels on background
        for _ in range(5):
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            if not taken[y:y + 3, x:x + 3].any():
                color_mask[y:y + 3, x:x + 3] = color
                break
    return np.clip(np.round(image), 0, 255).astype(np.uint8), color_mask


def s1_scene(rng: np.random.Generator, h: int, w: int, classes: list[int]):
    """Backscatter ``[2, h, w]`` float32 dB and DFC labels ``[h, w]`` uint8 (1..10, 0 = no data)."""
    n = len(classes)
    seeds = np.stack([rng.uniform(0, h, n), rng.uniform(0, w, n)], 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Voronoi regions with wobbly borders
    wob_y = 6 * np.sin(xx / 17.0 + rng.uniform(0, 6))
    wob_x = 6 * np.sin(yy / 13.0 + rng.uniform(0, 6))
    dist = (yy[None] + wob_y - seeds[:, 0, None, None]) ** 2 + (xx[None] + wob_x - seeds[:, 1, None, None]) ** 2
    labels = np.asarray(classes, np.uint8)[dist.argmin(0)]
    mean_db = np.asarray([_S1_DB[c] for c in range(1, 11)], np.float32)[labels.astype(np.int64) - 1]
    looks = 4.0
    speckle = rng.gamma(looks, 1 / looks, (2, h, w)).astype(np.float32)
    db = mean_db.transpose(2, 0, 1) + 10 * np.log10(speckle)
    db[:, labels == 6] += 1.5 * np.sign(np.sin(xx[labels == 6] / 3.0))   # cropland rows
    # no-data: a border strip and one blob; NaN backscatter in a few pixels
    labels[: int(rng.integers(3, 8)), :] = 0
    cy, cx = rng.integers(20, h - 20), rng.integers(20, w - 20)
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 0
    ny, nx = rng.integers(0, h - 4), rng.integers(0, w - 10)
    db[:, ny:ny + 2, nx:nx + 10] = np.nan
    return db.astype(np.float32), labels


def _write_geotiff(path: Path, data: np.ndarray, transform, nodata=None, descriptions=()):
    import rasterio
    from rasterio.crs import CRS
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                   dtype=str(data.dtype), crs=CRS.from_epsg(S1_EPSG), transform=transform, compress="deflate")
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions, 1):
            dst.set_band_description(i, text)


def generate(out: Path) -> dict:
    """Write the whole sample tree into ``out`` (which must not exist); returns the manifest."""
    from affine import Affine   # rasterio's own dependency
    out.mkdir(parents=True)
    foreground = list(range(1, len(ISAID_CLASSES)))
    for split_no, split in enumerate(("train", "val")):
        (out / "isaid" / split / "images").mkdir(parents=True)
        (out / "isaid" / split / "masks").mkdir(parents=True)
        for i, (h, w) in enumerate(ISAID_SIZES[split]):
            rng = np.random.default_rng([SEED, 0, split_no, i])
            # every foreground class in every scene, plus extra small objects, in a shuffled order
            classes = foreground + [1, 8, 9, 9, 11]
            classes = [classes[j] for j in rng.permutation(len(classes))]
            image, mask = isaid_scene(rng, h, w, classes)
            name = f"P{split_no}{i:03d}"
            (out / "isaid" / split / "images" / f"{name}.png").write_bytes(encode_png(image))
            (out / "isaid" / split / "masks" / f"{name}{ISAID_MASK_SUFFIX}.png").write_bytes(encode_png(mask))
        (out / "sen12ms_s1" / split / "s1").mkdir(parents=True)
        (out / "sen12ms_s1" / split / "lc").mkdir(parents=True)
        for i, (h, w) in enumerate(S1_SIZES[split]):
            rng = np.random.default_rng([SEED, 1, split_no, i])
            # every class at least once per scene, plus a few repeats
            classes = list(range(1, len(DFC_CLASSES) + 1)) + list(rng.integers(1, len(DFC_CLASSES) + 1, 4))
            db, labels = s1_scene(rng, h, w, classes)
            # north-up 10 m grid: x = 400000 + 10 col, y = 5500000 - 10 row (UTM 32N metres)
            transform = Affine(S1_PIXEL, 0.0, 400000.0 + 5000 * (split_no * 10 + i), 0.0, -S1_PIXEL, 5500000.0)
            name = f"ROI{split_no}_p{i:03d}"
            _write_geotiff(out / "sen12ms_s1" / split / "s1" / f"{name}.tif", db, transform,
                           descriptions=("VV", "VH"))
            _write_geotiff(out / "sen12ms_s1" / split / "lc" / f"{name}.tif", labels[None], transform, nodata=0,
                           descriptions=("DFC2020 class (1..10, 0 = no data)",))
    from rsport.io import sha256
    files = {p.relative_to(out).as_posix(): sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {"generator": "rsport.data.samples", "version": VERSION, "seed": SEED,
                "datasets": {"isaid": {"classes": list(ISAID_CLASSES)}, "sen12ms_s1": {"classes": list(DFC_CLASSES),
                             "crs": f"EPSG:{S1_EPSG}", "labels": "DFC 1..10, 0 = no data"}},
                "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _current(root: Path) -> bool:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("version") == VERSION and all((root / f).is_file() for f in manifest.get("files", ()))


def ensure_samples(root: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """The sample tree at ``root`` (default ``SAMPLE_ROOT``, relative to the working directory),
    generated if missing, outdated or ``force``; atomic and safe to call from several processes."""
    root = Path(SAMPLE_ROOT if root is None else root).absolute()
    if not force and _current(root):
        return root
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        start = time.perf_counter()
        generate(tmp)
        logger.info("generated sample data in %.1f s", time.perf_counter() - start)
        if root.exists():
            if not force and _current(root):   # another process finished first
                return root
            trash = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(root, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _current(root):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rsport.data.samples",
        description="Generate the embedded sample data deterministically (no download): a tiny iSAID-like "
                    "set (RGB PNG scenes + iSAID color masks) and a tiny Sentinel-1 set (VV/VH dB GeoTIFFs + "
                    "DFC2020 labels, EPSG:32632). An up-to-date tree is left alone unless --force.",
        epilog="examples:\n  python -m rsport.data.samples\n  python -m rsport.data.samples --out /tmp/sample --force",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=SAMPLE_ROOT, help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the tree is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    fresh = args.force or not _current(Path(args.out).absolute())
    try:
        root = ensure_samples(args.out, force=args.force)
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = json.loads((root / "manifest.json").read_text())
    print(json.dumps({"root": str(root), "generated": fresh, "version": manifest["version"],
                      "files": len(manifest["files"])}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
