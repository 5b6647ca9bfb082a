"""Datasets over the two layouts: training patches with the original augmentations, whole
validation scenes. numpy only; both frameworks receive identical arrays.

Training (Z-Zheng/FarSeg ``data/patch_base.py`` + ``data/isaid.py`` @ 90fc047d, SimpleCV
``_impl/preprocess/segm.py``): every training scene is cut into the ``rsport.sliding.windows``
grid (``patch_config``: window 896, stride 512; a scene smaller than the window gives one
clipped patch); the sample list is every patch of every scene (sorted by scene name), and the
Loader shuffles it. Per sample, in the original order: labels decoded, horizontal flip (p=0.5),
vertical flip (p=0.5), counter-clockwise rot90 by k in {0, 1, 2, 3}, padding bottom/right to the
crop (image 0, label 255), then ``(x - mean) / std`` on the 0..255 scale (the padding too, as the
original pads before normalizing). The random draws come from
``numpy.random.default_rng([seed, index, epoch])``, so a sample is a pure function of
(seed, index, epoch). For a crop other than the original 896, the grid stride keeps the
original overlap ratio: ``stride = crop * 4 // 7`` (896 -> 512, 128 -> 73). A non-square crop
only takes an odd k when the rotated patch still fits (the original uses square crops only).

Sentinel-1 scenes use the same patching and augmentations (flips and rot90 are label-safe; no
original SAR training recipe exists, see shared/reference/vit_s16_upernet.md §7).

"raw" images are on the registry's 0..255 scale: RGB values for iSAID, and 255 x the original
S1 scaling for SAR (the vit spec's mean 0 / std 255 turns that back into the original [0, 1]).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsport.data import sar
from rsport.data.errors import DataError
from rsport.data.images import IMAGE_SUFFIXES, image_size, read_array, read_image
from rsport.data.labels import (DFC_CLASSES, IGNORE_INDEX, ISAID_CLASSES, ISAID_MASK_SUFFIX, ISAID_PALETTE,
                                check_ids, colors_to_ids)
from rsport.sliding import windows

logger = logging.getLogger(__name__)

DATASETS = ("isaid", "sen12ms_s1")
SPLITS = ("train", "val")
LAYOUTS = {
    "isaid": "<split>/images/<id>.png + <split>/masks/<id>_instance_color_RGB.png (or <id>.png class ids)",
    "sen12ms_s1": "<split>/s1/<id>.tif + <split>/lc/<id>.tif (or SEN12MS/DFC2020 names *_s1_* -> *_lc_*/*_dfc_*)",
}
CLASS_NAMES = {"isaid": ISAID_CLASSES, "sen12ms_s1": DFC_CLASSES}


@dataclass(frozen=True)
class Scene:
    name: str
    image: Path
    label: Path
    height: int
    width: int


def default_stride(crop: tuple[int, int]) -> tuple[int, int]:
    """The original overlap ratio 512 / 896 = 4 / 7 applied to ``crop``."""
    return tuple(max(1, c * 4 // 7) for c in crop)


def _files(folder: Path, suffixes) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(suffixes)})")
    return files


def scan_isaid(split_dir: Path) -> list[Scene]:
    """Pair ``images/<id>.*`` with ``masks/<id>_instance_color_RGB.png`` (or ``masks/<id>.png``,
    a class-id mask); sizes are checked from the file headers."""
    masks = split_dir / "masks"
    if not masks.is_dir():
        raise DataError(f"{masks}: no such folder (layout: {LAYOUTS['isaid']})")
    scenes = []
    for image in _files(split_dir / "images", IMAGE_SUFFIXES):
        label = masks / f"{image.stem}{ISAID_MASK_SUFFIX}.png"
        if not label.is_file():
            label = masks / f"{image.stem}.png"
        if not label.is_file():
            raise DataError(f"{image}: no mask {masks / (image.stem + ISAID_MASK_SUFFIX + '.png')}")
        size, label_size = image_size(image), image_size(label)
        if size != label_size:
            raise DataError(f"{label}: mask size {label_size[0]}x{label_size[1]} differs from image {image} "
                            f"({size[0]}x{size[1]})")
        scenes.append(Scene(image.stem, image, label, *size))
    return scenes


def _lc_path(lc_dir: Path, s1: Path) -> Path:
    for name in (s1.name, s1.name.replace("_s1_", "_lc_"), s1.name.replace("_s1_", "_dfc_")):
        if (lc_dir / name).is_file():
            return lc_dir / name
    raise DataError(f"{s1}: no label {lc_dir / s1.name}")


def scan_sen12ms(split_dir: Path) -> list[Scene]:
    """Pair ``s1/<id>.tif`` with ``lc/<id>.tif``; checks CRS, band count, size and grid."""
    lc_dir = split_dir / "lc"
    if not lc_dir.is_dir():
        raise DataError(f"{lc_dir}: no such folder (layout: {LAYOUTS['sen12ms_s1']})")
    scenes = []
    for s1 in _files(split_dir / "s1", sar.GEOTIFF_SUFFIXES):
        lc = _lc_path(lc_dir, s1)
        a, b = sar.geo_info(s1), sar.geo_info(lc)
        if a.count != len(sar.S1_BANDS):
            raise DataError(f"{s1}: expected {len(sar.S1_BANDS)} bands ({', '.join(sar.S1_BANDS)}), got {a.count}")
        if (a.height, a.width) != (b.height, b.width):
            raise DataError(f"{lc}: label size {b.height}x{b.width} differs from {s1} ({a.height}x{a.width})")
        if a.crs != b.crs or not np.allclose(a.transform, b.transform, rtol=0, atol=1e-6):
            raise DataError(f"{lc}: label grid (CRS / transform) differs from {s1}")
        scenes.append(Scene(s1.stem, s1, lc, a.height, a.width))
    return scenes


def split_dir(root: str | Path, dataset: str, split: str) -> Path:
    """``root/split`` or ``root/<dataset>/split`` (a sample-data style root), else ``DataError``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    for candidate in (root / split, root / dataset / split):
        if candidate.is_dir():
            return candidate
    raise DataError(f"{root / split}: no such folder (layout: {LAYOUTS[dataset]})")


