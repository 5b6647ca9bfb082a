"""Raster image IO for PNG / JPEG / 8-bit TIFF / BMP: Pillow decodes (errors come back as
exceptions, not as libpng text on stderr), OpenCV encodes PNG.

Every failure is a ``DataError`` that names the file. Images come back channel-last as stored:
color images as RGB, grayscale as ``[H, W]``.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from rsport.data.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _cv2():
    import cv2  # imported on first use: rsport.data stays cheap to import
    return cv2


def _decode_cv2(path: Path, data: np.ndarray) -> np.ndarray:
    """OpenCV decode (for images beyond Pillow's decompression-bomb limit), RGB order."""
    cv2 = _cv2()
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: cannot decode image (corrupt or unsupported format)")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, [2, 1, 0, 3][:array.shape[2]]]
    return array


def read_array(path: str | os.PathLike, *, expand_palette: bool = False) -> np.ndarray:
    """Decode an image file as stored: ``[H, W]`` (one channel, any integer dtype) or
    ``[H, W, C]`` RGB(A) uint8. A palette ("P" mode) PNG gives its indices, or its colors with
    ``expand_palette``. Raises ``DataError`` for a missing, empty, unreadable or corrupt file."""
    from PIL import Image
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise DataError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB") if expand_palette else im
                elif im.mode in ("1", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"):
                    im = im.convert("RGBA" if "A" in im.mode or "a" in im.mode else "RGB")
                array = np.asarray(im)
    except Image.DecompressionBombError:
        array = _decode_cv2(path, data)
    except (OSError, SyntaxError, ValueError) as exc:   # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"{path}: cannot decode image (corrupt or unsupported format: {exc})") from None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] not in (3, 4):
        raise DataError(f"{path}: unsupported channel count {array.shape[2]}")
    return np.ascontiguousarray(array)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An 8-bit RGB image ``[H, W, 3]`` uint8: grayscale is repeated to three channels, palettes
    expanded and alpha dropped, as the original (``PIL ... .convert('RGB')``) does."""
    array = read_array(path, expand_palette=True)
    if array.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit image, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image header ({exc})") from None
    return int(height), int(width)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of ``[H, W]`` (grayscale, uint8/uint16) or ``[H, W, 3]`` RGB uint8."""
    cv2 = _cv2()
    if array.ndim == 3:
        array = array[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"cannot encode array of shape {array.shape} and dtype {array.dtype} as PNG")
    return buf.tobytes()
