"""Building objects from Hydra config nodes, with errors a user can act on."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from vcm_eval.errors import TargetError, non_negative_setting

__all__ = ["build", "non_negative_setting"]


def build(node: Any, *, expect: type | tuple[type, ...], what: str) -> Any:
    """``instantiate(node, _convert_="all")`` and check the result's type.

    Hydra wraps an exception raised by the target in ``InstantiationException``; the original (for
    example a WeightsError naming the file to fetch) is re-raised instead, so the user sees its message.

    Raises:
        TypeError: naming ``what`` and its ``_target_`` when the object is not an ``expect``.
    """
    try:
        obj = instantiate(node, _convert_="all")
    except InstantiationException as exc:
        if exc.__cause__ is not None:
            raise exc.__cause__ from None
        raise
    if not isinstance(obj, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        target = node.get("_target_") if hasattr(node, "get") else None
        raise TargetError(f"{what}: _target_ {target} builds {type(obj).__name__}, not a {names}")
    return obj
