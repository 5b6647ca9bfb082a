"""Rename rules as data and the checked bijection, independent of any model."""
import numpy as np
import pytest

from rsport.rules import COMMON_RULES, PADDLE, TORCH, Rule, TensorSpec, apply_plan, format_report, make_plan


def spec(shape, layer="Conv", leaf="weight", dtype="float32"):
    return TensorSpec(tuple(shape), dtype, layer, leaf)


def test_templates_are_anchored_and_invertible():
    rule = Rule("r", "{p}.fpn_inner{k:int}.{t}", "{p}.inner_blocks.{k:int}.{t}", offsets=(("k", -1),))
    groups = rule.match("fgfpn.fpn_inner1.weight", TORCH)
    assert rule.render(groups, PADDLE) == "fgfpn.inner_blocks.0.weight"
    back = rule.match("fgfpn.inner_blocks.0.weight", PADDLE)
    assert rule.render(back, TORCH) == "fgfpn.fpn_inner1.weight"
    assert rule.match("xfpn_inner1.weight", TORCH) is None  # needs the dot: anchored, not a substring
    assert Rule("bn", "{p}.running_mean", "{p}._mean").match("a.running_mean_x", TORCH) is None


def test_rule_validation():
    with pytest.raises(ValueError, match="fill"):
        Rule("x", "{p}.a", None)
    with pytest.raises(ValueError, match="placeholders"):
        Rule("x", "{p}.a", "{q}.a")


def test_bn_buffers_and_step_counter_both_ways():
    torch_keys = {"bn.weight": ((4,), "float32"), "bn.running_mean": ((4,), "float32"),
                  "bn.running_var": ((4,), "float32"), "bn.num_batches_tracked": ((), "int64")}
    paddle_target = {"bn.weight": spec([4], "BatchNorm"), "bn._mean": spec([4], "BatchNorm", "_mean"),
                     "bn._variance": spec([4], "BatchNorm", "_variance")}
    plan = make_plan(torch_keys, paddle_target, COMMON_RULES, TORCH)
    assert plan.ok and plan.dropped == [("bn.num_batches_tracked", "bn_num_batches_tracked")]
    assert {m.source: m.target for m in plan.mappings} == {
        "bn.weight": "bn.weight", "bn.running_mean": "bn._mean", "bn.running_var": "bn._variance"}
    torch_target = {k: spec(s, "BatchNorm", k.rpartition(".")[2], d) for k, (s, d) in torch_keys.items()}
    back = make_plan({k: (v.shape, v.dtype) for k, v in paddle_target.items()}, torch_target, COMMON_RULES, PADDLE)
    assert back.ok and back.recreated == [("bn.num_batches_tracked", "bn_num_batches_tracked")]
    arrays = {k: np.full(v.shape, 1.5, dtype=np.float32) for k, v in paddle_target.items()}
    out = apply_plan(back, arrays, torch_target, COMMON_RULES)
    assert out["bn.num_batches_tracked"].dtype == np.int64 and out["bn.num_batches_tracked"].shape == ()
    restored = apply_plan(back, arrays, torch_target, COMMON_RULES, restore={"bn.num_batches_tracked": 60000})
    assert int(restored["bn.num_batches_tracked"]) == 60000


def test_linear_transpose_is_decided_by_target_layer_type_not_name():
    source = {"conv.weight": ((8, 4), "float32"), "fc.weight": ((8, 4, 1, 1), "float32")}
    target = {"conv.weight": spec([4, 8], "Linear"), "fc.weight": spec([8, 4, 1, 1], "Conv")}
    plan = make_plan(source, target, COMMON_RULES, TORCH)
    assert plan.ok
    ops = {m.source: m.op for m in plan.mappings}
    assert ops == {"conv.weight": "transpose", "fc.weight": None}
    value = np.arange(32, dtype=np.float32).reshape(8, 4)
    out = apply_plan(plan, {"conv.weight": value, "fc.weight": np.zeros((8, 4, 1, 1), np.float32)}, target,
                     COMMON_RULES)
    np.testing.assert_array_equal(out["conv.weight"], value.T)
    back = make_plan({k: (v.shape, v.dtype) for k, v in target.items()},
                     {"conv.weight": spec([8, 4], "Linear"), "fc.weight": spec([8, 4, 1, 1], "Conv")},
                     COMMON_RULES, PADDLE)
    np.testing.assert_array_equal(apply_plan(back, out, {"conv.weight": spec([8, 4], "Linear"),
                                                         "fc.weight": spec([8, 4, 1, 1], "Conv")},
                                             COMMON_RULES)["conv.weight"], value)


