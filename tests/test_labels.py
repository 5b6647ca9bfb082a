"""rsport.data.labels: palettes, color/value decoding, DFC mapping, class weights and the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rsport.data import ensure_samples
from rsport.data.images import encode_png, read_array
from rsport.data.labels import (DFC_CLASSES, ISAID_CLASSES, ISAID_PALETTE, check_ids, class_weights, colors_to_ids,
                                dfc_to_ids, values_to_ids)

ROOT = Path(__file__).resolve().parents[1]

# Z-Zheng/FarSeg data/isaid.py COLOR_MAP, transcribed by hand for this check.
FARSEG_COLOR_MAP = {
    "background": (0, 0, 0), "ship": (0, 0, 63), "storage_tank": (0, 191, 127), "baseball_diamond": (0, 63, 0),
    "tennis_court": (0, 63, 127), "basketball_court": (0, 63, 191), "ground_Track_Field": (0, 63, 255),
    "bridge": (0, 127, 63), "large_Vehicle": (0, 127, 127), "small_Vehicle": (0, 0, 127),
    "helicopter": (0, 0, 191), "swimming_pool": (0, 0, 255), "roundabout": (0, 63, 63),
    "soccer_ball_field": (0, 127, 191), "plane": (0, 127, 255), "harbor": (0, 100, 155),
}


def labels_cli(*args):
    return subprocess.run([sys.executable, "-m", "rsport.data.labels", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    return ensure_samples(tmp_path_factory.mktemp("data") / "sample")


def test_isaid_palette_is_the_original():
    assert dict(zip(ISAID_CLASSES, ISAID_PALETTE)) == FARSEG_COLOR_MAP
    assert list(ISAID_CLASSES) == list(FARSEG_COLOR_MAP)
    keys = [r + 2 * g + 3 * b for r, g, b in ISAID_PALETTE]       # the original's decoding key
    assert len(set(keys)) == len(keys)                            # so exact RGB matching agrees on the palette


def test_colors_to_ids():
    rgb = np.array([[ISAID_PALETTE[1], ISAID_PALETTE[15], (255, 255, 255)],
                    [ISAID_PALETTE[0], (189, 0, 0), ISAID_PALETTE[9]]], np.uint8)
    np.testing.assert_array_equal(colors_to_ids(rgb), [[1, 15, 0], [0, 0, 9]])
    # (189, 0, 0) has ship's original key 189 but is not ship: exact matching sends it to background
    ids, unknown = colors_to_ids(rgb, unknown=255, return_unknown=True)
    np.testing.assert_array_equal(ids, [[1, 15, 255], [0, 255, 9]])
    assert unknown == 2 and ids.dtype == np.uint8
    with pytest.raises(ValueError, match="2 pixels have colors outside the palette"):
        colors_to_ids(rgb, unknown="error")
    np.testing.assert_array_equal(colors_to_ids(rgb, [(255, 255, 255), (0, 0, 63)], unknown=7), [[1, 7, 0], [7, 7, 7]])


def test_values_to_ids_and_check_ids():
    gray = np.array([[0, 38, 75], [75, 38, 0]], np.uint8)
    np.testing.assert_array_equal(values_to_ids(gray, [0, 75, 38]), [[0, 2, 1], [1, 2, 0]])
    with pytest.raises(ValueError, match="outside the palette"):
        values_to_ids(gray, [0, 38])
    np.testing.assert_array_equal(values_to_ids(gray, [0, 38], unknown=255), [[0, 1, 255], [255, 1, 0]])
    check_ids(np.array([0, 15, 255], np.uint8), 16)
    with pytest.raises(ValueError, match=r"outside classes 0..15 and not 255: \[16, 254\]"):
        check_ids(np.array([0, 16, 254], np.uint8), 16)
    with pytest.raises(ValueError, match=r"\[-1\]"):
        check_ids(np.array([-1, 3]), 16)


def test_dfc_mapping_is_the_original_load_lc():
    assert len(DFC_CLASSES) == 10
    np.testing.assert_array_equal(dfc_to_ids(np.array([0, 1, 5, 10, 255], np.uint8)), [255, 0, 4, 9, 255])
    igbp = np.arange(18, dtype=np.uint8)
    np.testing.assert_array_equal(dfc_to_ids(igbp, "igbp"), [255, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 5, 7, 8, 9])
    with pytest.raises(ValueError, match=r"outside DFC values 0..10 and not 255: \[11\]"):
        dfc_to_ids(np.array([3, 11], np.uint8))
    with pytest.raises(ValueError, match=r"outside IGBP values 0..17 and not 255: \[18\]"):
        dfc_to_ids(np.array([18], np.uint8), "igbp")
    with pytest.raises(ValueError, match="unknown label scheme"):
        dfc_to_ids(igbp, "lccs")


def test_class_weights():
    assert class_weights([10, 5, 0, 20]) == [2.0, 4.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="no labelled pixels"):
        class_weights([0, 0])


def test_cli_to_ids_and_weights(sample_root, tmp_path):
    masks = sample_root / "isaid" / "train" / "masks"
    proc = labels_cli("to-ids", "--palette", "isaid", "--in", masks, "--out", tmp_path / "ids")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files"] == 6 and summary["unknown_pixels"] > 0 and summary["unknown_policy"] == "background"
    written = sorted(p.name for p in (tmp_path / "ids").iterdir())
    assert written == [f"P0{i:03d}.png" for i in range(6)]                 # suffix dropped, no temp files
    for name in written:
        color = read_array(masks / name.replace(".png", "_instance_color_RGB.png"))
        np.testing.assert_array_equal(read_array(tmp_path / "ids" / name), colors_to_ids(color))
    assert sum(summary["pixels_per_class"]) == sum(
        read_array(tmp_path / "ids" / n).size for n in written)

    proc = labels_cli("weights", "--in", tmp_path / "ids", "--num-classes", 17, "--out", tmp_path / "w.json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "w.json").read_text())
    assert json.loads(proc.stdout) == result
    counts = np.asarray(result["counts"])
    assert counts.tolist() == summary["pixels_per_class"] + [0]
    np.testing.assert_allclose(result["weights"][:16], counts.max() / counts[:16])
    assert result["weights"][16] == 0.0 and result["missing_classes"] == [16]
    # same counts straight from the color masks
    proc = labels_cli("weights", "--in", masks, "--palette", "isaid", "--num-classes", 17,
                      "--out", tmp_path / "w2.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "w2.json").read_text())["counts"] == result["counts"]


def test_cli_values_and_palette_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode_png(np.array([[0, 38], [75, 38]], np.uint8)))
    proc = labels_cli("to-ids", "--values", "0,38,75", "--in", tmp_path / "in", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(read_array(tmp_path / "out" / "a.png"), [[0, 1], [2, 1]])
    (tmp_path / "pal.json").write_text(json.dumps({"classes": ["bg", "x"], "values": [0, 38]}))
    proc = labels_cli("to-ids", "--palette", tmp_path / "pal.json", "--in", tmp_path / "in", "--out", tmp_path / "o2")
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {tmp_path / 'in' / 'a.png'}: ")
    assert "outside the palette" in proc.stderr and not (tmp_path / "o2").exists()
    proc = labels_cli("to-ids", "--palette", tmp_path / "pal.json", "--unknown", "ignore", "--in", tmp_path / "in",
                      "--out", tmp_path / "o2")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(read_array(tmp_path / "o2" / "a.png"), [[0, 1], [255, 1]])
    (tmp_path / "rgb.json").write_text(json.dumps({"bg": [0, 0, 0], "road": [255, 255, 255]}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "m.png").write_bytes(encode_png(np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8)))
    proc = labels_cli("to-ids", "--palette", tmp_path / "rgb.json", "--in", tmp_path / "c", "--out", tmp_path / "o3")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(read_array(tmp_path / "o3" / "m.png"), [[1, 0]])


def test_cli_bad_input_writes_nothing(sample_root, tmp_path):
    def fails(proc, *names):
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert all(str(n) in proc.stderr for n in names), proc.stderr
        assert proc.stdout == ""

    fails(labels_cli("to-ids", "--in", tmp_path / "missing", "--out", tmp_path / "o"), tmp_path / "missing")
    src = tmp_path / "masks"
    src.mkdir()
    for f in sorted((sample_root / "isaid" / "val" / "masks").iterdir()):
        (src / f.name).write_bytes(f.read_bytes())
    (src / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    fails(labels_cli("to-ids", "--in", src, "--out", tmp_path / "o"), src / "zz_broken.png")
    assert not (tmp_path / "o").exists()                                   # valid files were not written either
    fails(labels_cli("to-ids", "--palette", tmp_path / "nope.json", "--in", src, "--out", tmp_path / "o"),
          tmp_path / "nope.json")
    ids = tmp_path / "ids"
    ids.mkdir()
    (ids / "a.png").write_bytes(encode_png(np.array([[0, 3], [255, 16]], np.uint8)))
    fails(labels_cli("weights", "--in", ids, "--num-classes", 16, "--out", tmp_path / "w.json"), ids / "a.png")
    assert not (tmp_path / "w.json").exists()
    (ids / "a.png").write_bytes(encode_png(np.full((2, 2), 255, np.uint8)))
    fails(labels_cli("weights", "--in", ids, "--num-classes", 16, "--out", tmp_path / "w.json"), ids)


def test_cli_help():
    proc = labels_cli("--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout
    proc = labels_cli("weights", "--help")
    assert proc.returncode == 0 and "default: 255" in proc.stdout
