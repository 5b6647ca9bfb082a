"""deploy/: export (Paddle PIR + legacy, ONNX from paddle and torch) with parity, streamed
sliding-window inference of images and GeoTIFFs, TTA, and bad input. Tiny variants only."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import rsport
import rsport.io
import rsport.sliding
from tests.conftest import MODELS, run_cli
from deploy import config
from deploy.scene import flip_tta, stream_scene
from rsport.sliding import predict_scene

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4200000.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per model: the tiny variant exported in every format (embedded seeded reference), once."""
    from deploy.exporter import export

    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp("deploy") / name
            cache[name] = (out, export(rsport.get(name), out, variant="tiny"))
        return cache[name]
    return get


def write_geotiff(path, array, crs=CRS, transform=TRANSFORM):
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                       dtype=str(array.dtype), crs=crs, transform=transform) as ds:
        ds.write(array)


def scene_for(spec, height, width, seed=0):
    """A raw scene in the model's input format: RGB uint8, or VV/VH dB float32 for SAR."""
    rng = np.random.default_rng(seed)
    if spec.dataset == "isaid":
        return rng.integers(0, 256, (3, height, width), dtype=np.uint8)
    return rng.uniform(-30, 2, (2, height, width)).astype(np.float32)


def infer_args(model_dir, inputs, out, **kw):
    base = dict(model_dir=[Path(model_dir)], input=[str(p) for p in inputs], out=Path(out), backend="paddle",
                artifact=None, window=None, stride=None, batch=1, threads=2, enable_mkldnn=True, tta=False,
                save_prob=False, preview_max=4096, no_progress=True, precision="fp32", allow_fallback=False,
                overlap=True, overwrite=False)
    base.update(kw)
    return SimpleNamespace(**base)


# --- export ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_export_all_formats_match_the_dynamic_model(name, exported):
    out, report = exported(name)
    spec = rsport.get(name)
    assert report["passed"] and report["twins"]["passed"]
    assert set(report["artifacts"]) == {"paddle_pir", "paddle_legacy", "onnx_paddle", "onnx_torch"}
    assert report["tolerance"]["profile"] == spec.profile_overrides.get(("float32", "deploy"), spec.tolerance)
    shapes = [tuple(s) for s in report["fixtures"]]
    assert {s[0] for s in shapes} == {1, 2} and len({s[2:] for s in shapes}) == 2  # dynamic N, H, W proven
    for key, art in report["artifacts"].items():
        expected_checks = {"paddle_legacy": {"onednn", "native", "openvino"}, "paddle_pir": {"onednn", "native"},
                           "onnx_torch": {"default", "openvino"}}.get(key, {"default"})
        assert set(art["checks"]) == expected_checks, key
        for check in art["checks"].values():
            assert [tuple(r["input"]) for r in check["fixtures"]] == shapes
            for row in check["fixtures"]:
                assert row["passed"] and row["problem"] is None, (key, row)
                assert 0 <= row["max_abs"] <= row["bound"] <= report["tolerance"]["atol"] + 1e-12
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["passed"] and on_disk["artifacts"].keys() == report["artifacts"].keys()


@pytest.mark.parametrize("name", MODELS)
def test_deploy_yaml_names_exactly_the_written_files(name, exported):
    out, _ = exported(name)
    spec = rsport.get(name)
    cfg = config.read(out)
    named = {"deploy.yaml", "export_report.json"}
    for key, entry in cfg.data["artifacts"].items():
        for role in ("model_file", "params_file", "info_file"):
            if role in entry:
                assert (out / entry[role]).is_file(), (key, entry[role])
                named.add(entry[role])
        for role, digest in entry["sha256"].items():
            assert rsport.io.sha256(out / entry[role]) == digest
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == named  # nothing unnamed (no model.pdmodel that is not there, no leftovers)
    assert cfg.channels == spec.in_channels and cfg.num_classes == spec.num_classes
    assert cfg.data["input"]["shape"] == [None, spec.in_channels, None, None]
    assert cfg.data["input"]["mean"] == list(spec.mean) and cfg.data["input"]["std"] == list(spec.std)
    assert cfg.data["output"] == {**cfg.data["output"], "op": "probabilities", "dtype": "float32"}
    assert len(cfg.palette) == len(cfg.data["output"]["classes"]) == spec.num_classes
    assert cfg.data["runtimes"]["paddle"] == {"artifact": "paddle_legacy", "engine": "onednn"}
    assert cfg.data["runtimes"]["paddle_openvino"]["engine"] == "openvino"
    assert cfg.data["runtimes"]["openvino"]["artifact"] == "onnx_torch"
    assert {entry["precision"] for entry in cfg.data["artifacts"].values()} == {"fp32"}
    assert "reduced_precision" not in cfg.data
    assert (out / "model.json").is_file() and (out / "legacy" / "model.pdmodel").is_file()


