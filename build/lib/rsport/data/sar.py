"""Sentinel-1 GeoTIFFs (VV, VH in dB) and DFC2020 / SEN12MS land-cover labels, through rasterio.

Input scaling is the SEN12MS / DFC2020 loaders' ``load_s1`` (lukasliebel/dfc2020_baseline
``code/datasets.py`` @ 3640faf3), in this order: float32, NaN -> 0 dB (``np.nan_to_num``, so a
NaN pixel ends at 1.0, like a 0 dB one), clip to [-25, 0] dB, divide by 25, add 1 -> [0, 1].
Labels follow the original ``load_lc`` (see ``rsport.data.labels.dfc_to_ids``).

A GeoTIFF without a CRS is rejected (``DataError`` naming the file): the sample data, the
datasets and the GeoTIFF outputs of inference all carry a real CRS and transform. Windows are
``(y0, x0, y1, x1)`` half-open pixel boxes, as in ``rsport.sliding.windows``, and are read with
rasterio windowed reads (only those pixels are decoded).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsport.data.errors import DataError
from rsport.data.labels import dfc_to_ids

S1_BANDS = ("VV", "VH")
DB_RANGE = (-25.0, 0.0)
GEOTIFF_SUFFIXES = (".tif", ".tiff")


def _rasterio():
    import rasterio  # ~0.8 s to import: only when a GeoTIFF is actually read
    return rasterio


@dataclass(frozen=True)
class GeoInfo:
    """Header of a GeoTIFF: size, band count, dtype, CRS (WKT) and affine transform (6 numbers)."""
    path: str
    height: int
    width: int
    count: int
    dtype: str
    crs: str
    transform: tuple
    nodata: float | None


def _open(path):
    rasterio = _rasterio()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{path}: cannot open GeoTIFF ({exc})") from None


def geo_info(path: str | os.PathLike) -> GeoInfo:
    """Read a GeoTIFF header; ``DataError`` if it is unreadable or has no CRS."""
    with _open(path) as src:
        if src.crs is None:
            raise DataError(f"{path}: GeoTIFF has no CRS (coordinate reference system); "
                            f"georeference it first (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
        return GeoInfo(str(path), src.height, src.width, src.count, src.dtypes[0], src.crs.to_wkt(),
                       tuple(src.transform)[:6], src.nodata)


def read_window(path: str | os.PathLike, window: tuple[int, int, int, int] | None = None,
                bands: tuple[int, ...] | None = None) -> np.ndarray:
    """Stored values ``[bands, h, w]`` of ``window = (y0, x0, y1, x1)`` (whole raster if None);
    ``bands`` are 1-based band numbers (default: all). Checks the CRS like ``geo_info``."""
    rasterio = _rasterio()
    with _open(path) as src:
        if src.crs is None:
            raise DataError(f"{path}: GeoTIFF has no CRS (coordinate reference system); "
                            f"georeference it first (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
        win = None
        if window is not None:
            y0, x0, y1, x1 = window
            if not (0 <= y0 < y1 <= src.height and 0 <= x0 < x1 <= src.width):
                raise DataError(f"{path}: window {window} outside the raster ({src.height} x {src.width})")
            win = rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0)
        try:
            return src.read(list(bands) if bands else None, window=win)
        except rasterio.errors.RasterioIOError as exc:
            raise DataError(f"{path}: cannot read pixels ({exc})") from None


def s1_to_unit(db: np.ndarray) -> np.ndarray:
    """The original S1 scaling of dB values: NaN -> 0, clip [-25, 0], /25 + 1 -> float32 [0, 1]."""
    s1 = np.nan_to_num(np.asarray(db, np.float32))
    s1 = np.clip(s1, *DB_RANGE)
    s1 /= 25
    s1 += 1
    return s1.astype(np.float32, copy=False)


def read_s1(path: str | os.PathLike, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A Sentinel-1 scene (or window) ``[2, h, w]`` float32 in [0, 1] (VV, VH as stored)."""
    data = read_window(path, window)
    if data.shape[0] != len(S1_BANDS):
        raise DataError(f"{path}: expected {len(S1_BANDS)} bands ({', '.join(S1_BANDS)}), got {data.shape[0]}")
    if data.dtype.kind != "f":
        raise DataError(f"{path}: expected float backscatter in dB, got {data.dtype}")
    return s1_to_unit(data)


def read_lc(path: str | os.PathLike, scheme: str = "dfc",
            window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Land-cover labels ``[h, w]`` int64: DFC ids 0..9, 255 = ignore (band 1, as the original).

    ``scheme`` is ``'dfc'`` (values 1..10, 0 = no data) or ``'igbp'`` (SEN12MS IGBP band); a
    4-band file read as ``'dfc'`` is refused: it is a SEN12MS label (IGBP, LCCS...)."""
    info = geo_info(path)
    if scheme == "dfc" and info.count == 4:
        raise DataError(f"{path}: 4 bands looks like a SEN12MS label (IGBP in band 1); "
                        f"read it with label_scheme='igbp'")
    lc = read_window(path, window, bands=(1,))[0]
    if lc.dtype.kind not in "iu":
        raise DataError(f"{path}: expected integer land-cover classes, got {lc.dtype}")
    try:
        return dfc_to_ids(lc, scheme)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