def test_problems_are_collected_not_raised_one_by_one():
    source = {"a.weight": ((3,), "float32"), "b.weight": ((5,), "float32"), "zzz": ((1,), "float32"),
              "c.weight": ((2,), "float64")}
    target = {"a.weight": spec([3]), "b.weight": spec([4]), "c.weight": spec([2]), "d.weight": spec([1])}
    plan = make_plan(source, target, COMMON_RULES, TORCH)
    assert not plan.ok
    assert plan.missing == [("d.weight", "d.weight")]
    assert plan.unexpected == [("zzz", "zzz", "same_name")]
    assert [(m[0], m[2], m[3]) for m in plan.mismatched] == [
        ("b.weight", "(5,) float32", "(4,) float32"), ("c.weight", "(2,) float64", "(2,) float32")]
    report = format_report(plan, "title")
    assert report.startswith("title: 1 missing, 1 unexpected, 2 shape/dtype mismatches, 0 conflicts")
    assert "b.weight -> b.weight: source (5,) float32, target (4,) float32  [rule same_name]" in report
    with pytest.raises(ValueError):
        apply_plan(plan, {}, target, COMMON_RULES)


def test_two_sources_for_one_target_is_a_conflict():
    rules = (Rule("alias", "{p}.w_old", "{p}.w"),) + COMMON_RULES
    plan = make_plan({"a.w_old": ((1,), "float32"), "a.w": ((1,), "float32")}, {"a.w": spec([1])}, rules, TORCH)
    assert plan.conflicts == [("a.w", ["a.w_old", "a.w"])] and not plan.ok


def test_ignore_patterns_are_anchored_and_reported():
    plan = make_plan({"fc.weight": ((2, 2), "float32"), "x.fc.weight": ((1,), "float32")},
                     {"x.fc.weight": spec([1])}, COMMON_RULES, TORCH, ignore=(r"fc\..*",))
    assert plan.ok and plan.ignored == [("fc.weight", r"fc\..*")]


def test_repeated_placeholder_must_match_the_same_text():
    rule = Rule("r", "stage{s:int}.{m:int}.w", "st{s:int}.stage_st{s:int}_{m:int}.w", offsets=(("m", 1),))
    assert rule.render(rule.match("st3.stage_st3_2.w", PADDLE), TORCH) == "stage3.1.w"
    assert rule.match("st3.stage_st4_2.w", PADDLE) is None
    assert rule.render(rule.match("stage4.0.w", TORCH), PADDLE) == "st4.stage_st4_1.w"


def test_fold_absorbs_a_conv_bias_into_the_next_batchnorm_and_export_recreates_it():
    from rsport.rules import Fold, Naming, apply_naming, export_naming

    naming = Naming(rules=(Rule("prefix", "{p}", "net.{p}"),), folds=(Fold("net.conv.bias", "net.bn.running_mean"),),
                    note="a foreign model")
    foreign = {"net.conv.weight": np.ones((3, 2, 1, 1), np.float32), "net.conv.bias": np.array([1, 2, 3], np.float32),
               "net.bn.running_mean": np.array([0.5, 0.5, 0.5], np.float32)}
    native, notes = apply_naming(foreign, naming)
    assert sorted(native) == ["bn.running_mean", "conv.weight"]
    np.testing.assert_array_equal(native["bn.running_mean"], [-0.5, -1.5, -2.5])
    assert notes[0] == "a foreign model" and any("folded 1 conv biases" in n for n in notes)
    back = export_naming(native, naming)
    assert sorted(back) == sorted(foreign)
    np.testing.assert_array_equal(back["net.conv.bias"], [0, 0, 0])
    np.testing.assert_array_equal(back["net.bn.running_mean"], native["bn.running_mean"])
