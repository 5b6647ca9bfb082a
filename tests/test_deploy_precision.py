"""deploy/: reduced precision (bf16, int8), the accuracy gate, ISA checks, and many-scene runs
with resume after a kill. Tiny variants only; no timing assertions."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import rsport
from tests.conftest import ROOT, run_cli

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("openvino")
from rasterio.transform import from_origin  # noqa: E402

from deploy import config, gate, precision  # noqa: E402

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4200000.0, 0.5, 0.5)
# The tiny factseg50 trained for the gate's 60 tiny iterations is far from confident: 2.1% of the
# sample val pixels have an fp32 top-2 margin below 0.05, so correct bf16/int8 rounding flips
# 0.1-1% of them (measured: bf16 99.87%, int8 99.0%, every flip at a margin below 0.04). The
# mechanics tests below therefore accept 98% agreement. Its fp32 mIoU on the small sample val
# scenes is 7.2%, so those near-tie flips move mIoU more than they would on a trained model, by
# an amount that depends on the CPU's int8 kernels (measured on AMD Zen 4: onnxruntime int8
# +0.04, openvino int8 +0.12 points): the mechanics tests accept 0.5 point. The margin criterion
# and the refusal test (a mis-calibrated model: 93.6% agreement, -2.8 points) keep the real
# bounds, and test_gate_judges_agreement_margin_and_miou checks the 0.1-point criterion itself.
# The full models are judged at 99.9% and 0.1 point (deploy/README.md).
TINY_MIN_AGREEMENT = 0.98
TINY_MAX_MIOU_DELTA = 0.5


def write_geotiff(path, array):
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                       dtype=str(array.dtype), crs=CRS, transform=TRANSFORM) as ds:
        ds.write(array)


def rgb_scene(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """Tiny factseg50 exported (ONNX only) with bf16 and int8, gated on its tiny gate weights."""
    from deploy.exporter import export

    out = tmp_path_factory.mktemp("reduced") / "factseg50"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gate, "MIN_AGREEMENT", TINY_MIN_AGREEMENT)
        mp.setattr(gate, "MAX_MIOU_DELTA", TINY_MAX_MIOU_DELTA)
        report = export(rsport.get("factseg50"), out, variant="tiny", formats=("onnx",),
                        precisions=("fp32", "bf16", "int8"))
    return out, report


# --- the gate's arithmetic ----------------------------------------------------------------------
def _probs(ids, margin, k=3):
    """Probabilities [k, H, W] with argmax ``ids``, top-2 margin ``margin``, the rest 0."""
    margin = np.broadcast_to(np.asarray(margin, np.float32), ids.shape)
    p = np.zeros((k,) + ids.shape, np.float32)
    np.put_along_axis(p, ids[None], ((1 + margin) / 2)[None], 0)
    np.put_along_axis(p, ((ids + 1) % k)[None], ((1 - margin) / 2)[None], 0)
    return p


def test_gate_judges_agreement_margin_and_miou():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, (100, 100))
    margins = np.where(rng.random((100, 100)) < 0.01, 0.01, 0.8).astype(np.float32)  # 1% near-ties
    ref = _probs(ids, margins)
    item = gate.GateScene("s", np.zeros((3, 100, 100), np.float32), ids.astype(np.int64))
    near = ids.copy()
    flip = np.argwhere(margins < 0.05)[:5]  # 5 near-tie pixels change class: 99.95% agree
    near[flip[:, 0], flip[:, 1]] = (ids[flip[:, 0], flip[:, 1]] + 1) % 3
    figures = gate.judge("int8", [ref], [_probs(near, 0.5)], [item], 3, 255)
    assert figures["passed"], figures["failed"]
    assert figures["disagreeing_pixels"] == 5 and figures["widest_disagreement_margin"] < 0.05
    confident = ids.copy()
    confident[np.argwhere(margins > 0.5)[0][0], np.argwhere(margins > 0.5)[0][1]] += 1  # one confident pixel
    confident %= 3
    figures = gate.judge("int8", [ref], [_probs(confident, 0.5)], [item], 3, 255)
    assert not figures["passed"] and any("margin" in f for f in figures["failed"])
    many = np.where(rng.random((100, 100)) < 0.01, (ids + 1) % 3, ids)  # 1% of pixels anywhere
    figures = gate.judge("bf16", [ref], [_probs(many, 0.5)], [item], 3, 255, margin_bound=1.0)
    assert not figures["passed"] and any("agreement" in f for f in figures["failed"])
    assert any("mIoU" in f for f in figures["failed"])  # 1% of pixels wrong moves mIoU by > 0.1 point


# --- export ---------------------------------------------------------------------------------------
def test_reduced_precision_export_records_gated_artifacts(reduced):
    out, report = reduced
    cfg = config.read(out)
    section = cfg.data["reduced_precision"]
    assert set(section) == {"bf16", "int8"}
    assert set(section["bf16"]) == {"openvino"} and set(section["int8"]) == {"onnxruntime", "openvino"}
    assert section["int8"]["onnxruntime"]["artifact"] == "onnx_int8" and (out / "model_int8.onnx").is_file()
    assert cfg.artifact("onnx_int8")["precision"] == "int8"
    assert cfg.data["weights"]["gate_training"]["recipe"] == dict(gate.GATE_TRAIN["tiny"], data=None)
    on_disk = json.loads((out / "export_report.json").read_text())
    for name, figures in on_disk["gate"]["results"].items():
        assert figures["passed"], (name, figures["failed"])
        assert figures["widest_disagreement_margin"] < figures["margin_bound"]
        assert abs(figures["miou_delta_points"]) <= TINY_MAX_MIOU_DELTA
        assert figures["isa_path"] == precision.check_isa(figures["precision"])
    assert set(on_disk["gate"]["results"]) == {"openvino bf16", "onnxruntime int8", "openvino int8"}
    quant = cfg.artifact("onnx_int8")["quantization"]
    assert quant["format"] == "QDQ" and quant["kept_fp32"]  # the logit convolutions stay fp32


def test_miscalibrated_int8_is_refused_and_nothing_written(tmp_path, monkeypatch):
    """Calibration windows 50x too dark: activation ranges far too small, the int8 model saturates;
    the gate refuses it (measured: 93.6% agreement, mIoU -2.8 points, where the well calibrated
    model of the fixture above passes), exit code 1, and no output directory appears."""
    from deploy.exporter import ExportError, export

    spec = rsport.get("factseg50")
    monkeypatch.setattr(gate, "MIN_AGREEMENT", TINY_MIN_AGREEMENT)
    windows = [w / np.float32(50) for w in gate.calibration_windows(spec)]
    out = tmp_path / "export"
    with pytest.raises(ExportError) as err:
        export(spec, out, variant="tiny", formats=("onnx",), precisions=("fp32", "int8"), calibration=windows)
    assert err.value.exit_code == 1 and "nothing written" in str(err.value)
    assert "gate onnxruntime int8: agreement" in str(err.value) and "gate openvino int8: agreement" in str(err.value)
    assert "mIoU" in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_precision_bad_input(tmp_path):
    proc = run_cli("deploy/export.py", "factseg50", "--out", tmp_path / "o", "--precision", "fp16")
    assert proc.returncode == 2 and "unknown precision 'fp16'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("deploy/export.py", "factseg50", "--out", tmp_path / "o", "--precision", "int8", "--format", "paddle")
    assert proc.returncode == 2 and "add onnx to --format" in proc.stderr
    assert not (tmp_path / "o").exists()


# --- precision flags of infer.py ------------------------------------------------------------------
@pytest.mark.parametrize("backend, prec", [("onnxruntime", "int8"), ("openvino", "int8"), ("openvino", "bf16")])
def test_infer_reduced_precision_keeps_georeference(reduced, tmp_path, backend, prec):
    out_dir, _ = reduced
    path = tmp_path / "scene.tif"
    write_geotiff(path, rgb_scene(120, 150, 1))
    proc = run_cli("deploy/infer.py", "--model-dir", out_dir, "--input", path, "--out", tmp_path / "out",
                   "--backend", backend, "--precision", prec, "--window", "64", "--stride", "40", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"{prec} on {precision.check_isa(prec)}" in proc.stderr  # says which ISA path runs
    with rasterio.open(tmp_path / "out" / "scene_class.tif") as ds:
        assert ds.crs == rasterio.crs.CRS.from_string(CRS) and ds.transform == TRANSFORM
        ids = ds.read(1)
    summary = json.loads((tmp_path / "out" / "scene_summary.json").read_text())
    assert summary["settings"]["precision"] == prec and summary["settings"]["backend"] == backend
    assert sum(summary["class_histogram"].values()) == ids.size


@pytest.mark.parametrize("backend, prec, message", [
    ("onnxruntime", "bf16", "--backend onnxruntime has no bf16 on CPU"),
    ("paddle", "int8", "--backend paddle has no int8 on CPU"),
    ("paddle_openvino", "bf16", "reduced precision runs on: onnxruntime int8, openvino bf16, openvino int8"),
])
def test_infer_unsupported_backend_precision(tmp_path, backend, prec, message):
    """Checked before anything is read or written: the model dir need not even exist."""
    proc = run_cli("deploy/infer.py", "--model-dir", tmp_path / "nowhere", "--input", tmp_path / "x.tif",
                   "--out", tmp_path / "out", "--backend", backend, "--precision", prec)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_infer_fp32_only_export_has_no_reduced_artifact(tmp_path, reduced):
    import shutil

    out_dir, _ = reduced
    fp32_only = tmp_path / "fp32"
    shutil.copytree(out_dir, fp32_only)
    data = config.read(fp32_only).data
    del data["reduced_precision"]
    config.write(fp32_only / "deploy.yaml", data)
    path = tmp_path / "scene.tif"
    write_geotiff(path, rgb_scene(40, 40, 2))
    proc = run_cli("deploy/infer.py", "--model-dir", fp32_only, "--input", path, "--out", tmp_path / "out",
                   "--backend", "openvino", "--precision", "int8")
    assert proc.returncode == 2 and "no gated int8 artifact for openvino" in proc.stderr
    assert "deploy/export.py --precision int8" in proc.stderr and not (tmp_path / "out").exists()


def test_missing_isa_names_the_flag_and_falls_back_only_when_asked(reduced, tmp_path, monkeypatch, caplog):
    from deploy import infer

    out_dir, _ = reduced
    path = tmp_path / "scene.tif"
    write_geotiff(path, rgb_scene(48, 48, 3))
    old_cpu = {"model": "Old CPU", "flags": ["avx2", "fma", "avx512f"]}
    monkeypatch.setattr(precision, "cpu_info", lambda *a: old_cpu)
    args = SimpleNamespace(model_dir=[out_dir], input=[str(path)], out=tmp_path / "out", backend="openvino",
                           precision="bf16", allow_fallback=False, artifact=None, window=64, stride=40, batch=1,
                           threads=2, enable_mkldnn=True, overlap=True, tta=False, save_prob=False, preview_max=4096,
                           overwrite=False, no_progress=True)
    with pytest.raises(config.DeployError) as err:
        infer.run(args)
    assert "needs the CPU flag avx512_bf16 (or amx_bf16)" in str(err.value) and "Old CPU" in str(err.value)
    assert "--allow-fallback" in str(err.value) and not args.out.exists()
    with pytest.raises(config.DeployError) as err:
        infer.run(SimpleNamespace(**{**vars(args), "precision": "int8"}))
    assert "needs the CPU flag avx_vnni (or avx512_vnni or amx_int8)" in str(err.value)
    args.allow_fallback = True
    with caplog.at_level("WARNING"):
        results = infer.run(args)
    assert results[0]["settings"]["precision"] == "fp32" and results[0]["isa"] == "fp32"
    assert any("running fp32" in r.message for r in caplog.records)


# --- many scenes, resume after a kill ---------------------------------------------------------------
def test_many_scenes_resume_after_kill_rewrites_nothing(reduced, tmp_path):
    """A folder of scenes; the run is killed (SIGKILL) once the first scene's summary appears.
    The rerun skips the finished scene (its outputs verify by sha256 and are not rewritten: same
    mtimes), predicts the others, and leaves no temporary files. A third run skips everything."""
    out_dir, _ = reduced
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for i in range(3):
        write_geotiff(scenes / f"s{i}.tif", rgb_scene(640, 640, 10 + i))
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "deploy" / "infer.py"), "--model-dir", str(out_dir), "--input", str(scenes),
           "--out", str(out), "--backend", "onnxruntime", "--window", "64", "--stride", "24", "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = out / "s0_summary.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert first.exists(), "the first scene never finished"
    assert not (out / "s2_summary.json").exists(), "the run finished before the kill: make the scenes larger"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith("s0_")}
    assert set(before) == {"s0_class.tif", "s0_color.png", "s0_summary.json"}
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "s0.tif: 640x640" in rerun.stdout and "skipped (finished earlier, outputs verified)" in rerun.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith("s0_")} == before
    for i in range(3):
        summary = json.loads((out / f"s{i}_summary.json").read_text())
        assert summary["size"] == [640, 640] and summary["mpx_per_s"] > 0
        assert sum(summary["class_histogram"].values()) == 640 * 640
        for item in summary["outputs"].values():
            assert rsport.io.sha256(item["path"]) == item["sha256"]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3
