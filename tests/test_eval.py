"""torch_ref/eval.py and paddle_impl/eval.py: the metric definitions, the same numbers from every
metric code (numpy, torch, paddle, paddleseg), identical reports from both trees on converted
weights, and one `error:` line for bad input."""
import json

import numpy as np
import pytest

import rsport
from rsport import data, evaluation
from tests.conftest import ROOT, run_cli, write_torch_checkpoint

SPEC = rsport.get("factseg50")
TREES = {"torch": "torch_ref/eval.py", "paddle": "paddle_impl/eval.py"}
METRICS = ("miou", "miou_fg", "oa", "kappa", "mf1", "iou", "f1", "precision", "recall", "confusion", "pixels")


def test_metric_definitions_by_hand():
    # rows = label, columns = prediction; class 2 never occurs
    cm = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    found = evaluation.summarize(cm)
    np.testing.assert_allclose(found["iou"][:2], [5 / 8, 2 / 5])
    np.testing.assert_allclose(found["f1"][:2], [10 / 13, 4 / 7])
    np.testing.assert_allclose(found["precision"][:2], [5 / 7, 2 / 3])
    np.testing.assert_allclose(found["recall"][:2], [5 / 6, 2 / 4])
    assert np.isnan(found["iou"][2]) and np.isnan(found["f1"][2])
    assert found["miou"] == pytest.approx((5 / 8 + 2 / 5) / 2) and found["miou_fg"] == pytest.approx(2 / 5)
    assert found["mf1"] == pytest.approx((10 / 13 + 4 / 7) / 2)
    pe = (6 * 7 + 4 * 3) / 100
    assert found["oa"] == pytest.approx(0.7) and found["kappa"] == pytest.approx((0.7 - pe) / (1 - pe))
    doc = evaluation.report(cm, ["a", "b", "c"], {})
    assert doc["iou"][2] is None and doc["pixels"] == 10
    table = evaluation.format_table(doc)
    assert "62.50" in table and "| 2 c" in table


