"""The torch_ref/ and paddle_impl/ twins differ only by sanctioned swaps and marked lines."""
import pytest

from rsport import twins


@pytest.mark.parametrize("torch_file,paddle_file", [p for p in twins.pairs() if p[1] is not None],
                         ids=lambda p: str(p.relative_to(twins.ROOT)) if hasattr(p, "relative_to") else str(p))
def test_twin_diffs_cleanly(torch_file, paddle_file):
    problems = twins.unmarked_differences(torch_file, paddle_file)
    assert not problems, "unmarked differences (mark intentional ones '# FRAMEWORK-DIFF: why'):\n" + "\n".join(problems)


def test_checker_catches_an_unmarked_difference(tmp_path):
    (tmp_path / "a.py").write_text("x = nn.Conv2d(3, 4, 1, bias=False)\ny = F.softmax(x, dim=1)\n")
    (tmp_path / "b.py").write_text("x = nn.Conv2D(3, 4, 1, bias_attr=False)\ny = F.softmax(x, axis=0)\n")
    problems = twins.unmarked_differences(tmp_path / "a.py", tmp_path / "b.py")
    assert problems[:2] == ["a.py:2: y = F.softmax(x, dim=1)", "b.py:2 (paddle): y = F.softmax(x, axis=0)"]
    assert any("axis=1 only on the torch side" in p for p in problems)  # and its value is named


def test_checker_accepts_a_marked_and_declared_difference(tmp_path):
    (tmp_path / "a.py").write_text("m = 0.1  # FRAMEWORK-DIFF: momentum convention (paddle 0.9)\n")
    (tmp_path / "b.py").write_text("m = 0.9  # FRAMEWORK-DIFF: momentum convention (torch 0.1)\n")
    assert twins.unmarked_differences(tmp_path / "a.py", tmp_path / "b.py") == []


def test_a_marker_does_not_hide_an_undeclared_value(tmp_path):
    (tmp_path / "a.py").write_text("m = 0.1  # FRAMEWORK-DIFF: momentum convention\n")
    (tmp_path / "b.py").write_text("m = 0.9  # FRAMEWORK-DIFF: momentum convention\n")
    problems = twins.unmarked_differences(tmp_path / "a.py", tmp_path / "b.py")
    assert len(problems) == 2 and all("not declared by the marker" in p for p in problems)


def _mutated_twin(tmp_path, relative, old, new):
    """A copy of a paddle twin with one marked line changed (the code review's injections)."""
    source = twins.ROOT / "paddle_impl" / relative
    text = source.read_text()
    assert text.count(old) == 1, old
    copy = tmp_path / source.name
    copy.write_text(text.replace(old, new))
    return twins.ROOT / "torch_ref" / relative, copy


@pytest.mark.parametrize("relative,old,new,token", [
    ("models/resnet.py", "BN_MOMENTUM = 0.9  # FRAMEWORK-DIFF", "BN_MOMENTUM = 0.5  # FRAMEWORK-DIFF", "0.5"),
    ("models/factseg.py", 'fg_logit = interpolate(fg_logit, scale_factor=4.0, mode="bilinear", align_corners=True)',
     'fg_logit = interpolate(fg_logit, scale_factor=4.0, mode="bilinear", align_corners=False)', "align_corners=False"),
], ids=["bn_momentum_0.5", "align_corners_flipped"])
def test_the_reviews_injected_changes_on_marked_lines_fail(tmp_path, relative, old, new, token):
    torch_file, paddle_copy = _mutated_twin(tmp_path, relative, old, new)
    assert twins.unmarked_differences(torch_file, twins.ROOT / "paddle_impl" / relative) == []
    problems = twins.unmarked_differences(torch_file, paddle_copy)
    assert any(token in p and "(paddle)" in p for p in problems), problems


def test_every_torch_module_has_a_twin_or_is_torch_only():
    torch_only: set[str] = set()  # every torch_ref module has a paddle twin
    missing = [str(t.relative_to(twins.ROOT)) for t, p in twins.pairs() if p is None and t.name not in torch_only]
    assert not missing, f"torch_ref files without a paddle_impl twin: {missing}"