@pytest.mark.parametrize("name, shape", [
    ("factseg50", (3, 3, 128, 32)),
    # not a multiple of the patch (4): patch, window and odd-size merge padding in every stage
    ("swin_t_upernet", (3, 3, 70, 102)),
])
def test_reloaded_artifacts_agree_on_a_new_size(name, shape, exported):
    """Independent of the exporter's own report: every artifact on a size and batch it was not
    checked on, against the paddle twin built here from the same reference."""
    from deploy import runtime
    from paddle_impl import backend as pb
    from rsport import tolerances
    from rsport.compare import compare
    from rsport.fixtures import image_batch
    from rsport.reference import reference_arrays

    spec = rsport.get(name)
    out, _ = exported(name)
    pmodel = pb.build(spec, "tiny")
    pb.load_state(pmodel, reference_arrays(spec, "tiny", "paddle", pmodel))
    x = image_batch(spec, shape, seed=7)
    expected = pb.forward(pmodel, spec, x)["prob"]
    cfg = config.read(out)
    tol = tolerances.get(spec.tolerance)
    for key, entry in cfg.data["artifacts"].items():
        got = runtime.for_artifact(out, entry, threads=2)(x)
        diff = compare("prob", got, expected, tol)
        assert diff.passed, (key, diff)


def test_double_attributes_are_retyped_for_paddle2onnx(tmp_path):
    """paddle2onnx 2.1.0 rejects double interpolate scales and silently writes garbage as the Pad
    constant for a double pad3d pad_value (6.7e-43 for 0.0): both are retyped, values kept,
    other doubles left alone, and a value float32 cannot hold refused."""
    from deploy.paddle_export import retype_double_scales

    def program(pad_value):
        return {"ops": [
            {"#": "1.pad3d", "A": [{"AT": {"#": "0.a_str", "D": "constant"}, "N": "mode"},
                                   {"AT": {"#": "0.a_f64", "D": pad_value}, "N": "pad_value"}]},
            {"#": "1.bilinear_interp", "A": [{"N": "scale", "AT": {"#": "0.a_array", "D": [
                {"#": "0.a_f64", "D": 2.0}, {"#": "0.a_f64", "D": 4.0}]}}]},
            {"#": "1.scale", "A": [{"AT": {"#": "0.a_f64", "D": 0.1}, "N": "bias"}]}]}

    src, dst = tmp_path / "m.json", tmp_path / "p2o.json"
    src.write_text(json.dumps(program(0.0)))
    assert retype_double_scales(src, dst) == 3
    ops = json.loads(dst.read_text())["ops"]
    assert ops[0]["A"][1]["AT"] == {"#": "0.a_f32", "D": 0.0}
    assert ops[1]["A"][0]["AT"]["D"] == [{"#": "0.a_f32", "D": 2.0}, {"#": "0.a_f32", "D": 4.0}]
    assert ops[2]["A"][0]["AT"] == {"#": "0.a_f64", "D": 0.1}
    src.write_text(json.dumps(program(0.1)))
    with pytest.raises(ValueError, match="pad3d pad_value 0.1 is not exact in float32"):
        retype_double_scales(src, dst)


def test_export_from_paddle_weights_through_the_cli(tmp_path):
    """--weights .pdparams (converted back to torch for the torch ONNX), onnx only, via the CLI."""
    from paddle_impl import backend as pb
    from rsport.reference import reference_arrays

    spec = rsport.get("farseg50")
    pmodel = pb.build(spec, "tiny")
    weights = tmp_path / "farseg50_tiny.pdparams"
    pb.save_file(reference_arrays(spec, "tiny", "paddle", pmodel, seed=5), weights)
    out = tmp_path / "export"
    proc = run_cli("deploy/export.py", "farseg50", "--variant", "tiny", "--weights", weights, "--out", out,
                   "--format", "onnx")
    assert proc.returncode == 0, proc.stderr
    assert "onnx_paddle default" in proc.stdout and "FAIL" not in proc.stdout
    cfg = config.read(out)
    assert set(cfg.data["artifacts"]) == {"onnx_paddle", "onnx_torch"}
    assert cfg.data["weights"]["sha256"] == rsport.io.sha256(weights)
    assert set(cfg.data["runtimes"]) == {"onnxruntime", "openvino"}
    assert cfg.data["runtimes"]["onnxruntime"] == {"artifact": "onnx_paddle"}


