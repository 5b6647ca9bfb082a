"""The alignment harness: a clean run passes and writes its reports; every injected porting
mistake fails the right step and names the right place (tiny variants, float64 unless noted)."""
import dataclasses
import json

import numpy as np
import paddle
import pytest

import rsport
from align import run_all
from rsport.alignment import steps
from rsport.alignment.context import STEPS, Context
from tests.conftest import MODELS


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("align")
    code = run_all.main(["--variant", "tiny", "--out", str(out), "--threads", "1"])
    return code, out


def test_clean_run_passes_and_writes_reports(clean_run):
    code, out = clean_run
    assert code == 0
    combined = json.loads((out / "report.json").read_text())
    assert combined["passed"] is True and len(combined["reports"]) == 2
    for report in combined["reports"]:
        assert report["passed"] is True and report["dtype"] in ("float32", "float64")
        for name in MODELS:
            entry = report["models"][name]
            assert entry["passed"] and list(entry["steps"]) == list(STEPS)
            for step in entry["steps"].values():
                assert set(step) >= {"passed", "max_abs", "max_rel", "first_divergence"}
                assert step["first_divergence"] is None
    f64 = next(r for r in combined["reports"] if r["dtype"] == "float64")
    for name in MODELS:  # the float64 proof: forward, loss, backward and the loss curve within 1e-10
        for step in ("forward", "loss", "backward", "optimizer"):
            assert f64["models"][name]["steps"][step]["max_abs"] <= 1e-10
    assert "| factseg50 | float64 | backward |" in (out / "report.md").read_text()
    assert (out / "taps_factseg50.png").stat().st_size > 0


def test_results_are_reprod_log_files(clean_run):
    """Users can load our files with reprod_log's own helper."""
    from reprod_log import ReprodDiffHelper

    _, out = clean_run
    helper = ReprodDiffHelper()
    torch_info = helper.load_info(str(out / "factseg50" / "float64" / "forward_torch.npy"))
    paddle_info = helper.load_info(str(out / "factseg50" / "float64" / "forward_paddle.npy"))
    assert set(torch_info) == set(paddle_info) == {"prob"}
    log = (out / "factseg50" / "float64" / "backward_diff.log").read_text()
    assert "max diff: check passed: True" in log and log.rstrip().endswith("diff check passed")


def test_fixtures_are_created_once_and_reused(clean_run):
    _, out = clean_run
    files = sorted((out / "fixtures" / "factseg50" / "float32").glob("*.npy"))
    assert files
    before = {f: f.stat().st_mtime_ns for f in files}
    run_all.main(["--variant", "tiny", "--out", str(out), "--models", "factseg50", "--steps", "data",
                  "--dtype", "float32", "--threads", "1"])
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert run_all.main(["--models", "facseg50", "--out", str(tmp_path)]) == 2
    assert "unknown model 'facseg50'; known: factseg50" in capsys.readouterr().err
    assert run_all.main(["--steps", "forwrd", "--out", str(tmp_path)]) == 2


# ---- the injected-bug catalogue -------------------------------------------------------------

def context(tmp_path, mutate=None, dtype="float64", spec=None):
    return Context.for_spec(spec or rsport.get("factseg50"), dtype, tmp_path, variant="tiny", mutate_paddle=mutate)


def test_bn_epsilon_changed_in_one_layer(tmp_path):
    def bug(model):
        model.fg_decoder.blocks[0][0][1]._epsilon = 1e-3

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "fg_decoder.blocks.0.0.1"
    assert result.details["cause"].startswith("epsilon: 0.001 on the paddle side where torch's 1e-05")


def test_align_corners_flipped_in_one_decoder(tmp_path):
    def bug(model):
        model.fg_decoder.blocks[1][0][3].align_corners = False

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "fg_decoder.blocks.1.0.3"
    assert result.details["cause"].startswith("align_corners=False on the paddle side, True in torch")


def test_forgotten_bn_buffer(tmp_path):
    """A converter that skips BN statistics leaves paddle's defaults (mean 0, var 1)."""
    def bug(model):
        bn = model.resencoder.resnet.bn1
        bn._mean.set_value(np.zeros(bn._mean.shape, "float64"))
        bn._variance.set_value(np.ones(bn._variance.shape, "float64"))

    result = steps.forward(context(tmp_path, bug))
    assert not result.passed and result.first_divergence == "resencoder.resnet.bn1"
    assert result.details["cause"].startswith("BatchNorm running statistics not loaded")


@pytest.mark.parametrize("name", MODELS)
def test_bn_momentum_not_reversed(tmp_path, name):
    """Copying torch's 0.1 into paddle (as PaddleRS's FarSeg does) is invisible in eval and in
    train-mode outputs; only the running statistics after training differ, which the train step
    compares: it names the first BatchNorm the network calls."""
    def bug(model):
        for layer in model.sublayers():
            if isinstance(layer, paddle.nn.BatchNorm2D):
                layer._momentum = 0.1

    ctx = context(tmp_path, bug, spec=rsport.get(name))
    tmodel, _ = ctx.models()
    layers = dict(tmodel.named_modules())
    first_bn = next(n for n in ctx.call_order() if ctx.tb.layer_type(layers[n]) == "BatchNorm")
    assert steps.forward(ctx).passed and steps.loss(ctx).passed
    result = steps.train(ctx)
    assert not result.passed and result.first_divergence == f"{first_bn}._mean"
    assert result.details["cause"].startswith("BatchNorm momentum (paddle = 1 - torch): 0.1 on the paddle side")


