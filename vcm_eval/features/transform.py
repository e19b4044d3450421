"""Channel transforms of one feature level: a principal-component (KLT) basis fitted offline, and back.

A level's C-layer is C channels at every position; each position is one sample of a C-vector ``x``. Its
covariance over many positions of tuning pictures has eigenvectors ``V`` (columns, by decreasing
eigenvalue) and the mean ``mu``. The coded samples are the first ``k`` components

    y = V_k^T (x - mu)            (k, H, W)

and the receiver reconstructs ``x_hat = V_k y_hat + mu``. The basis is fixed per model, as its weights are:
it is fitted once (``tools/fit_channel_basis.py``) and shipped next to the model, so nothing of it is sent;
what the decoder needs per picture is ``k``, which the coded record carries.

Range-based channel truncation is the same operation with a selection instead of a rotation: ``V`` is a
permutation that puts the kept channels first, and ``mu`` fills the dropped ones at the receiver.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcm_eval.errors import MissingInputError, SettingError
from vcm_eval.hashing import file_sha256


class LevelStatistics:
    """Running sums for a covariance over samples of one level: n, sum x, sum x x^T (float64)."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        self.sum = np.zeros(channels)
        self.outer = np.zeros((channels, channels))
        self.minimum = np.full(channels, np.inf)
        self.maximum = np.full(channels, -np.inf)

    def add(self, layer: np.ndarray) -> None:
        """Add every position of a (C, H, W) layer as one sample."""
        x = layer.reshape(layer.shape[0], -1).astype(np.float64)
        self.n += x.shape[1]
        self.sum += x.sum(axis=1)
        self.outer += x @ x.T
        self.minimum = np.minimum(self.minimum, x.min(axis=1))
        self.maximum = np.maximum(self.maximum, x.max(axis=1))

    @property
    def mean(self) -> np.ndarray:
        return self.sum / self.n

    def covariance(self) -> np.ndarray:
        """``E[x x^T] - mu mu^T`` over every sample added."""
        mean = self.mean
        return self.outer / self.n - np.outer(mean, mean)

    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the covariance, largest first."""
        return np.linalg.eigvalsh(self.covariance())[::-1]


@dataclass(frozen=True)
class ChannelBasis:
    """An orthonormal channel basis of one level.

    Attributes:
        mean: (C,) float64, the tuning set's mean channel vector.
        vectors: (C, C) float64, column j is component j; components ordered by decreasing ``variances``.
        variances: (C,) float64, the tuning set's variance along each component.
        kind: ``"klt"`` (principal components) or ``"select"`` (a permutation: channel truncation).
    """

    mean: np.ndarray
    vectors: np.ndarray
    variances: np.ndarray
    kind: str = "klt"

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def energy(self, k: int) -> float:
        """Fraction of the tuning set's variance in the first ``k`` components."""
        total = float(self.variances.sum())
        return float(self.variances[:k].sum() / total) if total > 0 else 1.0


def principal_basis(stats: LevelStatistics) -> ChannelBasis:
    """The KLT of a level: eigenvectors of its covariance, largest eigenvalue first, each column's sign fixed
    so that its largest-magnitude entry is positive (eigensolvers may return either sign)."""
    values, vectors = np.linalg.eigh(stats.covariance())
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    return ChannelBasis(stats.mean.copy(), vectors, values, "klt")


def range_selection_basis(mean: np.ndarray, minimum: np.ndarray, maximum: np.ndarray) -> ChannelBasis:
    """Channel truncation as a basis: channels ordered by their range (max - min) on the tuning set, widest
    first; keeping ``k`` components keeps the ``k`` widest channels and fills the rest with their mean.
    ``variances`` holds the squared ranges, which order the channels."""
    ranges = np.asarray(maximum, np.float64) - np.asarray(minimum, np.float64)
    order = np.argsort(-ranges, kind="stable")
    vectors = np.eye(mean.shape[0])[:, order]
    return ChannelBasis(np.asarray(mean, np.float64).copy(), vectors, ranges[order] ** 2, "select")


