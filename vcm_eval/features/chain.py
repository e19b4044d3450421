"""What happens to one level's samples between the C-layer and the packed picture, and back.

The anchor quantises the map as it is (one min-max range). A feature entry may put training-free methods in
between, each off by default and each inverted by the receiver from the level's record alone::

    x (C, H, W) -> downsample by f -> components y = V_k^T (x - mu) -> z-score per channel
                -> clipped / per-channel range -> N-bit integers -> pack -> codec

``ChainOptions`` says which; ``encode_samples`` runs the chain forward and returns the integers, the
quantiser's side information and the record the decoder needs; ``decode_samples`` inverts it. Side
information that varies per picture (ranges, channel statistics, k, f) is counted by ``side_info_bits``;
the channel basis is fixed per model and shipped with it, so it is not sent (its sha256 is part of the
entry's identity and of every record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcm_eval.errors import SettingError
from vcm_eval.features.quantize import (
    QUANT_SIDE_INFO_BITS,
    RANGE_METHODS,
    QuantParams,
    channel_statistics,
    clipped_fraction,
    denormalize_channels,
    dequantize,
    normalize_channels,
    quantize,
    range_params,
)
from vcm_eval.features.resample import downsample_mean, upsample_bilinear
from vcm_eval.features.transform import ChannelBasis, from_components, load_bases, to_components

#: bits that signal a level's number of coded components, or its downsampling factor.
PARAMETER_SIDE_INFO_BITS = 8
#: Channel bases shipped with vcm_eval, by name (``transform.basis: embedded``).
BASES_DIR = Path(__file__).resolve().parents[1] / "models" / "weights"


def basis_path(name_or_path: str) -> Path:
    """``embedded`` -> the shipped ``models/weights/embedded_basis.npz``; anything else is a file path."""
    shipped = BASES_DIR / f"{name_or_path}_basis.npz"
    return shipped if "/" not in name_or_path and not name_or_path.endswith(".npz") else Path(name_or_path)


@dataclass
class ChainOptions:
    """The training-free sample methods of a feature entry (all off: the anchor's chain).

    Attributes:
        range: quantiser range, ``minmax`` | ``percentile`` (``low``/``high`` percentiles) | ``sigma`` (``k``).
        per_channel: one range per coded channel (side information 64 bits each) instead of one per level.
        zscore: normalise each coded channel to zero mean, unit deviation before the range (mean and
            deviation sent as float32, 64 bits per channel).
        transform: ``None`` | ``klt`` (principal components) | ``select`` (range-based channel truncation).
        basis: name of a shipped basis (``embedded``) or path of a ``tools/fit_channel_basis.py`` file.
        components: level -> k, components (channels for ``select``) coded; levels not named keep all.
        downsample: level -> f, code the level at 1/f of its size (f x f mean), bilinear back at the receiver.
    """

    range: str = "minmax"
    low: float = 0.1
    high: float = 99.9
    k: float = 4.0
    per_channel: bool = False
    zscore: bool = False
    transform: str | None = None
    basis: str = "embedded"
    components: dict[str, int] = field(default_factory=dict)
    downsample: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.range not in RANGE_METHODS:
            raise SettingError(f"quantiser range {self.range!r} is not one of {list(RANGE_METHODS)}")
        if self.transform not in (None, "klt", "select"):
            raise SettingError(f"channel transform {self.transform!r} is not one of klt, select (or null)")
        self.components = {str(k): int(v) for k, v in (self.components or {}).items()}
        self.downsample = {str(k): int(v) for k, v in (self.downsample or {}).items() if int(v) != 1}
        if self.components and self.transform is None:
            raise SettingError("components need a channel transform (transform: klt or select)")
        if any(v < 1 for v in self.downsample.values()):
            raise SettingError(f"downsampling factors must be >= 1, got {self.downsample}")
        self._bases: dict[str, ChannelBasis] | None = None
        self._basis_sha256: str | None = None

    @classmethod
    def of(cls, quantizer: Mapping | None, transform: Mapping | None, downsample: Mapping | None) -> ChainOptions:
        """From an entry's YAML blocks ``quantizer: {range, low, high, k, per_channel, zscore}``,
        ``transform: {kind, basis, components}`` and ``downsample: {level: f}``."""
        quantizer, transform = dict(quantizer or {}), dict(transform or {})
        unknown = set(quantizer) - {"range", "low", "high", "k", "per_channel", "zscore"}
        unknown |= {f"transform.{k}" for k in set(transform) - {"kind", "basis", "components"}}
        if unknown:
            raise SettingError(f"unknown sample-method options {sorted(unknown)}")
        kind = transform.get("kind")
        return cls(**quantizer, transform=kind, basis=str(transform.get("basis", "embedded")),
                   components=dict(transform.get("components") or {}), downsample=dict(downsample or {}))

    @property
    def is_default(self) -> bool:
        return self == ChainOptions()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChainOptions) and self.identity() == other.identity()

    def bases(self) -> dict[str, ChannelBasis]:
        """The channel bases of the transform (loaded once)."""
        if self._bases is None:
            self._bases, info = load_bases(basis_path(self.basis), self.transform or "klt")
            self._basis_sha256 = info["sha256"]
        return self._bases

    def basis_sha256(self) -> str:
        self.bases()
        return str(self._basis_sha256)

    def identity(self) -> dict[str, Any]:
        """The options that change what is coded (only those away from their defaults)."""
        out: dict[str, Any] = {}
        if self.range != "minmax":
            out["range"] = self.range
            out.update({"low": self.low, "high": self.high} if self.range == "percentile" else {"k": self.k})
        if self.per_channel:
            out["per_channel"] = True
        if self.zscore:
            out["zscore"] = True
        if self.transform:
            out["transform"] = {"kind": self.transform, "basis_sha256": self.basis_sha256(),
                                "components": dict(sorted(self.components.items()))}
        if self.downsample:
            out["downsample"] = dict(sorted(self.downsample.items()))
        return out

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_bases", "_basis_sha256")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bases, self._basis_sha256 = None, None


def _params_list(samples: np.ndarray, options: ChainOptions, bit_depth: int) -> list[QuantParams]:
    kwargs = {"method": options.range, "low": options.low, "high": options.high, "k": options.k}
    if options.per_channel:
        return [range_params(channel, bit_depth, **kwargs) for channel in samples]
    return [range_params(samples, bit_depth, **kwargs)]


def _quantize(samples: np.ndarray, params: list[QuantParams]) -> np.ndarray:
    if len(params) == 1:
        return quantize(samples, params[0])
    return np.stack([quantize(channel, p) for channel, p in zip(samples, params)])


def _dequantize(q: np.ndarray, params: list[QuantParams]) -> np.ndarray:
    if len(params) == 1:
        return dequantize(q, params[0])
    return np.stack([dequantize(channel, p) for channel, p in zip(q, params)])


def params_to_record(params: list[QuantParams]) -> dict:
    """One range: the anchor's ``{minimum, maximum, bit_depth}``; per channel: lists of minima and maxima."""
    if len(params) == 1:
        return params[0].to_dict()
    return {"minimum": [p.minimum for p in params], "maximum": [p.maximum for p in params],
            "bit_depth": params[0].bit_depth}


def params_from_record(record: Mapping) -> list[QuantParams]:
    if isinstance(record["minimum"], list):
        return [QuantParams(lo, hi, int(record["bit_depth"])) for lo, hi in zip(record["minimum"], record["maximum"])]
    return [QuantParams(**record)]


def encode_samples(level: str, x: np.ndarray, options: ChainOptions, bit_depth: int
                   ) -> tuple[np.ndarray, list[QuantParams], dict]:
    """Run the chain forward on a (C, H, W) level: returns the (C', H', W') integers to pack, the quantiser
    ranges, and the record ``decode_samples`` needs (empty for the anchor's chain)."""
    record: dict[str, Any] = {}
    samples = x
    factor = options.downsample.get(level, 1)
    if factor > 1:
        record["downsample"] = factor
        record["size"] = [int(x.shape[1]), int(x.shape[2])]
        samples = downsample_mean(samples, factor)
    if options.transform:
        basis = options.bases().get(level)
        if basis is None or basis.channels != x.shape[0]:
            what = (f"no level {level}" if basis is None
                    else f"{basis.channels} channels at {level}, the model {x.shape[0]}")
            raise SettingError(f"the channel basis {basis_path(options.basis)} was fitted on another model ({what}); "
                               "fit one for this model with `python tools/fit_channel_basis.py model=... --out <file>`")
        k = options.components.get(level, basis.channels)
        record.update(transform=options.transform, components=k, basis_sha256=options.basis_sha256())
        samples = to_components(samples, basis, k)
    if options.zscore:
        mean, sd = channel_statistics(samples)
        record["zscore"] = {"mean": mean.tolist(), "sd": sd.tolist()}
        samples = normalize_channels(samples, mean, sd)
    params = _params_list(samples, options, bit_depth)
    if options.range != "minmax":
        clipped = (sum(clipped_fraction(c, p) * c.size for c, p in zip(samples, params)) / samples.size
                   if len(params) > 1 else clipped_fraction(samples, params[0]))
        record["clipped_fraction"] = clipped
    return _quantize(samples, params), params, record


def decode_samples(level: str, q: np.ndarray, params: list[QuantParams], record: Mapping | None,
                   options: ChainOptions) -> np.ndarray:
    """Invert :func:`encode_samples` from the decoded integers and the level's record."""
    samples = _dequantize(q, params)
    record = record or {}
    if "zscore" in record:
        samples = denormalize_channels(samples, np.asarray(record["zscore"]["mean"], np.float32),
                                       np.asarray(record["zscore"]["sd"], np.float32))
    if "transform" in record:
        if record["basis_sha256"] != options.basis_sha256():
            raise SettingError(f"the record was coded with channel basis {record['basis_sha256'][:12]}… but the "
                             f"entry has {options.basis_sha256()[:12]}… ({options.basis})")
        samples = from_components(samples, options.bases()[level])
    if "downsample" in record:
        samples = upsample_bilinear(samples, tuple(record["size"]))
    return samples


def side_info_bits(params: list[QuantParams], record: Mapping | None) -> int:
    """Side information of one level beyond the anchor's one range (64 bits, counted with the image):
    the extra ranges of a per-channel quantiser, z-score statistics, and the k / f parameters."""
    record = record or {}
    bits = (len(params) - 1) * QUANT_SIDE_INFO_BITS
    if "zscore" in record:
        bits += 2 * 32 * len(record["zscore"]["mean"])
    if "transform" in record:
        bits += PARAMETER_SIDE_INFO_BITS
    if "downsample" in record:
        bits += PARAMETER_SIDE_INFO_BITS
    return bits