def test_failed_parity_exits_1_and_writes_nothing(tmp_path, monkeypatch):
    """An artifact that disagrees with the dynamic model: ExportError with exit code 1, no output
    directory, an existing one left as it was, no staging leftovers. (The writers are replaced by
    a stub here: the real exports are covered above; this is the all-or-nothing logic.)"""
    from deploy import exporter

    def fake_write(pmodel, spec, stage, formats):
        (stage / "model.json").write_text("{}")
        return {"paddle_pir": exporter._artifact("paddle", "pir", "model.json")}, {}, {}

    def failing_check(stage, key, entry, inputs, expected, tol, threads):
        rows = [dict(__import__("rsport.compare", fromlist=["compare"]).compare("prob", e + np.float32(1e-3), e, tol)
                     .as_dict(), input=list(x.shape)) for x, e in zip(inputs, expected)]
        return {"onednn": {"passed": False, "fixtures": rows}}

    monkeypatch.setattr(exporter, "_write_paddle", fake_write)
    monkeypatch.setattr(exporter, "_check", failing_check)
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("previous export")
    with pytest.raises(exporter.ExportError) as err:
        exporter.export(rsport.get("factseg50"), out, variant="tiny", formats=("paddle",))
    assert err.value.exit_code == 1 and "paddle_pir (onednn)" in str(err.value) and "max_abs 0.001" in str(err.value)
    assert "nothing written" in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_export_into_an_existing_folder_keeps_other_files(tmp_path, monkeypatch):
    """PaddleSeg's TIPC runner exports into the training save dir (--out=SAVE_DIR): the trained
    weights and logs stay, a previous export there is replaced, including its files that the new
    export does not write. (Stub writers and checks, as above: this is the commit logic.)"""
    from deploy import exporter

    written = {"paddle_legacy": "legacy/model.pdmodel", "paddle_pir": "model.json"}

    def fake_write(pmodel, spec, stage, formats):
        artifacts = {}
        for key, path in written.items():
            (stage / path).parent.mkdir(exist_ok=True)
            (stage / path).write_text(key)
            artifacts[key] = exporter._artifact("paddle", key.split("_")[1], path)
        return artifacts, {}, {}

    monkeypatch.setattr(exporter, "_write_paddle", fake_write)
    monkeypatch.setattr(exporter, "_check", lambda *args: {"onednn": {"passed": True, "fixtures": []}})
    out = tmp_path / "norm_train_gpus_-1_autocast_fp32"
    training = {"model.pdparams": "trained", "train_log.jsonl": "log", "iter_40/model.pdparams": "checkpoint"}
    for path, text in training.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
    exporter.export(rsport.get("factseg50"), out, variant="tiny", formats=("paddle",))
    assert (out / "legacy" / "model.pdmodel").is_file() and set(config.read(out).data["artifacts"]) == set(written)
    del written["paddle_legacy"]
    exporter.export(rsport.get("factseg50"), out, variant="tiny", formats=("paddle",))
    assert set(config.read(out).data["artifacts"]) == {"paddle_pir"}
    assert sorted(p.name for p in out.iterdir()) == ["deploy.yaml", "export_report.json", "iter_40", "model.json",
                                                      "model.pdparams", "train_log.jsonl"]
    assert {path: (out / path).read_text() for path in training} == training
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no staging leftovers


@pytest.mark.parametrize("args, message", [
    (["nosuchmodel", "--out", "OUT"], "unknown model 'nosuchmodel'"),
    (["factseg50", "--out", "OUT", "--format", "onnx,tflite"], "unknown format"),
    (["factseg50", "--out", "OUT", "--weights", "missing.pth"], "no such weights file"),
])
def test_export_bad_input(tmp_path, args, message):
    proc = run_cli("deploy/export.py", *[str(tmp_path / a) if a in ("OUT", "missing.pth") else a for a in args])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "OUT").exists()