def to_components(x: np.ndarray, basis: ChannelBasis, k: int) -> np.ndarray:
    """``y = V_k^T (x - mu)``: the first ``k`` components of a (C, H, W) level as float32 (k, H, W)."""
    channels, height, width = x.shape
    if channels != basis.channels:
        raise SettingError(f"the level has {channels} channels but the basis was fitted on {basis.channels}")
    if not 1 <= k <= channels:
        raise SettingError(f"components must be in 1..{channels}, got {k}")
    flat = x.reshape(channels, -1).astype(np.float64) - basis.mean[:, None]
    return (basis.vectors[:, :k].T @ flat).astype(np.float32).reshape(k, height, width)


def from_components(y: np.ndarray, basis: ChannelBasis) -> np.ndarray:
    """``x_hat = V_k y + mu`` for (k, H, W) components: the (C, H, W) level as float32."""
    k, height, width = y.shape
    flat = basis.vectors[:, :k] @ y.reshape(k, -1).astype(np.float64) + basis.mean[:, None]
    return flat.astype(np.float32).reshape(basis.channels, height, width)


def save_bases(path: str | Path, stats: Mapping[str, LevelStatistics], info: Mapping) -> str:
    """Fit every level's KLT from ``stats`` and write it, with the channel ranges that channel truncation
    needs and a JSON ``info`` record, to an ``.npz``; returns the file's sha256.

    The fitted vectors are stored (not the statistics) so that every machine uses the same basis bit for bit.
    """
    arrays = {}
    for level, level_stats in stats.items():
        basis = principal_basis(level_stats)
        arrays[f"{level}/mean"] = basis.mean
        arrays[f"{level}/vectors"] = basis.vectors
        arrays[f"{level}/variances"] = basis.variances
        arrays[f"{level}/minimum"] = level_stats.minimum
        arrays[f"{level}/maximum"] = level_stats.maximum
    record = {**info, "levels": list(stats), "samples": {lv: int(st.n) for lv, st in stats.items()}}
    arrays["info"] = np.frombuffer(json.dumps(record, sort_keys=True).encode(), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return file_sha256(path)


def load_bases(path: str | Path, kind: str = "klt") -> tuple[dict[str, ChannelBasis], dict]:
    """Read what :func:`save_bases` wrote as ``(level -> basis, info)``; ``info["sha256"]`` is the file's hash.

    Args:
        kind: ``"klt"``, the principal components; ``"select"``, channel truncation (channels by decreasing
            range on the tuning set).

    Raises:
        FileNotFoundError: no such file (the message names ``tools/fit_channel_basis.py``).
        ValueError: the file is not a basis file, or an unknown ``kind``.
    """
    if kind not in ("klt", "select"):
        raise SettingError(f"unknown channel transform {kind!r}; choose klt or select")
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"channel basis {path} not found; fit one with "
                                f"`python tools/fit_channel_basis.py --out {path}`")
    data = path.read_bytes()
    try:
        with np.load(path) as npz:
            info = json.loads(bytes(npz["info"]).decode())
            bases = {}
            for level in info["levels"]:
                mean = npz[f"{level}/mean"]
                if kind == "klt":
                    bases[level] = ChannelBasis(mean, npz[f"{level}/vectors"], npz[f"{level}/variances"], "klt")
                else:
                    bases[level] = range_selection_basis(mean, npz[f"{level}/minimum"], npz[f"{level}/maximum"])
    except (OSError, KeyError, ValueError) as exc:
        raise SettingError(f"{path} is not a channel-basis file ({exc}); re-create it with "
                         f"`python tools/fit_channel_basis.py --out {path}`") from exc
    info["sha256"] = hashlib.sha256(data).hexdigest()
    return bases, info


def components_for_energy(basis: ChannelBasis, energy: float) -> int:
    """Smallest ``k`` whose first components hold at least ``energy`` of the tuning set's variance."""
    cumulative = np.cumsum(basis.variances) / max(float(basis.variances.sum()), 1e-30)
    return int(min(np.searchsorted(cumulative, energy) + 1, basis.channels))