@pytest.mark.parametrize("tree", TREES)
def test_framework_metric_twins_equal_the_definition(tree):
    """The frameworks' metrics.py (confusion matrix and summaries) give the numbers of
    rsport/evaluation.py on the same predictions."""
    backend = pytest.importorskip(f"{'torch_ref' if tree == 'torch' else 'paddle_impl'}.backend")
    rng = np.random.default_rng(0)
    label = rng.integers(0, 6, (3, 40, 40))
    label[:, :4] = 255
    pred = np.where(rng.random(label.shape) < 0.6, label % 6, rng.integers(0, 6, label.shape))
    pred[pred == 5] = 4                                           # class 5 never predicted
    cm = evaluation.confusion_matrix(pred, label, 6, 255)
    np.testing.assert_array_equal(backend.confusion(pred, label, 6, 255), cm)
    ours, theirs = evaluation.summarize(cm), backend.metrics(pred, label, 6, 255)
    np.testing.assert_array_equal(theirs["confusion"], cm)
    for key in ("iou", "miou", "miou_fg", "oa", "kappa"):
        np.testing.assert_allclose(theirs[key], ours[key], rtol=1e-15, atol=0, err_msg=key)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny embedded torch reference and its paddle conversion, by the converter CLI."""
    folder = tmp_path_factory.mktemp("weights")
    proc = run_cli("convert/torch2paddle.py", "factseg50", "--variant", "tiny", "--dst", folder / "f.pdparams",
                   cwd=folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"torch": write_torch_checkpoint("factseg50", folder / "output" / "weights" / "factseg50_tiny_reference.safetensors",
                                            folder / "f.pth"), "paddle": folder / "f.pdparams"}


@pytest.fixture(scope="module")
def reports(converted, tmp_path_factory):
    root = data.ensure_samples(ROOT / data.SAMPLE_ROOT) / SPEC.dataset
    folder = tmp_path_factory.mktemp("eval")
    out = {}
    for tree, script in TREES.items():
        proc = run_cli(script, "--model", "factseg50", "--variant", "tiny", "--weights", converted[tree], "--data",
                       root, "--window", "160", "--stride", "96", "--threads", "1", "--out", folder / f"{tree}.json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[tree] = {"proc": proc, "doc": json.loads((folder / f"{tree}.json").read_text())}
    return out


def test_both_trees_report_the_same_metrics(reports):
    """The same weights, scenes and windows in both trees. float32 near-ties may flip a handful of
    pixels between the frameworks (the alignment's metric step proves each flip is a near-tie): at
    most 0.01% of the pixels may move, and the metrics agree to that."""
    torch_doc, paddle_doc = reports["torch"]["doc"], reports["paddle"]["doc"]
    moved = np.abs(np.asarray(torch_doc["confusion"]) - np.asarray(paddle_doc["confusion"])).sum() / 2
    assert moved <= 1e-4 * torch_doc["pixels"], moved
    for key in ("miou", "oa", "kappa"):
        assert paddle_doc[key] == pytest.approx(torch_doc[key], abs=1e-3), key
    assert torch_doc["scenes"] == 3 and torch_doc["pixels"] > 100_000
    assert len(np.nonzero(np.asarray(torch_doc["confusion"]).sum(0))[0]) >= 2      # not a constant prediction


def test_report_is_consistent_and_printed(reports):
    doc = reports["torch"]["doc"]
    assert doc["classes"][:2] == ["background", "ship"] and doc["config"]["window"] == 160
    recomputed = evaluation.report(np.asarray(doc["confusion"]), doc["classes"], {})
    assert {k: recomputed[k] for k in METRICS} == {k: doc[k] for k in METRICS}
    stdout = reports["torch"]["proc"].stdout
    assert "| 1 ship" in stdout and "mIoU %" in stdout and f"mIoU {100 * doc['miou']:.2f}" in stdout
    assert "eval factseg50" in reports["torch"]["proc"].stderr                     # the progress bar


def test_paddle_tree_cross_checks_paddleseg(reports):
    found = reports["paddle"]["doc"]["paddleseg"]
    assert found["agrees"] and found["max_abs_diff"] <= 1e-12
    assert found["kappa"] == pytest.approx(reports["paddle"]["doc"]["kappa"], abs=1e-12)
    absent = [i for i, v in enumerate(reports["paddle"]["doc"]["iou"]) if v is None]
    if absent:   # paddleseg averages absent classes in as 0
        assert found["miou_absent_as_zero"] < reports["paddle"]["doc"]["miou"]


BAD = {
    "missing weights": (["--weights", "{tmp}/none.pth"], "error: --weights {tmp}/none.pth: no such file"),
    "corrupt weights": (["--weights", "{tmp}/junk.pdparams"], "error: {tmp}/junk.pdparams is not a readable"),
    "missing data folder": (["--data", "{tmp}/nowhere"], "error: --data {tmp}/nowhere: no such folder"),
    "unknown model": (["--model", "facseg50"], "error: unknown model 'facseg50'; known: factseg50"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line(case, tmp_path):
    tree = "paddle" if case == "corrupt weights" else "torch"
    (tmp_path / "junk.pdparams").write_bytes(b"not a checkpoint")
    flags, expected = BAD[case]
    model = [] if case == "unknown model" else ["--model", "factseg50"]
    proc = run_cli(TREES[tree], *model, "--variant", "tiny", "--out", tmp_path / "m.json",
                   *[f.format(tmp=tmp_path) for f in flags])
    lines = [line for line in proc.stderr.strip().splitlines() if not line.lstrip().startswith(("warnings.warn", "/"))]
    assert proc.returncode == 2 and lines[-1].startswith(expected.format(tmp=tmp_path)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout == "" and not (tmp_path / "m.json").exists()
