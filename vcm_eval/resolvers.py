"""The OmegaConf resolvers that ``conf/`` uses, registered when :mod:`vcm_eval.api` is imported.

- ``${vcm_eval.unique_dir:<path>}``: a run folder made atomically (:func:`vcm_eval.run_folders.unique_dir`);
- ``${vcm_eval.shifted_qps:${ctc.qps.features},<shift>[,<step>]}``: an entry's rate points derived from the
  CTC's, so that an entry tuned on one CTC follows the QPs of whichever CTC runs it (:func:`shifted_qps`).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf

from vcm_eval.errors import SettingError
from vcm_eval.run_folders import unique_dir


def shifted_qps(base_qps: Sequence[int], shift: int = 0, step: int | None = None) -> list[int]:
    """Rate points from a CTC's QPs ``q_0 < ... < q_{n-1}``: ``q_i + shift``, or with a step,
    ``q_0 + shift + i * step`` for ``i = 0 .. n-1`` (as many points as the CTC has)."""
    try:
        base = [int(q) for q in base_qps]
        shift = int(shift)
        step = None if step is None else int(step)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"vcm_eval.shifted_qps needs whole-number QPs, a shift and a step; got "
                           f"{list(base_qps)}, {shift!r}, {step!r}") from exc
    if not base:
        raise SettingError("vcm_eval.shifted_qps: the CTC has no QPs to shift")
    if step is None:
        return [q + shift for q in base]
    return [base[0] + shift + i * step for i in range(len(base))]


RESOLVERS = {"vcm_eval.unique_dir": (unique_dir, True), "vcm_eval.shifted_qps": (shifted_qps, False)}


def register_resolvers() -> None:
    """Make the resolvers above available to configs (idempotent)."""
    for name, (function, cached) in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cached)
