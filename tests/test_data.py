"""rsport.data: sample data, iSAID and Sentinel-1 datasets, augmentation, Loader, bad input."""
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

import rsport
from rsport.data import DataError, Loader, build_dataset, ensure_samples, read_raw
from rsport.data import samples as samples_mod
from rsport.data import sar
from rsport.data.images import encode_png, read_image
from rsport.data.labels import ISAID_PALETTE
from rsport.sliding import windows

ROOT = Path(__file__).resolve().parents[1]
ISAID_SPEC = rsport.get("factseg50")
S1_SPEC = rsport.get("vit_s16_upernet")


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    return ensure_samples(tmp_path_factory.mktemp("data") / "sample")


def _copy_split(src, dst):
    shutil.copytree(src, dst)
    return dst


def _dihedral(image, label):
    """All (image, label) variants under flips and rot90 (channel-first image)."""
    out = []
    for flip in (False, True):
        im, lb = (image[:, :, ::-1], label[:, ::-1]) if flip else (image, label)
        for k in range(4):
            out.append((np.rot90(im, k, axes=(1, 2)), np.rot90(lb, k)))
    return out


# --- sample data -----------------------------------------------------------------------------

def test_samples_layout_and_content(sample_root):
    manifest = json.loads((sample_root / "manifest.json").read_text())
    assert manifest["version"] == samples_mod.VERSION
    for split, n in (("train", 6), ("val", 3)):
        images = sorted((sample_root / "isaid" / split / "images").glob("*.png"))
        masks = sorted((sample_root / "isaid" / split / "masks").glob("*_instance_color_RGB.png"))
        assert len(images) == len(masks) == n
    for split, n in (("train", 6), ("val", 2)):
        assert len(list((sample_root / "sen12ms_s1" / split / "s1").glob("*.tif"))) == n
        assert len(list((sample_root / "sen12ms_s1" / split / "lc").glob("*.tif"))) == n
    # every foreground class in the val masks, plus off-palette colors
    val = build_dataset(ISAID_SPEC, sample_root / "isaid", "val")
    present = set()
    for i in range(len(val)):
        present |= set(np.unique(val.scene(i)[1]).tolist())
    assert present == set(range(16))
    colors = {tuple(c) for c in read_image(val.scenes[0].label).reshape(-1, 3)}
    assert colors - set(ISAID_PALETTE), "the sample masks should hold some unknown colors"
    # SAR: real CRS + transform, NaN pixels, out-of-range dB, no-data labels
    s1 = sorted((sample_root / "sen12ms_s1" / "train" / "s1").glob("*.tif"))[0]
    info = sar.geo_info(s1)
    assert "UTM zone 32N" in info.crs and info.count == 2 and info.transform[0] == 10.0
    db = sar.read_window(s1)
    assert db.dtype == np.float32 and np.isnan(db).any() and np.nanmax(db) > 0 and np.nanmin(db) < -25
    lc = sar.read_window(sample_root / "sen12ms_s1" / "train" / "lc" / s1.name)[0]
    assert lc.dtype == np.uint8 and set(np.unique(lc)) <= set(range(11)) and (lc == 0).any()


def test_samples_are_deterministic_idempotent_and_atomic(tmp_path, sample_root):
    other = ensure_samples(tmp_path / "again")
    ours = json.loads((sample_root / "manifest.json").read_text())["files"]
    assert json.loads((other / "manifest.json").read_text())["files"] == ours
    stamp = (other / "manifest.json").stat().st_mtime_ns
    assert ensure_samples(tmp_path / "again") == other
    assert (other / "manifest.json").stat().st_mtime_ns == stamp          # reused, not regenerated
    ensure_samples(tmp_path / "again", force=True)
    assert (other / "manifest.json").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]          # no temp folders left


