"""Keep the twins honest: torch_ref/X.py and paddle_impl/X.py may differ only by sanctioned API
swaps or on lines marked ``# FRAMEWORK-DIFF: why`` (the idea of transformers' check_copies.py).

``python -m rsport.twins`` checks every pair and prints each unmarked difference.
"""
from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("torch_ref", "paddle_impl")
MARKER = "FRAMEWORK-DIFF"

# Sanctioned swaps: both spellings are rewritten to one canonical form on both sides.
SWAPS: tuple[tuple[str, str], ...] = (
    (r"\bnn\.(Module|Layer)\b", "nn.MODULE"),
    (r"\b(Module|Layer)List\b", "MODULELIST"),
    (r"\badd_(module|sublayer)\(", "add_CHILD("),
    (r"\.(modules|sublayers)\(\)", ".CHILDREN()"),
    (r"\b(Conv|BatchNorm|MaxPool|AvgPool|AdaptiveAvgPool)([123])[dD]\b", r"\1\2D"),
    (r"\bbias(_attr)?=", "bias="),
    (r"\b(eps|epsilon)=", "eps="),
    (r"\b(dim|axis)=", "axis="),
    (r"\b(torch\.cat|paddle\.concat)\(", "CAT("),
    (r"\b(torch\.from_numpy|paddle\.to_tensor)\(", "TENSOR("),
    (r"\.(pth|pdparams)\b", ".WEIGHTS"),
    (r"\b(torch_ref|paddle_impl)\b", "FWPKG"),
    (r"\b(TORCH|PADDLE)\b", "FWSIDE"),
    (r"\b(torch|paddle)_", "FW_"),
    (r"\b(torch|paddle)\b", "FW"),
)


def normalize(line: str) -> str:
    for pattern, canonical in SWAPS:
        line = re.sub(pattern, canonical, line)
    return line.rstrip()


def pairs(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """Every torch_ref/**.py with its paddle_impl twin (a missing twin is paired with None)."""
    torch_root, paddle_root = root / TREES[0], root / TREES[1]
    found = []
    for path in sorted(torch_root.rglob("*.py")):
        twin = paddle_root / path.relative_to(torch_root)
        found.append((path, twin if twin.exists() else None))
    return found


def unmarked_differences(torch_file: Path, paddle_file: Path) -> list[str]:
    """Non-blank lines that differ after normalisation and carry no FRAMEWORK-DIFF marker."""
    left = torch_file.read_text().splitlines()
    right = paddle_file.read_text().splitlines()
    matcher = difflib.SequenceMatcher(None, [normalize(x) for x in left], [normalize(x) for x in right],
                                      autojunk=False)
    problems = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        problems += [f"{torch_file.name}:{i + 1}: {left[i].strip()}" for i in range(i1, i2)
                     if MARKER not in left[i] and left[i].strip()]
        problems += [f"{paddle_file.name}:{j + 1} (paddle): {right[j].strip()}" for j in range(j1, j2)
                     if MARKER not in right[j] and right[j].strip()]
    return problems


def main(argv=None) -> int:
    import argparse

    argparse.ArgumentParser(
        prog="python -m rsport.twins", description="Check that every torch_ref/ file and its paddle_impl/ twin differ "
        "only by sanctioned API swaps or on lines marked '# FRAMEWORK-DIFF: why'; prints each unmarked difference "
        "and exits 1 if there is one.", epilog="example:\n  python -m rsport.twins        # or: rsport twins",
        formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    status = 0
    for torch_file, paddle_file in pairs():
        rel = torch_file.relative_to(ROOT)
        if paddle_file is None:
            continue  # torch-only helpers (e.g. the reference-weight builder) have no twin
        problems = unmarked_differences(torch_file, paddle_file)
        print(f"{'FAIL' if problems else 'ok  '} {rel}")
        for problem in problems:
            print(f"     {problem}")
        status |= bool(problems)
    return status


if __name__ == "__main__":
    sys.exit(main())
