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
    assert twins.unmarked_differences(tmp_path / "a.py", tmp_path / "b.py") == [
        "a.py:2: y = F.softmax(x, dim=1)", "b.py:2 (paddle): y = F.softmax(x, axis=0)"]


def test_checker_accepts_marked_difference(tmp_path):
    (tmp_path / "a.py").write_text("m = 0.1  # FRAMEWORK-DIFF: momentum convention\n")
    (tmp_path / "b.py").write_text("m = 0.9  # FRAMEWORK-DIFF: momentum convention\n")
    assert twins.unmarked_differences(tmp_path / "a.py", tmp_path / "b.py") == []


def test_every_torch_module_has_a_twin_or_is_torch_only():
    torch_only: set[str] = set()  # every torch_ref module has a paddle twin
    missing = [str(t.relative_to(twins.ROOT)) for t, p in twins.pairs() if p is None and t.name not in torch_only]
    assert not missing, f"torch_ref files without a paddle_impl twin: {missing}"