def test_samples_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rsport.data.samples", "--out", str(tmp_path / "s")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == 34 and "RuntimeWarning" not in proc.stderr
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "rsport.data.samples", "--out", str(tmp_path / "file")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and str(tmp_path / "file") in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# --- iSAID -----------------------------------------------------------------------------------

def test_isaid_train_patches_follow_the_window_grid(sample_root):
    ds = build_dataset(ISAID_SPEC, sample_root, "train", crop=128)
    assert ds.stride == (73, 73)
    assert len(ds) == sum(len(windows(s.height, s.width, 128, 73)) for s in ds.scenes)
    assert len(build_dataset(ISAID_SPEC, sample_root, "train")) == 6      # 896 crop: one patch per scene
    assert build_dataset(ISAID_SPEC, sample_root, "train").stride == (512, 512)


def test_isaid_augmentation_is_a_dihedral_copy_of_the_patch(sample_root):
    ds = build_dataset(ISAID_SPEC, sample_root / "isaid", "train", crop=128, seed=5)
    mean, std = ds.mean, ds.std
    variants = set()
    for index in (0, 17, len(ds) - 1):
        s, (y0, x0, y1, x1) = ds.items[index]
        raw, label, _ = ds.scene(s)
        candidates = _dihedral(raw[:, y0:y1, x0:x1], label[y0:y1, x0:x1])
        for epoch in range(12):
            x, y = ds.get(index, epoch)
            assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (3, 128, 128)
            matches = [v for v, (im, lb) in enumerate(candidates)
                       if np.array_equal(y, lb) and np.allclose(x * std + mean, im, atol=1e-3)]
            assert matches, (index, epoch)
            variants.add(matches[0])
            x2, y2 = ds.get(index, epoch)                 # pure function of (seed, index, epoch)
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)
    assert len(variants) >= 5                               # flips and rotations really happen
    other = build_dataset(ISAID_SPEC, sample_root, "train", crop=128, seed=6)
    assert any(not np.array_equal(ds.get(i, 0)[1], other.get(i, 0)[1]) for i in range(10))


def test_isaid_small_scene_is_padded_like_the_original(sample_root):
    ds = build_dataset(ISAID_SPEC, sample_root, "train")               # crop 896 > every scene
    pad_value = (0 - ds.mean) / ds.std
    shapes = set()
    for epoch in range(8):
        x, y = ds.get(0, epoch)
        assert x.shape == (3, 896, 896) and y.shape == (896, 896)
        h = int((y != 255).any(1).sum())
        w = int((y != 255).any(0).sum())
        shapes.add((h, w))
        assert (y[h:] == 255).all() and (y[:, w:] == 255).all()
        np.testing.assert_allclose(x[:, h:, :], np.broadcast_to(pad_value, x[:, h:, :].shape), rtol=1e-6)
    assert shapes == {(300, 412), (412, 300)}                          # rot90 with an odd k turns it