# --- streamed sliding window -------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [False, True], ids=["inline", "overlapped"])
@pytest.mark.parametrize("batch", [1, 3, 5])
@pytest.mark.parametrize("size, window, stride", [((301, 517), 128, 96), ((96, 64), 128, 96), ((260, 260), 100, 100)])
def test_streamed_scene_is_bit_identical_to_predict_scene(size, window, stride, batch, overlap):
    rng = np.random.default_rng(0)
    channels, classes = 3, 4
    image = rng.standard_normal((channels, *size)).astype(np.float32)
    weights = rng.standard_normal((classes, channels)).astype(np.float32)

    def predict(x):  # position-dependent, so a misplaced window changes the result
        z = np.einsum("kc,nchw->nkhw", weights, x) + 0.01 * np.cumsum(x, axis=3)[:, :1]
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    expected = predict_scene(image, predict, classes, window=window, stride=stride, batch=batch)
    got = np.full_like(expected, np.nan)
    blocks = []

    def emit(y0, y1, probs):
        got[:, y0:y1] = probs
        blocks.append((y0, y1))

    n = stream_scene(lambda y0, x0, y1, x1: image[:, y0:y1, x0:x1], *size, predict, classes, emit,
                     window=window, stride=stride, batch=batch, overlap=overlap)
    assert np.array_equal(got, expected)
    assert blocks[0][0] == 0 and blocks[-1][1] == size[0]
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))  # consecutive, each row once
    assert n == len(rsport.sliding.windows(*size, window, stride))


@pytest.mark.parametrize("name", ["factseg50", "vit_s16_upernet"])
def test_infer_geotiff_keeps_crs_and_transform_and_equals_predict_scene(name, exported, tmp_path):
    """GeoTIFF in -> class-id GeoTIFF with the same CRS and transform; the streamed, batched
    probabilities equal rsport.sliding.predict_scene on the whole scene with the same predictor."""
    from deploy import infer, runtime, sources

    spec = rsport.get(name)
    out_dir, _ = exported(name)
    raw = scene_for(spec, 150, 230)
    path = tmp_path / "scene.tif"
    write_geotiff(path, raw)
    results = infer.run(infer_args(out_dir, [path], tmp_path / "out", window=64, stride=40, batch=3, save_prob=True,
                                   backend="onnxruntime", artifact="onnx_torch"))
    assert results[0]["windows"] == len(rsport.sliding.windows(150, 230, 64, 40))
    with rasterio.open(tmp_path / "out" / "scene_class.tif") as ds:
        assert ds.crs == rasterio.crs.CRS.from_string(CRS) and ds.transform == TRANSFORM
        assert ds.dtypes == ("uint8",) and ds.shape == (150, 230)
        ids = ds.read(1)
    with rasterio.open(tmp_path / "out" / "scene_prob.tif") as ds:
        assert ds.count == spec.num_classes and ds.crs == rasterio.crs.CRS.from_string(CRS)
        probs = ds.read()
    cfg = config.read(out_dir)
    scene = sources.open_scene(path, cfg)
    whole = sources.make_reader(scene, cfg)(0, 0, 150, 230)  # the whole scene, normalized
    scene.close()
    predictor = runtime.for_artifact(out_dir, cfg.artifact("onnx_torch"), threads=2)
    expected = predict_scene(whole, predictor, spec.num_classes, window=64, stride=40, batch=3)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    assert np.array_equal(ids, expected.argmax(0))
    preview = __import__("cv2").imread(str(tmp_path / "out" / "scene_color.png"))
    assert preview.shape == (150, 230, 3)


