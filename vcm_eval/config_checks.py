"""Checks of the settings a user overrides most, before any work: one line naming the key, its value and the fix.

Without them a wrong type surfaces deep inside the sweep in Python's words (``'>' not supported between 'str'
and 'int'``, ``invalid literal for int()``, ``max_workers must be greater than 0``), and a QP the codec rejects
only after every picture's C-layers were computed, once per task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vcm_eval.errors import SettingError
from vcm_eval.pipeline.settings import StoreSettings


class ConfigError(SettingError):
    """A configuration value of the wrong type or range; the message names the key and the fix."""


_MISSING = object()


def _value(cfg: DictConfig, key: str) -> Any:
    """``key``'s value after interpolation, as plain Python; an interpolation that fails, in the value or in an
    element of it (``[36, ${nope}]``), is a ConfigError naming ``key``."""
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{key}: cannot be resolved ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return value


def _names(cfg: DictConfig, key: str) -> list[str]:
    """The keys of the mapping at ``key``, read without resolving its values: each value is checked under its own
    key, so that a failing interpolation is named there and not as the whole group."""
    node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return [str(name) for name in node] if isinstance(node, DictConfig) else []


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], fix: str) -> None:
    value = _value(cfg, key)
    if value is not _MISSING and not ok(value):
        raise ConfigError(f"{key}={value!r}: {fix}")


def _positive_or_null(value: Any) -> bool:
    return value is None or (_whole(value) and value >= 1)


def _qp_list(value: Any) -> bool:
    return isinstance(value, list) and all(_whole(v) for v in value)


def _offsets(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and all(_whole(v) for v in value.values()))


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def check_config(cfg: DictConfig) -> None:
    """Check the commonly overridden settings of a composed run configuration.

    Raises:
        ConfigError: one line naming the key, its value and what to set instead.
    """
    _check(cfg, "ctc.num_images", _positive_or_null, "use a whole number of pictures (or null for the whole set)")
    for name in _names(cfg, "ctc.qps"):
        _check(cfg, f"ctc.qps.{name}", _qp_list, "use a list of whole-number QPs, e.g. [32,37,42]")
    _check(cfg, "executor.workers", lambda v: v is None or (_whole(v) and v >= 0),
           "use a whole number of worker processes >= 1 (or null / 0 for one per CPU)")
    _check(cfg, "model_threads", lambda v: _whole(v) and v >= 1, "use a whole number of torch threads >= 1")
    _check(cfg, "bd.min_points", lambda v: _whole(v) and v >= 2, "use a whole number of points >= 2 (the CTC uses 4)")
    for key in ("bd.min_overlap", "bd.saturation_tolerance"):
        _check(cfg, key, _fraction, "use a fraction between 0 and 1")
    for key in ("fail_fast", "progress"):
        _check(cfg, key, lambda v: isinstance(v, bool), "use true or false")
    _check(cfg, "store.pictures_in_flight", _positive_or_null, "use a whole number of pictures >= 1, or null")
    store = _value(cfg, "store")
    StoreSettings.of(store if isinstance(store, dict) else None)  # the block's own checks, as the sweep reads it
    for group in ("anchor", "proposal"):
        for name in _names(cfg, group):
            _check(cfg, f"{group}.{name}.rate_points", _qp_list,
                   "use a list of whole numbers (set them in the CTC definition, ctc.qps)")
            _check(cfg, f"{group}.{name}.qp_offsets", _offsets,
                   "use whole-number QP offsets by level, e.g. {c2: -3, c5: 2}, or null")


def check_rate_points(entries: Iterable[Any], codec: Any) -> None:
    """Every QP an entry will code at (its rate points, plus its per-level offsets) lies in the codec's range.

    Entries whose rate points index their own codec (``codec_qps = False``, the learned entry) are left out.

    Raises:
        ConfigError: naming the entry, the QP and the codec's range.
    """
    bounds = getattr(codec, "qp_range", None)
    if bounds is None:
        return
    low, high = bounds
    for entry in entries:
        if not getattr(entry, "codec_qps", True):
            continue
        offsets = dict(getattr(entry, "qp_offsets", None) or {})
        for rate_point in entry.rate_points:
            for level, offset in [("", 0), *sorted(offsets.items())]:
                qp = int(rate_point) + int(offset)
                if not low <= qp <= high:
                    where = f" (rate point {rate_point} {offset:+d} for {level})" if level else ""
                    raise ConfigError(f"{entry.name}: QP {qp}{where} is outside {codec.name}'s range {low}..{high}; "
                                      "choose rate points in range (ctc.qps) or another codec")