def test_isaid_val_scenes(sample_root):
    ds = build_dataset(ISAID_SPEC, sample_root, "val")
    assert len(ds) == 3
    raw, label, name = ds.scene(1)
    x, y = ds[1]
    assert name == ds.scenes[1].name and raw.shape == (3, ds.scenes[1].height, ds.scenes[1].width)
    np.testing.assert_array_equal(x, ds.normalize(raw))
    np.testing.assert_allclose(x, (raw - np.asarray(ISAID_SPEC.mean).reshape(3, 1, 1))
                               / np.asarray(ISAID_SPEC.std).reshape(3, 1, 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y, label)
    color = read_image(ds.scenes[1].label)
    known = (color[..., None, :] == np.asarray(ISAID_PALETTE, np.uint8)).all(-1)
    np.testing.assert_array_equal(np.where(known.any(-1), known.argmax(-1), 0), y)   # unknown colors -> 0
    np.testing.assert_array_equal(read_raw(ds.scenes[1].image, "isaid"), raw)
    np.testing.assert_array_equal(read_raw(ds.scenes[1].image, "isaid", (5, 7, 50, 90)), raw[:, 5:50, 7:90])


def test_isaid_id_masks_are_read_and_checked(sample_root, tmp_path):
    split = _copy_split(sample_root / "isaid" / "val", tmp_path / "val")
    reference = build_dataset(ISAID_SPEC, tmp_path, "val")
    expected = reference.scene(0)[1]
    name = reference.scenes[0].name
    (split / "masks" / f"{name}_instance_color_RGB.png").unlink()
    (split / "masks" / f"{name}.png").write_bytes(encode_png(expected.astype(np.uint8)))
    np.testing.assert_array_equal(build_dataset(ISAID_SPEC, tmp_path, "val").scene(0)[1], expected)
    bad = expected.astype(np.uint8)
    bad[0, 0] = 20
    (split / "masks" / f"{name}.png").write_bytes(encode_png(bad))
    with pytest.raises(DataError, match=f"{name}.png: label values outside classes 0..15 and not 255: \\[20\\]"):
        build_dataset(ISAID_SPEC, tmp_path, "val").scene(0)


# --- Sentinel-1 ------------------------------------------------------------------------------

def test_s1_scaling_and_labels_follow_the_original(sample_root):
    ds = build_dataset(S1_SPEC, sample_root, "val")
    raw, label, name = ds.scene(0)
    with rasterio.open(ds.scenes[0].image) as src:
        db = src.read()
    with rasterio.open(ds.scenes[0].label) as src:
        lc = src.read(1).astype(np.int64)
    # the original load_s1 / load_lc, written out
    expected = (np.clip(np.nan_to_num(db.astype(np.float32)), -25, 0) / 25 + 1).astype(np.float32)
    np.testing.assert_allclose(raw / 255, expected, rtol=0, atol=1e-6)
    assert (raw[:, np.isnan(db).any(0)] == 255).all()                     # NaN -> 0 dB -> 1.0
    lc -= 1
    lc[lc == -1] = 255
    np.testing.assert_array_equal(label, lc)
    x, y = ds[0]
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)            # mean 0 / std 255 -> [0, 1]
    np.testing.assert_array_equal(read_raw(ds.scenes[0].image, "sen12ms_s1", (3, 4, 40, 60)), raw[:, 3:40, 4:60])


def test_s1_train_patches(sample_root):
    ds = build_dataset(S1_SPEC, sample_root, "train", crop=(128, 128))
    x, y = ds.get(2, 3)
    assert x.shape == (2, 128, 128) and y.shape == (128, 128)
    assert 0 <= x.min() and x.max() <= 1
    assert set(np.unique(y)) <= set(range(10)) | {255}


