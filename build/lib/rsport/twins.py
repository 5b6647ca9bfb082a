"""Keep the twins honest: torch_ref/X.py and paddle_impl/X.py may differ only by sanctioned API
swaps or on lines marked ``# FRAMEWORK-DIFF: why`` (the idea of transformers' check_copies.py),
and a marker does not switch the check off: the numbers and the numerically meaningful keyword
values (epsilon, momentum, align_corners, mode, scale, ...) of marked lines must still agree with
the other side, or the marker must spell the difference.

``python -m rsport.twins`` checks every pair and prints each unmarked difference.
"""
from __future__ import annotations

import difflib
import re
import sys
from collections import Counter
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
    (r"\bnn\.init\.zeros_\(([\w.\[\]]+)\)", r"INIT_CONSTANT(0.0)(\1)"),
    (r"\bnn\.init\.ones_\(([\w.\[\]]+)\)", r"INIT_CONSTANT(1.0)(\1)"),
    (r"\bnn\.init\.constant_\(([\w.\[\]]+), ([^()]+)\)", r"INIT_CONSTANT(\2)(\1)"),
    (r"\bnn\.initializer\.Constant\(([^()]+)\)\(([\w.\[\]]+)\)", r"INIT_CONSTANT(\1)(\2)"),
    (r"\bnn\.init\.normal_\(([\w.\[\]]+), ([^()]+)\)", r"INIT_NORMAL(\2)(\1)"),
    (r"\bnn\.initializer\.Normal\(([^()]+)\)\(([\w.\[\]]+)\)", r"INIT_NORMAL(\1)(\2)"),
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


# Values that change the numbers a layer computes: on a marked line they must still be equal on both
# sides, or the marker must declare the difference by spelling the value (e.g. "torch 0.1 ==
# paddle 0.9"). Keyword spellings that the swaps above unify (eps/epsilon, dim/axis) compare as one.
SENSITIVE = ("eps", "momentum", "align_corners", "align_mode", "mode", "scale", "scale_factor", "ceil_mode",
             "exclusive", "count_include_pad", "approximate", "padding_mode", "dilation", "stride", "groups",
             "padding", "kernel_size", "ignore_index", "reduction", "axis", "gamma", "ratio", "negative_slope",
             "output_size", "size", "shifts", "perm", "weight")
_STRING = re.compile(r"(?P<q>\"\"\"|'''|\"|')(?:\\.|(?!(?P=q)).)*?(?P=q)")
# float literals (integers are mostly axes, indices and shapes: structure, not numerics)
_FLOAT = re.compile(r"(?<![\w.])(?:\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)(?![\w.])")
_LITERAL = r"(\"[^\"]*\"|'[^']*'|True|False|None|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?=\s*[,)\]]|\s*$)"
_KEYWORD = re.compile(r"\b(" + "|".join(SENSITIVE) + r")\s*=\s*" + _LITERAL)


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one source line; a '#' inside a string literal is code."""
    code = _STRING.sub(lambda m: "_" * len(m.group(0)), line)
    cut = code.find("#")
    return (line, "") if cut < 0 else (line[:cut], line[cut:])


def sensitive_tokens(code: str) -> list[str]:
    """Float literals and sensitive ``keyword=literal`` pairs of a code fragment, after the
    sanctioned swaps (string literals count only as keyword values)."""
    code = normalize(code)
    tokens = [f"{k}={v.replace(chr(39), chr(34))}" for k, v in _KEYWORD.findall(code)]
    rest = _STRING.sub("''", _KEYWORD.sub("", code))
    return tokens + [repr(float(n)) for n in _FLOAT.findall(rest)]


def _declared(token: str, comments: str) -> bool:
    value = token.partition("=")[2] or token
    candidates = {token, value}
    try:
        number = float(value)
        candidates |= {repr(number), f"{number:g}", str(int(number)) if number.is_integer() else value}
    except ValueError:
        pass
    return any(re.search(rf"(?<![\w.]){re.escape(c)}(?![\w])", comments) for c in candidates if c)


def unmarked_differences(torch_file: Path, paddle_file: Path) -> list[str]:
    """Lines that differ after normalisation: each must carry a FRAMEWORK-DIFF marker, and within
    each differing block the numeric literals and sensitive keyword values must be the same on both
    sides unless a marker in the block declares the difference (spells the value)."""
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
        t_parts = [split_comment(x) for x in left[i1:i2]]
        p_parts = [split_comment(x) for x in right[j1:j2]]
        comments = " ".join(c for _, c in t_parts + p_parts)
        t_tokens = Counter(t for code, _ in t_parts for t in sensitive_tokens(code))
        p_tokens = Counter(t for code, _ in p_parts for t in sensitive_tokens(code))
        for side, extra, first, file in (("torch", t_tokens - p_tokens, i1, torch_file),
                                         ("paddle", p_tokens - t_tokens, j1, paddle_file)):
            for token in extra:
                if not _declared(token, comments):
                    where = f"{file.name}:{first + 1}" + (" (paddle)" if side == "paddle" else "")
                    problems.append(f"{where}: {token} only on the {side} side and not declared by the marker "
                                    f"(spell the other side's value in the FRAMEWORK-DIFF note)")
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
