"""Checkpoint layouts (rsport/checkpoint.py through rsport/weights.read_source and load_for) and the
output-path helpers (rsport/io.py), in-process and fast. The command-line behaviour on bad input
is tests/test_bad_input.py."""
import errno
import os

import numpy as np
import pytest
import torch

import rsport
from rsport import checkpoint, weights
from rsport.checkpoint import CheckpointError, closest, key_pattern, unwrap
from rsport.frameworks import adapter
from rsport.io import OutputError, Staged, check_output

SPEC = rsport.get("factseg50")


def is_tensor(value):
    return isinstance(value, torch.Tensor)


@pytest.fixture(scope="module")
def state():
    return adapter("torch").build(SPEC, "tiny").state_dict()


def test_plain_state_dict_is_taken_as_is(state):
    got, notes = unwrap(dict(state), is_tensor)
    assert list(got) == list(state) and notes == []


LAYOUTS = {  # name -> (checkpoint from a state dict, the entry that must be taken, a word of the notes)
    "simplecv (published factseg50.pth)": (
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "opt": {"lr": 0.007}, "global_step": 60000},
        "model", "set aside: opt (dict), global_step (int)"),
    "issue 15: best_miou beside the weights": (
        lambda sd: {"model": sd, "best_miou": torch.tensor(0.5)}, "model", "best_miou (0-d tensor)"),
    "mmseg / mmcv": (
        lambda sd: {"meta": {"epoch": 1}, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
        "state_dict", "set aside: meta (dict), optimizer (dict)"),
    "timm with EMA": (
        lambda sd: {"state_dict": sd, "state_dict_ema": sd, "epoch": 3, "arch": "x"},
        "state_dict_ema", "took the EMA weights {'state_dict_ema': ...} over state_dict"),
    "torchvision references with EMA": (
        lambda sd: {"model": sd, "model_ema": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}},
        "model_ema", "took the EMA weights {'model_ema': ...}"),
    "mmengine EMAHook (swapped on saving)": (
        lambda sd: {"meta": {}, "state_dict": sd, "message_hub": {},
                    "ema_state_dict": {"steps": torch.tensor(9), **{f"module.{k}": v for k, v in sd.items()}}},
        "state_dict", "mmengine EMA checkpoint: took 'state_dict'"),
    "nested {'model': {'state_dict': ...}}": (
        lambda sd: {"model": {"state_dict": sd, "epoch": 2}, "iter": 4}, "model.state_dict",
        "unwrapped {'model': {'state_dict': ...}}; set aside: iter (int), model.epoch (int)"),
    "torch.compile inside DDP": (
        lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}}, "state_dict",
        "torch.compile prefix '_orig_mod.'"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_real_checkpoint_layouts_unwrap_to_the_weights(layout, state):
    make, entry, note = LAYOUTS[layout]
    got, notes = unwrap(make(dict(state)), is_tensor)
    assert list(got) == list(state), layout
    assert all(got[k] is state[k] for k in state)
    assert any(note in n for n in notes), notes
    assert f"unwrapped {{'{entry.split('.')[0]}': " in notes[0], notes


def test_key_chooses_the_entry(state):
    sd = dict(state)
    raw = {k: torch.zeros_like(v) for k, v in sd.items()}
    got, notes = unwrap({"state_dict": raw, "state_dict_ema": sd}, is_tensor, key="state_dict")
    assert all(got[k] is raw[k] for k in raw) and "took {'state_dict': ...} as asked" in notes
    with pytest.raises(CheckpointError, match="no entry 'nope'"):
        unwrap({"state_dict": sd}, is_tensor, key="nope")
    with pytest.raises(CheckpointError, match="entry 'epoch' holds no tensors"):
        unwrap({"state_dict": sd, "epoch": 3}, is_tensor, key="epoch")


@pytest.mark.parametrize("obj, message", [
    ([torch.zeros(1)], "expected a dict of tensors, found list"),
    ({}, "empty dict"),
    ({"epoch": 3, "meta": {"a": 1}}, "no tensors at the top level and no entry holding weights (top-level entries: "
                                     "epoch (int), meta (dict))"),
    ({"state": {}, "param_groups": []}, "torch optimizer state"),
    ({"generator": {"a.weight": torch.zeros(2)}, "discriminator": {"b.weight": torch.zeros(2)}},
     "several entries hold tensors: generator, discriminator; choose one (convert's --key NAME)"),
    ({"best_miou": torch.tensor(0.5)}, "no tensors at the top level"),
])
def test_unusable_checkpoints_say_why(obj, message):
    with pytest.raises(CheckpointError) as err:
        unwrap(obj, is_tensor)
    assert message in str(err.value)