def test_per_tensor_instead_of_global_grad_clip(tmp_path, monkeypatch):
    import paddle_impl.recipe as precipe

    def per_tensor(params, max_norm):
        with paddle.no_grad():
            for p in params:
                norm = paddle.linalg.norm(p.grad.flatten())
                p.grad.multiply_(paddle.clip(max_norm / (norm + 1e-6), max=1.0))

    monkeypatch.setattr(precipe, "clip_grad_norm_", per_tensor)
    ctx = context(tmp_path)
    result = steps.optimizer(ctx)
    assert not result.passed
    assert result.first_divergence == ctx.call_order()[0] + ".weight"  # the first layer already differs


@pytest.mark.parametrize("wrong", [0, -100])
def test_wrong_ignore_index_in_the_loss(tmp_path, monkeypatch, wrong):
    ctx = context(tmp_path)
    from paddle_impl.models.factseg import JointLoss

    monkeypatch.setattr(ctx.pb, "build_loss", lambda spec: JointLoss(ignore_index=wrong))
    result = steps.run_step(ctx, "loss")  # as run_all runs it: a crashing twin is a failed step
    # the 255 pixels are no longer ignored and paddle refuses them as out-of-range classes;
    # the place named is the loss call in the paddle twin
    assert not result.passed and "label should not be out of bounds" in result.error
    assert result.first_divergence.startswith("paddle_impl/models/factseg.py:")
    assert result.first_divergence.endswith("(forward)")


def test_batch_fusion_bug(tmp_path, monkeypatch):
    """The original's fusion (sum without keepdim) at batch 2 with 2 classes runs silently and
    is wrong; the heads agree, so the place named is the fusion after the last tap."""
    import paddle_impl.models.factseg as pfactseg

    def original_fusion(fg_logit, bi_logit):
        fg_prob = paddle.nn.functional.sigmoid(bi_logit)
        cls_prob = paddle.nn.functional.softmax(fg_logit, axis=1)
        joint = paddle.concat([cls_prob[:, :1] * (1 - fg_prob), cls_prob[:, 1:] * fg_prob], axis=1)
        return joint / joint.sum(axis=1)

    monkeypatch.setattr(pfactseg, "joint_probability", original_fusion)
    base = rsport.get("factseg50")
    spec = dataclasses.replace(base, num_classes=2, tiny_kwargs={**base.tiny_kwargs, "num_classes": 2})
    result = steps.forward(context(tmp_path, spec=spec))
    assert not result.passed and result.first_divergence.startswith("output:prob ((root) forward")


def test_frozen_parameter_is_named_by_backward(tmp_path):
    """A parameter that lost its trainable flag in the port: forward and loss agree, backward
    names exactly that parameter."""
    def bug(model):
        model.fgfpn.fpn_inner2.weight.stop_gradient = True

    ctx = context(tmp_path, bug)
    assert steps.forward(ctx).passed and steps.loss(ctx).passed
    result = steps.backward(ctx)
    assert not result.passed and result.first_divergence == "fgfpn.fpn_inner2.weight"
    assert [r.name for r in result.rows if not r.passed] == ["fgfpn.fpn_inner2.weight", "fgfpn.fpn_inner2.weight@96x64"]


def test_our_diff_logs_never_pass_nan_where_reprod_log_does(tmp_path):
    """reprod_log 1.0.1's ReprodDiffHelper says "passed" for a NaN result (nan > threshold is False);
    our verdict fails it, and our diff log says so, under a note that warns about reprod_log."""
    from reprod_log import ReprodDiffHelper, ReprodLogger

    from rsport.alignment.context import REPROD_LOG_NOTE, StepResult
    from rsport.compare import compare
    from rsport.tolerances import get

    good, bad = np.ones(4), np.array([1.0, np.nan, 1.0, 1.0])
    for name, value in (("torch", good), ("paddle", bad)):
        logger = ReprodLogger()
        logger.add("out", value)
        logger.save(str(tmp_path / f"{name}.npy"))
    helper = ReprodDiffHelper()
    helper.compare_info(helper.load_info(str(tmp_path / "torch.npy")), helper.load_info(str(tmp_path / "paddle.npy")))
    helper.report(path=str(tmp_path / "reprod_diff.log"))
    assert "diff check passed" in (tmp_path / "reprod_diff.log").read_text()  # the defect, pinned

    ctx = context(tmp_path)
    result = StepResult.from_rows("forward", [compare("out", bad, good, get("fp64"))])
    ctx.write_diff_log(result)
    log = (ctx.dir / "forward_diff.log").read_text()
    assert not result.passed and REPROD_LOG_NOTE in log
    assert "check passed: False" in log and log.rstrip().endswith("diff check failed")