def test_infer_cli_png_and_tta(exported, tmp_path):
    """A PNG through the CLI (paddle legacy + oneDNN): class-id PNG + preview; --tta is the mean of
    the identity and both flips of the same predictor."""
    import cv2

    from deploy import runtime, sources

    out_dir, _ = exported("factseg50")
    rgb = scene_for(rsport.get("factseg50"), 64, 96)
    cv2.imwrite(str(tmp_path / "tile.png"), rgb.transpose(1, 2, 0)[:, :, ::-1])
    proc = run_cli("deploy/infer.py", "--model_dir", out_dir, "--image_path", tmp_path / "tile.png",
                   "--save_dir", tmp_path / "plain", "--cpu_threads", "2", "--enable_mkldnn", "true", "--save-prob")
    assert proc.returncode == 0, proc.stderr
    assert "tile.png: 64x96, 1 windows" in proc.stdout
    ids = cv2.imread(str(tmp_path / "plain" / "tile_class.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint8 and ids.shape == (64, 96) and ids.max() < 16
    proc = run_cli("deploy/infer.py", "--model-dir", out_dir, "--input", tmp_path / "tile.png",
                   "--out", tmp_path / "tta", "--tta", "--save-prob")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "tta" / "tile_prob.tif") as ds:
        tta = ds.read()
    with rasterio.open(tmp_path / "plain" / "tile_prob.tif") as ds:
        plain = ds.read()
    cfg = config.read(out_dir)
    scene = sources.open_scene(tmp_path / "tile.png", cfg)
    x = sources.make_reader(scene, cfg)(0, 0, 64, 96)[None]
    predictor = runtime.for_artifact(out_dir, cfg.artifact("paddle_legacy"), threads=2)
    np.testing.assert_allclose(plain, predictor(x)[0], atol=1e-6)
    expected = (predictor(x) + predictor(x[..., ::-1].copy())[..., ::-1]
                + predictor(x[..., ::-1, :].copy())[..., ::-1, :]) / 3
    np.testing.assert_allclose(tta, expected[0], atol=1e-6)
    np.testing.assert_allclose(flip_tta(predictor)(x), expected, atol=1e-6)
    assert np.abs(tta - plain).max() > 1e-4  # the flips do change something
    for backend in ("paddle_openvino", "openvino"):  # Paddle Inference's OpenVINO engine; the OpenVINO runtime
        proc = run_cli("deploy/infer.py", "--model-dir", out_dir, "--input", tmp_path / "tile.png",
                       "--out", tmp_path / backend, "--backend", backend, "--save-prob")
        assert proc.returncode == 0, proc.stderr
        with rasterio.open(tmp_path / backend / "tile_prob.tif") as ds:
            np.testing.assert_allclose(ds.read(), plain, atol=1e-4)  # fp32 both


# --- bad input ---------------------------------------------------------------------------------
def _bad_model_dirs(root, exported_dir):
    empty = root / "empty"
    empty.mkdir()
    missing = root / "missing_file"
    shutil.copytree(exported_dir, missing)
    (missing / "legacy" / "model.pdmodel").unlink()
    garbled = root / "garbled"
    garbled.mkdir()
    (garbled / "deploy.yaml").write_text("model: [unclosed\n")
    return {"no deploy.yaml": (empty, "no deploy.yaml"),
            "missing file": (missing, "names legacy/model.pdmodel, which is missing"),
            "not yaml": (garbled, "not valid YAML")}


@pytest.mark.parametrize("case", ["no deploy.yaml", "missing file", "not yaml", "wrong channels", "gray png",
                                  "unreadable", "16-bit tiff", "missing input", "out is a file"])
def test_infer_bad_input(case, exported, tmp_path):
    out_dir, _ = exported("factseg50")
    good = tmp_path / "good.tif"
    write_geotiff(good, scene_for(rsport.get("factseg50"), 40, 40))
    model_dirs = _bad_model_dirs(tmp_path, out_dir)
    inputs, model_dir = [good], out_dir
    if case in model_dirs:
        model_dir, message = model_dirs[case]
    elif case == "wrong channels":
        inputs.append(tmp_path / "sar.tif")
        write_geotiff(inputs[-1], scene_for(rsport.get("vit_s16_upernet"), 40, 40))
        message = "2 channels, but factseg50 takes 3"
    elif case == "gray png":
        import cv2
        inputs.append(tmp_path / "gray.png")
        cv2.imwrite(str(inputs[-1]), np.zeros((40, 40), np.uint8))
        message = "1 channel, but factseg50 takes 3"
    elif case == "unreadable":
        inputs.append(tmp_path / "broken.png")
        inputs[-1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
        message = "broken.png: cannot decode image"
    elif case == "16-bit tiff":
        inputs.append(tmp_path / "deep.tif")
        write_geotiff(inputs[-1], np.zeros((3, 40, 40), np.uint16))
        message = "uint16 values, but factseg50 takes 8-bit RGB"
    elif case == "missing input":
        inputs.append(tmp_path / "nowhere.tif")
        message = "nowhere.tif: no such file or folder"
    out = tmp_path / "out"
    if case == "out is a file":
        out.write_text("an earlier note\n")
        message = f"--out {out} is a file, not a folder"
    proc = run_cli("deploy/infer.py", "--model-dir", model_dir, "--input", *inputs, "--out", out)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
    assert sum(line.startswith("error: ") for line in lines) == 1 and "Traceback" not in proc.stderr
    if case == "out is a file":
        assert out.read_text() == "an earlier note\n"
    else:
        assert not out.exists() or not any(out.iterdir())  # nothing written, not even for good.tif


def test_infer_takes_paddleseg_spellings(capsys):
    """What PaddleSeg's TIPC runner passes: --config DIR/deploy.yaml, --device cpu, --precision fp32."""
    from deploy import infer

    common = ["--image_path", "a.png", "--save_dir", "out", "--cpu_threads=1", "--enable_mkldnn=False"]
    args = infer.parse(["--config=exp//deploy.yaml", "--device=cpu", "--precision=fp32", *common])
    assert (args.model_dir, args.device, args.precision) == ([Path("exp")], "cpu", "fp32")
    assert (args.threads, args.enable_mkldnn) == (1, False)
    assert infer.parse(["--model_dir", "exp", *common]).model_dir == [Path("exp")]
    for bad in (["--device", "gpu"], ["--precision", "fp16"]):
        with pytest.raises(SystemExit):
            infer.parse(["--config", "exp", *common, *bad])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["paddle", "onnxruntime", "openvino", "paddle_openvino"])
def test_ensemble_of_two_models_averages_their_logits(backend, exported, tmp_path):
    """The NAIC ensemble: two exported models (factseg50 and upernet_r50, the second with its own
    normalization: its deploy.yaml mean shifted) on the same windows. The ensemble's probabilities
    equal softmax of the mean of the two single runs' log-probabilities (the logits' mean: the
    per-pixel logsumexp cancels), and its class map is their argmax."""
    import cv2

    first, _ = exported("factseg50")
    second = tmp_path / "upernet_shifted"
    shutil.copytree(exported("upernet_r50")[0], second)
    data = yaml.safe_load((second / "deploy.yaml").read_text())
    data["input"]["mean"] = [m + 10.0 for m in data["input"]["mean"]]
    (second / "deploy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    rgb = scene_for(rsport.get("factseg50"), 64, 96)
    cv2.imwrite(str(tmp_path / "tile.png"), rgb.transpose(1, 2, 0)[:, :, ::-1])
    probs = {}
    for label, dirs in (("a", [first]), ("b", [second]), ("ensemble", [first, second])):
        proc = run_cli("deploy/infer.py", "--model-dir", *dirs, "--input", tmp_path / "tile.png", "--out",
                       tmp_path / label, "--backend", backend, "--window", "128", "--stride", "128", "--save-prob")
        assert proc.returncode == 0, proc.stderr[-2000:]
        with rasterio.open(tmp_path / label / "tile_prob.tif") as ds:
            probs[label] = ds.read().astype(np.float64)
    scores = (np.log(probs["a"]) + np.log(probs["b"])) / 2
    expected = np.exp(scores - scores.max(axis=0)) / np.exp(scores - scores.max(axis=0)).sum(axis=0)
    np.testing.assert_allclose(probs["ensemble"], expected, atol=2e-6)
    assert not np.allclose(probs["ensemble"], probs["a"], atol=1e-3)   # both models contribute
    ids = cv2.imread(str(tmp_path / "ensemble" / "tile_class.png"), cv2.IMREAD_UNCHANGED)
    agree = (ids == expected.argmax(axis=0)).mean()
    assert agree >= 0.999


def test_ensemble_members_must_match(exported, tmp_path):
    """A 2-channel SAR model cannot join an RGB one: one error line, nothing written."""
    proc = run_cli("deploy/infer.py", "--model-dir", exported("factseg50")[0], exported("vit_s16_upernet")[0],
                   "--input", tmp_path / "none.png", "--out", tmp_path / "out")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "ensemble" in errors[0], proc.stderr[-1000:]
    assert not (tmp_path / "out").exists()


def test_registry_models_all_have_a_reader():
    """deploy.yaml's reader is derived from the dataset: every registered dataset must map."""
    from deploy.exporter import deploy_yaml

    for name in MODELS:
        spec = rsport.get(name)
        data = deploy_yaml(spec, "tiny", {}, {"kind": "test"})
        assert data["input"]["reader"] == {"isaid": "rgb8", "sen12ms_s1": "s1_db"}[spec.dataset]
        assert yaml.safe_load(yaml.safe_dump(data)) == data