def test_entries_inside_the_weights(state):
    """0-d tensors inside the weights stay (num_batches_tracked; the planner decides on names
    without a dot); other values are set aside and reported; a prefix on only some keys stays."""
    sd = {**dict(state), "best_miou": torch.tensor(0.5), "StructuredToParameterName@@": {"a": "b"}}
    got, notes = unwrap(sd, is_tensor)
    assert "best_miou" in got and "StructuredToParameterName@@" not in got
    assert any("set aside 1 entries that are not tensors: StructuredToParameterName@@ (dict)" in n for n in notes)
    partial = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(state.items())}
    assert list(unwrap(partial, is_tensor)[0]) == list(partial)
    twice = {f"module.module.{k}": v for k, v in state.items()}
    got, notes = unwrap(twice, is_tensor)
    assert list(got) == list(state) and sum("DDP prefix" in n for n in notes) == 2


def test_metadata_scalars_are_set_aside_only_where_the_model_has_no_place(tmp_path):
    """FarSeg's ``buffer_step`` is a 0-d tensor without a dot, like ``best_miou``: the model's own
    names decide. Through load_for, in both frameworks' models."""
    farseg = rsport.get("farseg50")
    tb = adapter("torch")
    model = tb.build(farseg, "tiny")
    sd = {**model.state_dict(), "best_miou": torch.tensor(0.5), "epoch": torch.tensor(7)}
    src = tmp_path / "farseg.pth"
    torch.save({"state_dict": sd}, src)
    got = weights.load_for(farseg, model, "torch", src)
    assert "buffer_step" in got and "best_miou" not in got and "epoch" not in got
    pmodel = adapter("paddle").build(farseg, "tiny")
    assert "best_miou" not in weights.load_for(farseg, pmodel, "paddle", src)


def test_paddle_wrapper_with_a_python_number(tmp_path):
    import paddle

    model = adapter("paddle").build(SPEC, "tiny")
    src = tmp_path / "wrapped.pdparams"
    paddle.save({"model": model.state_dict(), "best_miou": 0.5, "iter": paddle.to_tensor(3)}, str(src))
    arrays, notes = weights.read_source(src, "paddle")
    assert set(arrays) == set(model.state_dict())
    assert notes == ["unwrapped {'model': ...}; set aside: best_miou (float), iter (0-d tensor)"]


def test_key_patterns_and_the_closest_model():
    assert key_pattern("layer1.12.conv1.weight") == "layer1.#.conv1.weight"
    assert key_pattern("stage4.0.branches.2.0.conv1.weight") == "stage4.#.branches.#.#.conv1.weight"
    assert key_pattern("0.weight") == "#.weight" and key_pattern("fpn_inner1.bias") == "fpn_inner1.bias"
    keys = {name: weights._model_keys(name, "torch") for name in rsport.names()}
    default = adapter("torch").schema(adapter("torch").build(rsport.get("farseg50"), "default"))
    ranked = closest(default, keys)   # a default-variant checkpoint against the tiny key lists
    assert ranked[0][0] == "farseg50" and ranked[0][1] > 0.95
    assert checkpoint.another_model("factseg50", ranked) == "farseg50"
    assert checkpoint.another_model("farseg50", ranked) is None


# --- output paths and staged writes --------------------------------------------------------------
def test_check_output(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    check_output(tmp_path / "new" / "deeper" / "out.pdparams", "file", "--dst")   # creatable
    check_output(tmp_path / "file.txt", "file")                                   # replaced in place
    check_output(tmp_path / "run", "folder")
    with pytest.raises(OutputError, match="--dst .* is a folder; name the file to write"):
        check_output(tmp_path, "file", "--dst")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(tmp_path / "file.txt", "folder", "--save-dir")
    with pytest.raises(OutputError, match=f"{tmp_path / 'file.txt'} is a file, not a folder"):
        check_output(tmp_path / "file.txt" / "out.pdparams", "file", "--dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]   # nothing created


def test_staged_cleanup_never_hides_the_error(tmp_path, monkeypatch):
    """A failed write leaves nothing (folders it created included), and a cleanup that fails
    itself is logged while the original error propagates."""
    dst = tmp_path / "a" / "b" / "out.json"
    with pytest.raises(RuntimeError, match="the real error"):
        with Staged() as staged:
            staged.write_json(dst, {"x": 1})
            raise RuntimeError("the real error")
    assert list(tmp_path.iterdir()) == []

    def refuse(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    with pytest.raises(RuntimeError, match="the real error"):
        with Staged() as staged:
            staged.write_json(tmp_path / "out.json", {"x": 1})
            monkeypatch.setattr(type(tmp_path), "unlink", refuse)
            raise RuntimeError("the real error")
    monkeypatch.undo()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers == [f".out.json.tmp-{os.getpid()}"]   # could not be removed, and said so (logged)
