"""Weights files with a JSON sidecar: ``<name>.pth`` and ``<name>.json``, which records the ``.pth``'s sha256.

The one loader of every such pair (the embedded detector, its mask branch, the learned entry's checkpoints).
In order: the ``.pth`` exists, the ``.json`` exists and parses, the caller's ``validate`` accepts it, its
``sha256`` equals the file's, and only then is the state dict read, with torch's safe ``weights_only``
unpickler. Each failure is one error of the caller's type that names the file and says how to re-create
it (:class:`SidecarKind` holds the words), so a user never sees a traceback for a missing or damaged file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vcm_eval.hashing import file_sha256

#: what a JSON description that does not parse or lacks a key raises (json raises ValueError subclasses)
DESCRIPTION_ERRORS = (OSError, ValueError, KeyError, TypeError)


@dataclass(frozen=True)
class SidecarKind:
    """How the messages name one kind of weights file, and what they raise.

    Attributes:
        noun: what a missing ``.pth`` is, in ``<path>: <noun> not found`` (``"embedded model weights"``).
        thing: the short word in ``corrupt or replaced <thing>`` and ``cannot load the <thing>``.
        description: what the ``.json`` is, in ``unreadable <description>`` (``"weights description"``).
        fix: the remedy for the file at a path (how to re-create it, or reinstall the package).
        error: the exception type raised (a user error of the caller's, e.g. ``WeightsError``).
        contents: what the ``.json`` holds, in ``the description of <name><contents> is missing``.
    """

    noun: str
    thing: str
    description: str
    fix: Callable[[Path], str]
    error: type[Exception]
    contents: str = ""

    def fail(self, where: Path, problem: str, path: Path) -> Exception:
        """The error ``<where>: <problem>; <fix of path>`` (``where`` is the file at fault)."""
        return self.error(f"{where}: {problem}; {self.fix(path)}")


def read_sidecar(path: str | Path, kind: SidecarKind, validate: Callable[[dict], None] | None = None) -> dict:
    """The JSON description beside ``path`` (``.json`` for ``.pth``), once the file's sha256 equals its record.

    Args:
        path: the weights file.
        kind: the words and the error type of the messages.
        validate: called with the parsed JSON before the checksum: a ``KeyError``, ``ValueError`` or
            ``TypeError`` it raises reports the description as unreadable; it may raise ``kind.error`` itself
            with a message of its own.

    Raises:
        kind.error: naming the file, when either file is missing, the JSON is unreadable, or the sha256 differs.
    """
    path = Path(path).expanduser()
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise kind.fail(path, f"{kind.noun} not found", path)
    if not meta_path.is_file():
        raise kind.fail(meta_path, f"the description of {path.name}{kind.contents} is missing", path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected = str(meta["sha256"])
        if validate is not None:
            validate(meta)
    except DESCRIPTION_ERRORS as exc:
        raise kind.fail(meta_path, f"unreadable {kind.description} ({exc!r})", path) from exc
    actual = file_sha256(path)
    if actual != expected:
        raise kind.fail(path, f"corrupt or replaced {kind.thing} (sha256 {actual[:16]}..., {meta_path.name} "
                              f"records {expected[:16]}...)", path)
    return meta


def load_state_dict(path: str | Path, kind: SidecarKind) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (no checksum: :func:`load_with_sidecar` checks it first).

    Raises:
        kind.error: naming the file, when torch cannot read it or it holds something else than a dict.
    """
    path = Path(path).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged or foreign archive
        raise kind.fail(path, f"cannot load the {kind.thing} ({exc})", path) from exc
    if not isinstance(state, dict):
        raise kind.fail(path, f"expected a state dict, found {type(state).__name__}", path)
    return state


def load_with_sidecar(path: str | Path, kind: SidecarKind,
                      validate: Callable[[dict], None] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state dict, JSON description)`` of ``path``: :func:`read_sidecar`, then :func:`load_state_dict`."""
    meta = read_sidecar(path, kind, validate)
    return load_state_dict(path, kind), meta