def _write_tif(path, data, crs="EPSG:32632", transform=None):
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                   dtype=str(data.dtype))
    if crs:
        profile.update(crs=crs, transform=transform or Affine(10, 0, 400000, 0, -10, 5500000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)


def test_s1_bad_input(sample_root, tmp_path):
    split = _copy_split(sample_root / "sen12ms_s1" / "train", tmp_path / "train")
    s1, lc = split / "s1" / "ROI0_p000.tif", split / "lc" / "ROI0_p000.tif"
    good_s1, good_lc = s1.read_bytes(), lc.read_bytes()
    _write_tif(s1, np.zeros((2, 20, 20), np.float32), crs=None)
    with pytest.raises(DataError, match=f"{s1}: GeoTIFF has no CRS"):
        build_dataset(S1_SPEC, tmp_path, "train")
    _write_tif(s1, np.zeros((3, 256, 256), np.float32))
    with pytest.raises(DataError, match=f"{s1}: expected 2 bands"):
        build_dataset(S1_SPEC, tmp_path, "train")
    s1.write_bytes(good_s1)
    _write_tif(lc, np.ones((1, 256, 256), np.uint8), transform=Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(DataError, match=f"{lc}: label grid"):
        build_dataset(S1_SPEC, tmp_path, "train")
    bad = sar.read_window(sample_root / "sen12ms_s1" / "train" / "lc" / "ROI0_p000.tif")
    bad[0, 10, 10] = 12
    _write_tif(lc, bad, transform=Affine(*sar.geo_info(s1).transform))
    ds = build_dataset(S1_SPEC, tmp_path, "train")
    with pytest.raises(DataError, match=f"{lc}: land-cover values outside DFC values 0..10 and not 255: \\[12\\]"):
        ds.get(0)
    lc.rename(split / "lc" / "moved.tif")
    with pytest.raises(DataError, match=f"{s1}: no label"):
        build_dataset(S1_SPEC, tmp_path, "train")
    lc.write_bytes(good_lc)
    s1.write_bytes(b"not a tiff")
    with pytest.raises(DataError, match=f"{s1}: cannot open GeoTIFF"):
        build_dataset(S1_SPEC, tmp_path, "train")


def test_s1_igbp_labels(tmp_path, sample_root):
    split = _copy_split(sample_root / "sen12ms_s1" / "val", tmp_path / "val")
    s1 = sorted((split / "s1").glob("*.tif"))[0]
    info = sar.geo_info(s1)
    igbp = np.zeros((4, info.height, info.width), np.uint8)
    igbp[0] = np.arange(info.width) % 18                                   # band 1: IGBP 0..17
    _write_tif(split / "lc" / s1.name, igbp, crs=info.crs, transform=Affine(*info.transform))
    with pytest.raises(DataError, match="SEN12MS label"):
        build_dataset(S1_SPEC, tmp_path, "val").scene(0)
    label = build_dataset(S1_SPEC, tmp_path, "val", label_scheme="igbp").scene(0)[1]
    table = np.array([255, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 5, 7, 8, 9])
    np.testing.assert_array_equal(label[0, :18], table)


# --- bad input: layout and files -------------------------------------------------------------

def test_missing_folders(tmp_path, sample_root):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: no such data folder"):
        build_dataset(ISAID_SPEC, tmp_path / "nope", "train")
    with pytest.raises(DataError, match=f"{tmp_path / 'train'}: no such folder"):
        build_dataset(ISAID_SPEC, tmp_path, "train")
    split = _copy_split(sample_root / "isaid" / "val", tmp_path / "val")
    shutil.rmtree(split / "masks")
    with pytest.raises(DataError, match=f"{split / 'masks'}: no such folder"):
        build_dataset(ISAID_SPEC, tmp_path, "val")
    (split / "masks").mkdir()
    with pytest.raises(DataError, match="P1000.png: no mask .*P1000_instance_color_RGB.png"):
        build_dataset(ISAID_SPEC, tmp_path, "val")
    for f in (split / "images").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=f"{split / 'images'}: no images"):
        build_dataset(ISAID_SPEC, tmp_path, "val")


def test_size_mismatch_and_corrupt_images(tmp_path, sample_root):
    split = _copy_split(sample_root / "isaid" / "val", tmp_path / "val")
    mask = split / "masks" / "P1001_instance_color_RGB.png"
    good = mask.read_bytes()
    mask.write_bytes(encode_png(np.zeros((20, 30, 3), np.uint8)))
    with pytest.raises(DataError, match=f"{mask}: mask size 20x30 differs from image .*P1001.png \\(295x350\\)"):
        build_dataset(ISAID_SPEC, tmp_path, "val")
    mask.write_bytes(good)
    image = split / "images" / "P1002.png"
    image.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=f"{image}: cannot read image header"):
        build_dataset(ISAID_SPEC, tmp_path, "val")
    image.write_bytes((sample_root / "isaid" / "val" / "images" / "P1002.png").read_bytes()[:3000])  # truncated
    ds = build_dataset(ISAID_SPEC, tmp_path, "val")                       # the header still reads
    with pytest.raises(DataError, match=f"{image}: cannot decode image"):
        ds[2]
    image.write_bytes(b"")
    with pytest.raises(DataError, match=f"{image}"):
        build_dataset(ISAID_SPEC, tmp_path, "val")


