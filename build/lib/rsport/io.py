"""File helpers: staged (all-or-nothing) writes and content hashes."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Staged:
    """Write several files as one transaction: each is written to a temporary sibling and only
    renamed into place by ``commit()``; leaving the ``with`` block without committing removes
    them, so a failed run never leaves a half-written or unverified output behind."""

    def __init__(self):
        self._pending: dict[Path, Path] = {}

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        self._pending[final] = tmp
        return tmp

    def write_json(self, final: str | os.PathLike, payload) -> None:
        self.path(final).write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")

    def commit(self) -> None:
        for final, tmp in self._pending.items():
            os.replace(tmp, final)
        self._pending.clear()

    def discard(self) -> None:
        for tmp in self._pending.values():
            tmp.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
