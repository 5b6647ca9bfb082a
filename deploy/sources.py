"""Scene inputs and outputs of deploy/infer.py: windowed readers and writers (numpy, rasterio).

Inputs:
* GeoTIFF (``.tif``/``.tiff`` with a CRS): read window by window through rasterio; the outputs
  carry its CRS and transform.
* PNG / JPEG / BMP and TIFF without a CRS: decoded once as stored (uint8, no float copy of the
  scene), windows are sliced from it; outputs are plain PNG / TIFF.

Readers return windows already in the model's input space: ``(reader(raw) - mean) / std`` in
float32, where the reader is ``rgb8`` (8-bit RGB, 0..255) or ``s1_db`` (VV, VH in dB: the
original S1 scaling x 255, see rsport.data.sar). A wrong channel count or data type is a
``DeployError`` naming the file, raised before any pixel is predicted.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.config import DeployConfig, DeployError

RASTER_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LIST_SUFFIXES = (".txt", ".lst")


def _rasterio():
    import rasterio

    return rasterio


def _read_list(path: Path) -> list[Path]:
    """The scenes named in a list file: one path per line, relative to the list's folder; blank
    lines and lines starting with # are skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DeployError(f"{path}: cannot read the list of scenes ({err})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise DeployError(f"{path}: the list names no scene")
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]


def list_inputs(paths) -> list[Path]:
    """Files as given, folders expanded to their images (sorted), list files (``.txt``) to the
    scenes they name; DeployError if none or missing."""
    found = []
    expanded = []
    for path in map(Path, paths):
        expanded += _read_list(path) if path.is_file() and path.suffix.lower() in LIST_SUFFIXES else [path]
    for path in expanded:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES + IMAGE_SUFFIXES)
            if not files:
                raise DeployError(f"{path}: folder holds no PNG/JPEG/BMP/TIFF images")
            found += files
        elif path.is_file():
            if path.suffix.lower() not in RASTER_SUFFIXES + IMAGE_SUFFIXES:
                raise DeployError(f"{path}: unsupported image type {path.suffix or '(none)'}; "
                                  f"use PNG, JPEG, BMP, TIFF or GeoTIFF")
            found.append(path)
        else:
            raise DeployError(f"{path}: no such file or folder")
    stems = [p.stem for p in found]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise DeployError(f"two inputs share the name {dupes[0]!r}: their outputs would collide")
    return found


@dataclass
class Scene:
    path: Path
    height: int
    width: int
    channels: int
    dtype: str
    crs: object = None  # rasterio CRS of a GeoTIFF, else None
    transform: object = None
    _dataset: object = None
    _array: np.ndarray | None = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None
        self._array = None


def open_scene(path: Path, cfg: DeployConfig) -> Scene:
    """Open and check one input against the model's input contract (header only for rasters)."""
    if path.suffix.lower() in RASTER_SUFFIXES:
        rasterio = _rasterio()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise DeployError(f"{path}: cannot read as TIFF/GeoTIFF ({str(err).splitlines()[0]})") from None
        scene = Scene(path, ds.height, ds.width, ds.count, ds.dtypes[0], ds.crs, ds.transform, _dataset=ds)
    else:
        from rsport.data import DataError
        from rsport.data.images import read_array

        try:
            array = read_array(path)
        except DataError as err:
            raise DeployError(str(err)) from None
        if array.ndim == 2:
            array = array[:, :, None]
        if array.shape[2] == 4 and cfg.channels == 3:
            array = array[:, :, :3]  # RGBA: alpha dropped, as the original (PIL convert('RGB'))
        scene = Scene(path, array.shape[0], array.shape[1], array.shape[2], str(array.dtype), _array=array)
    try:
        _check(scene, cfg)
    except DeployError:
        scene.close()
        raise
    return scene


def _check(scene: Scene, cfg: DeployConfig) -> None:
    if scene.channels != cfg.channels:
        raise DeployError(f"{scene.path}: {scene.channels} channel{'s' * (scene.channels != 1)}, but "
                          f"{cfg.model} takes {cfg.channels} ({cfg.data['input']['reader_note']})")
    if cfg.reader == "rgb8" and scene.dtype != "uint8":
        raise DeployError(f"{scene.path}: {scene.dtype} values, but {cfg.model} takes 8-bit RGB (0..255)")
    if cfg.reader == "s1_db":
        if scene.dtype not in ("float32", "float64"):
            raise DeployError(f"{scene.path}: {scene.dtype} values, but {cfg.model} takes Sentinel-1 "
                              f"backscatter in dB as float")
    if scene.height < 1 or scene.width < 1:
        raise DeployError(f"{scene.path}: empty image")


