"""Framework-neutral data pipeline (numpy only): both frameworks receive identical batches.

Layouts (``spec.dataset``; ``root`` holds ``train/`` and ``val/``, or ``<dataset>/train`` ...):

* ``isaid``: ``<split>/images/<id>.png`` (RGB uint8; JPEG/TIFF/BMP also read, grayscale repeated
  to 3 channels, alpha dropped) + ``<split>/masks/<id>_instance_color_RGB.png`` (RGB color map in
  the iSAID palette, ``labels.ISAID_PALETTE``; colors outside the palette -> 0 = background, as
  the original) or ``<split>/masks/<id>.png`` (single-channel class ids 0..15, 255 = ignore, e.g.
  from the label tool).
* ``sen12ms_s1``: ``<split>/s1/<id>.tif`` (2-band GeoTIFF, VV then VH in dB, with a CRS) +
  ``<split>/lc/<id>.tif`` (band 1: DFC2020 classes 1..10 with 0 = no data; SEN12MS IGBP labels
  with ``label_scheme='igbp'``; SEN12MS/DFC2020 names ``*_s1_*`` -> ``*_lc_*`` / ``*_dfc_*`` are
  paired too). S1 scaling: NaN -> 0 dB, clip [-25, 0], /25 + 1; labels -> 0..9, 255 = ignore.

API:

* ``build_dataset(spec, root, split, *, crop=None, seed=0, stride=None, label_scheme='dfc')``
  -> ``SegDataset``: ``len(ds)``, ``ds[i]`` / ``ds.get(i, epoch)`` -> ``(image float32 [C, H, W]
  normalized, label int64 [H, W])``; ``ds.scene(i)`` -> ``(raw float32 [C, H, W], label, name)``;
  ``ds.normalize(raw)``. Train: the original 896/512 patch grid + flips/rot90/pad (see
  ``rsport.data.dataset``); val: whole scenes.
* ``Loader(ds, batch_size, *, seed, shuffle, drop_last, num_workers, start_iter, rank,
  world_size)``: infinite, batch k a pure function of (seed, k, rank, world_size), the same
  with any ``num_workers`` (loader threads); a worker failure surfaces as ``DataError``.
* ``ensure_samples(root=None)`` / ``default_root(spec)``: the embedded sample data
  (``SAMPLE_ROOT = 'output/data/sample'``, relative to the working directory).
* ``read_raw(path, dataset, window=None)``, ``read_image``, ``sar.read_s1`` / ``sar.read_window`` /
  ``sar.geo_info``: single files and windows (rasterio windowed reads for GeoTIFFs).
* ``rsport.sliding``: the original sliding-window evaluation grid and averaging.

Raw images are on the registry's 0..255 scale (``spec.mean`` / ``spec.std`` apply): RGB for iSAID,
255 x the S1 scaling for SAR (the SAR spec's mean 0 / std 255 gives back the original [0, 1]).

Bad input raises ``DataError`` (a ``ValueError``) naming the file: a missing folder or file, an
image without mask, image/mask size mismatch, an unreadable or corrupt image, a label value that
is neither a class nor 255, a GeoTIFF without CRS or with the wrong band count, a label grid that
differs from its image. Colors outside the iSAID palette are not an error: they become
background, as in the original.

CLIs:

* ``python -m rsport.data.samples [--out DIR] [--force]``: generate the sample data.
* ``python -m rsport.data.labels to-ids --palette isaid|FILE.json|--values V,... --in DIR --out DIR``
  and ``python -m rsport.data.labels weights --in DIR --num-classes K --out weights.json``.
"""
import importlib

# Exports resolve lazily (PEP 562): ``python -m rsport.data.labels`` / ``.samples`` then run their
# module once, and importing rsport.data costs nothing until something is used.
_EXPORTS = {
    "DATASETS": "dataset", "SegDataset": "dataset", "build_dataset": "dataset", "default_root": "dataset",
    "read_raw": "dataset", "DataError": "errors", "read_image": "images", "DFC_CLASSES": "labels",
    "IGNORE_INDEX": "labels", "ISAID_CLASSES": "labels", "ISAID_PALETTE": "labels", "class_weights": "labels",
    "colors_to_ids": "labels", "dfc_to_ids": "labels", "Loader": "loader", "SAMPLE_ROOT": "samples",
    "ensure_samples": "samples",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rsport.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rsport.data.{_EXPORTS[name]}"), name)


def __dir__():
    return sorted(list(globals()) + __all__)