def read_raw(path: str | Path, dataset: str, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """One image (or ``window = (y0, x0, y1, x1)`` of it) ``[C, h, w]`` float32 on the 0..255 scale:
    RGB for ``isaid`` (PNG/JPEG are decoded whole, then cropped), 255 x the S1 scaling for
    ``sen12ms_s1`` (a windowed GeoTIFF read)."""
    if dataset == "sen12ms_s1":
        return sar.read_s1(path, window) * np.float32(255)
    if dataset != "isaid":
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    image = read_image(path)
    if window is not None:
        y0, x0, y1, x1 = window
        image = image[y0:y1, x0:x1]
    return image.transpose(2, 0, 1).astype(np.float32)


class SegDataset:
    """Training patches (``split='train'``) or whole scenes (``split='val'``) of one layout.

    ``ds[i]`` / ``ds.get(i, epoch)`` -> ``(image float32 [C, H, W] normalized, label int64 [H, W])``;
    ``ds.scene(i)`` -> ``(raw float32 [C, H, W], label int64 [H, W], name)`` of scene i.
    """

    def __init__(self, scenes: list[Scene], *, dataset: str, split: str, num_classes: int, mean, std,
                 crop: tuple[int, int], stride: tuple[int, int], seed: int = 0, label_scheme: str = "dfc",
                 ignore_index: int = IGNORE_INDEX, cache_scenes: int = 4):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        if dataset == "isaid" and num_classes != len(ISAID_PALETTE):
            raise ValueError(f"the iSAID palette has {len(ISAID_PALETTE)} classes, the model {num_classes}")
        self.scenes = scenes
        self.dataset, self.split, self.num_classes = dataset, split, num_classes
        self.classes = CLASS_NAMES[dataset]
        self.crop, self.stride, self.seed = tuple(crop), tuple(stride), int(seed)
        self.label_scheme, self.ignore_index = label_scheme, ignore_index
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)
        self.items = [(s, box) for s, scene in enumerate(scenes)
                      for box in windows(scene.height, scene.width, self.crop, self.stride)] if split == "train" else []
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_scenes
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items) if self.split == "train" else len(self.scenes)

    def __getitem__(self, index: int):
        return self.get(index)

    def describe(self, index: int) -> str:
        """The files behind sample ``index`` (for error messages)."""
        scene = self.scenes[self.items[index][0] if self.split == "train" else index]
        return f"{scene.image} / {scene.label}"

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """``(raw - mean) / std`` in float32 over the channel axis of ``[C, H, W]`` or ``[N, C, H, W]``."""
        out = np.array(raw, np.float32)
        out -= self.mean
        out /= self.std
        return out

    def scene(self, index: int):
        image, label = self._load(index)
        return image.astype(np.float32), self._ids(label, index).astype(np.int64), self.scenes[index].name

    def get(self, index: int, epoch: int = 0):
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        if self.split == "val":
            raw, label, _ = self.scene(index)
            return self.normalize(raw), label
        s, (y0, x0, y1, x1) = self.items[index]
        image, label = self._load(s)
        image, label = image[:, y0:y1, x0:x1], self._ids(label[y0:y1, x0:x1], s)
        rng = np.random.default_rng([self.seed, index, epoch])
        if rng.random() < 0.5:
            image, label = image[:, :, ::-1], label[:, ::-1]
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[::-1]
        k = int(rng.integers(4))
        ch, cw = self.crop
        if k % 2 and (image.shape[2] > ch or image.shape[1] > cw):
            k -= 1
        image, label = np.rot90(image, k, axes=(1, 2)), np.rot90(label, k)
        h, w = label.shape
        x = np.zeros((image.shape[0], ch, cw), np.float32)
        x[:, :h, :w] = image
        y = np.full((ch, cw), self.ignore_index, np.int64)
        y[:h, :w] = label
        x -= self.mean
        x /= self.std
        return x, y

    def _ids(self, label: np.ndarray, s: int) -> np.ndarray:
        """Class ids of (a crop of) the stored label of scene ``s``: iSAID color maps are decoded
        per crop, as the original does after cropping (a whole scene can be large)."""
        if label.ndim == 3:
            return colors_to_ids(label, ISAID_PALETTE, unknown=0)
        return label

    def _load(self, s: int):
        """Scene ``s`` as stored, cached: (image [C, H, W] uint8 or float32, label [H, W] uint8
        class ids, or [H, W, 3] an iSAID color map)."""
        with self._lock:
            if s in self._cache:
                self._cache.move_to_end(s)
                return self._cache[s]
        image, label = self._read(s)
        with self._lock:
            self._cache[s] = (image, label)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return image, label

    def _read(self, s: int):
        """Scene ``s`` from disk, checked: the image decodes, the label decodes and holds only
        classes and ignore, and both have the scanned size."""
        scene = self.scenes[s]
        if self.dataset == "isaid":
            image = read_image(scene.image).transpose(2, 0, 1)
            label = self._isaid_label(scene.label)
        else:
            image = sar.read_s1(scene.image) * np.float32(255)
            label = sar.read_lc(scene.label, self.label_scheme).astype(np.uint8)
        if label.shape[:2] != image.shape[1:] or label.shape[:2] != (scene.height, scene.width):
            raise DataError(f"{scene.label}: label {label.shape[0]}x{label.shape[1]} does not match "
                            f"{scene.image} ({image.shape[1]}x{image.shape[2]})")
        return image, label

    def scene_of(self, index: int) -> int:
        """The scene that sample ``index`` comes from."""
        return self.items[index][0] if self.split == "train" else index

    def check(self, scenes=None, workers: int = 1) -> int:
        """Read the given scenes (default: all) the way training does, without caching them, and
        raise DataError naming the first bad file in scene order: an image or label that does
        not decode, a label value that is neither a class nor ignore, a size mismatch. Returns
        the number of scenes checked. ``workers``: reader threads (decoding releases the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        scenes = list(range(len(self.scenes)) if scenes is None else scenes)

        def one(s: int) -> None:
            try:
                self._read(s)
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - a decoder can raise anything: name the files
                raise DataError(f"{self.scenes[s].image} / {self.scenes[s].label}: {type(exc).__name__}: {exc}") from exc

        if workers > 1 and len(scenes) > 1:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="rsport-check")
            try:
                for _ in pool.map(one, scenes):  # results in order: the first bad scene's error
                    pass
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for s in scenes:
                one(s)
        return len(scenes)

    def _isaid_label(self, path: Path) -> np.ndarray:
        colored = path.stem.endswith(ISAID_MASK_SUFFIX)
        array = read_array(path, expand_palette=colored)   # the original: Image.open(...).convert('RGB')
        if colored:
            if array.ndim != 3 or array.dtype != np.uint8:
                raise DataError(f"{path}: expected an 8-bit RGB color map (iSAID palette)")
            return np.ascontiguousarray(array[:, :, :3])
        if array.ndim != 2:
            raise DataError(f"{path}: expected a single-channel class-id mask")
        try:
            check_ids(array, self.num_classes, self.ignore_index)
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from None
        return array.astype(np.uint8)


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)


def build_dataset(spec, root=None, split: str = "train", *, crop=None, seed: int = 0, stride=None,
                  label_scheme: str = "dfc", cache_scenes: int = 4) -> SegDataset:
    """The dataset of ``spec.dataset`` under ``root`` (default: the embedded sample data).

    Args:
        spec: a ``ModelSpec`` (dataset, num_classes, mean, std, input_size, ignore_index).
        root: folder holding ``train/`` and ``val/`` (or ``<spec.dataset>/train`` ...).
        split: ``train`` (patches + augmentation) or ``val`` (whole scenes).
        crop: training patch ``(h, w)`` or int (default ``spec.input_size``).
        seed: augmentation seed.
        stride: patch grid stride (default ``crop * 4 // 7``: 512 for 896).
        label_scheme: SAR labels, ``dfc`` (1..10, 0 = no data) or ``igbp`` (SEN12MS band 1).
        cache_scenes: decoded scenes kept in memory (patches of one scene share a decode).
    """
    if spec.dataset not in DATASETS:
        raise ValueError(f"{spec.name}: unknown dataset {spec.dataset!r}; known: {', '.join(DATASETS)}")
    if root is None:
        root = default_root(spec)
    folder = split_dir(root, spec.dataset, split)
    crop = tuple(spec.input_size) if crop is None else _pair(crop)
    stride = default_stride(crop) if stride is None else _pair(stride)
    scenes = scan_isaid(folder) if spec.dataset == "isaid" else scan_sen12ms(folder)
    ds = SegDataset(scenes, dataset=spec.dataset, split=split, num_classes=spec.num_classes, mean=spec.mean,
                    std=spec.std, crop=crop, stride=stride, seed=seed, label_scheme=label_scheme,
                    ignore_index=spec.ignore_index, cache_scenes=cache_scenes)
    logger.info("%s %s: %d scenes, %d samples from %s", spec.dataset, split, len(scenes), len(ds), folder)
    return ds


def default_root(spec) -> Path:
    """The embedded sample data of ``spec.dataset`` (generated on first use)."""
    from rsport.data.samples import ensure_samples
    return ensure_samples() / spec.dataset