def make_reader(scene: Scene, cfg: DeployConfig):
    """``read(y0, x0, y1, x1) -> [C, h, w]`` normalized float32."""
    mean, std = cfg.mean, cfg.std

    def to_model(raw: np.ndarray) -> np.ndarray:
        if cfg.reader == "s1_db":
            from rsport.data.sar import s1_to_unit

            raw = s1_to_unit(raw) * np.float32(255)
        out = np.array(raw, np.float32)
        out -= mean
        out /= std
        return out

    if scene._dataset is not None:
        rasterio = _rasterio()

        def read(y0, x0, y1, x1):
            try:
                raw = scene._dataset.read(window=rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0))
            except rasterio.errors.RasterioIOError as err:
                raise DeployError(f"{scene.path}: cannot read pixels ({str(err).splitlines()[0]})") from None
            return to_model(raw)
    else:
        def read(y0, x0, y1, x1):
            return to_model(scene._array[y0:y1, x0:x1].transpose(2, 0, 1))
    return read


class Outputs:
    """The files of one scene, written through a ``Staged`` transaction (renamed into place only
    when the whole run succeeded): class ids (GeoTIFF with the input's CRS and transform, or PNG),
    a color preview PNG (subsampled to at most ``preview_max`` pixels on the long side), and
    optionally the probabilities (float32 GeoTIFF/TIFF, one band per class)."""

    def __init__(self, scene: Scene, cfg: DeployConfig, out_dir: Path, staged, save_prob: bool, preview_max: int):
        self.scene, self.cfg = scene, cfg
        stem = scene.path.stem
        self.files = {}
        self._datasets = []
        self.palette = np.asarray(cfg.palette, np.uint8)
        step = max(1, -(-max(scene.height, scene.width) // preview_max))
        self.step = step
        self.preview = np.zeros((-(-scene.height // step), -(-scene.width // step)), np.uint8)
        self.ids = None
        if scene.georeferenced:
            self.files["classes"] = out_dir / f"{stem}_class.tif"
            self.class_ds = self._open_raster(staged.path(self.files["classes"]), 1, "uint8")
        else:
            self.files["classes"] = out_dir / f"{stem}_class.png"
            self.class_path = staged.path(self.files["classes"])
            self.ids = np.zeros((scene.height, scene.width), np.uint8)
        self.files["preview"] = out_dir / f"{stem}_color.png"
        self.preview_path = staged.path(self.files["preview"])
        self.prob_ds = None
        if save_prob:
            self.files["probabilities"] = out_dir / f"{stem}_prob.tif"
            self.prob_ds = self._open_raster(staged.path(self.files["probabilities"]), cfg.num_classes, "float32")
        self.histogram = np.zeros(cfg.num_classes, np.int64)

    def _open_raster(self, path: Path, count: int, dtype: str):
        rasterio = _rasterio()
        profile = dict(driver="GTiff", height=self.scene.height, width=self.scene.width, count=count, dtype=dtype,
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
        if self.scene.georeferenced:
            profile.update(crs=self.scene.crs, transform=self.scene.transform)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path, "w", **profile)
        self._datasets.append(ds)
        return ds

    def emit(self, y0: int, y1: int, probs: np.ndarray) -> None:
        rasterio = _rasterio()
        ids = probs.argmax(axis=0).astype(np.uint8)
        self.histogram += np.bincount(ids.ravel(), minlength=self.cfg.num_classes)
        window = rasterio.windows.Window(0, y0, self.scene.width, y1 - y0)
        if self.ids is not None:
            self.ids[y0:y1] = ids
        else:
            self.class_ds.write(ids[None], window=window)
        if self.prob_ds is not None:
            self.prob_ds.write(probs, window=window)
        first = -(-y0 // self.step) * self.step  # first row of this block on the preview grid
        rows = ids[first - y0::self.step, ::self.step]
        self.preview[first // self.step:first // self.step + rows.shape[0]] = rows

    def finish(self) -> None:
        from rsport.data.images import encode_png

        for ds in self._datasets:
            ds.close()
        self._datasets = []
        if self.ids is not None:
            self.class_path.write_bytes(encode_png(self.ids))
        self.preview_path.write_bytes(encode_png(self.palette[self.preview]))

    def abort(self) -> None:
        for ds in self._datasets:
            ds.close()
        self._datasets = []