# --- Loader ----------------------------------------------------------------------------------

def test_loader_is_a_pure_function_of_k(sample_root):
    ds = build_dataset(ISAID_SPEC, sample_root, "train", crop=64)
    ref = Loader(ds, 3, seed=1)
    it = iter(ref)
    first = [next(it) for _ in range(6)]
    assert first[0][0].shape == (3, 3, 64, 64) and first[0][1].shape == (3, 64, 64)
    assert first[0][0].dtype == np.float32 and first[0][1].dtype == np.int64
    threaded = iter(Loader(ds, 3, seed=1, num_workers=2))
    resumed = iter(Loader(ds, 3, seed=1, start_iter=4, num_workers=2))
    for k in range(6):
        x, y = next(threaded)
        np.testing.assert_array_equal(x, first[k][0])
        np.testing.assert_array_equal(y, first[k][1])
    for k in (4, 5):
        x, y = next(resumed)
        np.testing.assert_array_equal(x, first[k][0])
        np.testing.assert_array_equal(y, first[k][1])
    other = Loader(ds, 3, seed=2)
    assert other.indices(0) != ref.indices(0)


@pytest.mark.parametrize("drop_last", [True, False])
def test_loader_epochs_and_ranks(sample_root, drop_last):
    ds = build_dataset(ISAID_SPEC, sample_root, "train", crop=128)
    n = len(ds)
    loaders = [Loader(ds, 4, seed=3, rank=r, world_size=2, drop_last=drop_last) for r in range(2)]
    steps = loaders[0].steps_per_epoch
    assert steps == (n // 8 if drop_last else -(-n // 8))
    seen = [(i, e) for k in range(steps) for loader in loaders for i, e in loader.indices(k)]
    epoch0 = [i for i, e in seen if e == 0]
    assert len(epoch0) == len(set(epoch0))                                # no sample twice in an epoch
    assert len(epoch0) == (steps * 8 if drop_last else n)
    if drop_last:
        assert loaders[0].epoch_of(steps) == 1 and loaders[0].indices(steps)[0][1] == 1
    a = {i for k in range(steps) for i, e in loaders[0].indices(k) if e == 0}
    b = {i for k in range(steps) for i, e in loaders[1].indices(k) if e == 0}
    assert not a & b                                                        # ranks share nothing


def test_loader_worker_error_names_the_file(tmp_path, sample_root):
    _copy_split(sample_root / "isaid" / "train", tmp_path / "train")
    ds = build_dataset(ISAID_SPEC, tmp_path, "train", crop=64, cache_scenes=0)
    broken = ds.scenes[ds.items[Loader(ds, 2, seed=0).indices(1)[0][0]][0]].image
    broken.write_bytes(broken.read_bytes()[:2000])
    for workers in (0, 2):
        it = iter(Loader(ds, 2, seed=0, num_workers=workers))
        with pytest.raises(DataError, match=str(broken)):
            for _ in range(2):
                next(it)


def test_loader_rejects_a_dataset_smaller_than_a_batch(sample_root):
    ds = build_dataset(ISAID_SPEC, sample_root, "val")
    with pytest.raises(DataError, match="fewer than one global batch"):
        Loader(ds, 4)
    with pytest.raises(DataError, match="different sizes"):
        next(iter(Loader(ds, 2, drop_last=False)))


def test_data_package_imports_no_framework():
    code = ("import sys, rsport.data, rsport.data.dataset, rsport.data.loader, rsport.data.samples, "
            "rsport.data.labels, rsport.data.sar, rsport.sliding\n"
            "assert not {'torch', 'paddle', 'rasterio'} & set(sys.modules), sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
