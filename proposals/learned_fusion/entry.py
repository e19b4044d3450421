"""The learned entry: the pipeline's interface to the fusion codec (``proposal=learned_fusion``).

:class:`LearnedFusionEntry` checks the C-layers against its checkpoints, codes them with the exact coder,
keeps both bitstreams (``y`` and ``z``) in the store under kind ``bitstreams`` and decodes them back; bpp
counts their bytes plus :data:`~proposals.learned_fusion.coder.SIDE_INFO_BITS`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from proposals.learned_fusion.checkpoints import TRAIN_TOOL, checkpoint_path, load_checkpoint, read_checkpoint_meta
from proposals.learned_fusion.coder import SIDE_INFO_BITS, ExactCoder
from proposals.learned_fusion.errors import LearnedFusionError
from proposals.learned_fusion.network import LEVELS, STRIDES
from vcm_eval.codecs.base import CodecError
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.bitrate import psnr_db
from vcm_eval.methods import CodedFeatures, CodedLevel, FeatureCodingMethod
from vcm_eval.store import StoreError, content_key
from vcm_eval.types import SplitFeatures

__all__ = ["LearnedFusionEntry", "LearnedFusionError"]


class LearnedFusionEntry(FeatureCodingMethod):
    """Codes all four C-layers of a picture as one fused latent with a trained hyperprior codec.

    Args:
        name: entry name (``learned_fusion``).
        rate_points: checkpoint indices; ``i`` uses ``rp<i>.pth``. A larger index spends fewer bits.
        bit_depth: unused (the latent is integer symbols); kept for the common entry signature.
        weights_dir: folder of the checkpoints; ``None``: the ones shipped in the package.

    The entry's identity (part of every cache key) holds the sha256 of every checkpoint in the folder.
    """

    codec_qps = False  # rate points index the trained checkpoints, not QPs of the CTC's codec

    def __init__(self, *, name: str = "learned_fusion", rate_points: Sequence[int], bit_depth: int = 10,
                 weights_dir: str | None = None) -> None:
        super().__init__(name=name, rate_points=rate_points, bit_depth=bit_depth)
        self.weights_dir = None if weights_dir is None else str(weights_dir)
        self._meta = {rp: read_checkpoint_meta(checkpoint_path(self.weights_dir, rp)) for rp in self.rate_points}
        folder = checkpoint_path(self.weights_dir, 0).parent
        self.checkpoints = {p.stem: read_checkpoint_meta(p)["sha256"] for p in sorted(folder.glob("rp*.pth"))}
        self._coders: dict[int, ExactCoder] = {}

    def params(self) -> dict[str, Any]:
        """The checkpoints (by sha256) stand for the method; where they are read from does not matter."""
        return {"checkpoints": dict(self.checkpoints)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_coders"] = {}  # rebuilt in each worker from the checked files
        return state

    def checkpoint_meta(self, rate_point: int) -> dict:
        if rate_point not in self._meta:
            self._meta[rate_point] = read_checkpoint_meta(checkpoint_path(self.weights_dir, rate_point))
        return self._meta[rate_point]

    def coder_for(self, rate_point: int) -> ExactCoder:
        """The exact coder of ``rate_point`` (loaded once per process)."""
        if rate_point not in self._coders:
            net, meta = load_checkpoint(checkpoint_path(self.weights_dir, rate_point))
            self._meta[rate_point] = meta
            self._coders[rate_point] = ExactCoder(net)
        return self._coders[rate_point]

    def _check_features(self, features: SplitFeatures, rate_point: int, label: str) -> list[np.ndarray]:
        missing = [lv for lv in LEVELS if lv not in features.layers]
        if missing:
            raise SettingError(f"{self.name}: features of {label} lack levels {missing}; "
                             f"the model gives {sorted(features.layers)}")
        meta = self.checkpoint_meta(rate_point)
        want = int(meta["architecture"]["channels"])
        path = checkpoint_path(self.weights_dir, rate_point)
        have = {lv: int(np.shape(features.layers[lv])[0]) for lv in LEVELS}
        if any(c != want for c in have.values()):
            raise LearnedFusionError(
                f"{self.name}: {path} codes C-layers of {want} channels, but the model's C-layers of {label} have "
                f"{have}; train checkpoints for this model with `{TRAIN_TOOL} model=<the model>` and point "
                "weights_dir at them")
        ph, pw = features.meta.padded_size
        if ph % 32 or pw % 32:
            raise SettingError(f"{self.name}: padded input {ph}x{pw} of {label} is not a multiple of 32")
        layers = []
        for lv, stride in zip(LEVELS, STRIDES):
            shape = tuple(np.shape(features.layers[lv]))[1:]
            if shape != (ph // stride, pw // stride):
                raise SettingError(f"{self.name}: level {lv} of {label} is {shape}, expected "
                                 f"{(ph // stride, pw // stride)} for a padded input of {ph}x{pw}")
            layers.append(np.asarray(features.layers[lv], dtype=np.float32))
        return layers

    def _codec_record(self, rate_point: int) -> dict:
        import compressai

        meta = self.checkpoint_meta(rate_point)
        return {"name": "compressai", "version": compressai.__version__, "entropy_coder": "ans",
                "entry": "proposals.learned_fusion", "rate_point": int(rate_point), "lambda": float(meta["lambda"]),
                "checkpoint": meta["sha256"]}

    def encode(self, features: SplitFeatures, rate_point: int, coder: CachedCodec, *,
               label: str = "") -> CodedFeatures:
        rate_point = int(rate_point)
        layers = self._check_features(features, rate_point, label)
        codec = self._codec_record(rate_point)
        base = content_key("learned_fusion", codec["checkpoint"], rate_point, list(features.meta.padded_size),
                           *(a.tobytes() for a in layers))
        keys = {"y": content_key(base, "y"), "z": content_key(base, "z")}
        records = {name: coder.stored_record(key) for name, key in keys.items()}
        cached = all(record is not None for record in records.values())
        if cached:
            info, encode_s = records["y"]["learned"], 0.0
        else:
            start = time.perf_counter()
            coded = self.coder_for(rate_point).compress(layers)
            encode_s = time.perf_counter() - start
            peak = float(max(a.max() for a in layers) - min(a.min() for a in layers))
            info = {"latent_shape": list(coded.latent_shape), "hyper_shape": list(coded.hyper_shape),
                    "crc32_indexes": coded.crc32_indexes, "crc32_symbols": coded.crc32_symbols,
                    "psnr_db": _psnr_all(layers, coded.layers, peak)}
            command = [f"proposals.learned_fusion rp{rate_point}", f"lambda={codec['lambda']:g}",
                       f"checkpoint sha256={codec['checkpoint']}"]
            for name, data in (("z", coded.z_string), ("y", coded.y_string)):
                records[name] = coder.store_bitstream(keys[name], data, {
                    "qp": rate_point, "codec": codec, "command": command,
                    "encode_s": encode_s if name == "y" else 0.0, "label": f"{label} {name} rp{rate_point}",
                    "learned": info, "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
        levels = {}
        for name in ("y", "z"):
            num_bytes = int(records[name]["num_bytes"])
            levels[name] = CodedLevel(
                level=name, bitstream=keys[name], num_bytes=num_bytes,
                quant={"crc32_indexes": int(info["crc32_indexes"]), "crc32_symbols": int(info["crc32_symbols"])},
                geometry={"latent_shape": list(info["latent_shape"]), "hyper_shape": list(info["hyper_shape"]),
                          "layer_shapes": {lv: list(np.shape(a)) for lv, a in zip(LEVELS, layers)}},
                psnr_db=float(info["psnr_db"]), encode_s=encode_s if name == "y" else 0.0, decode_s=0.0,
                from_cache=cached, command=None, qp=rate_point)
        return CodedFeatures(self.name, rate_point, features.meta, levels, SIDE_INFO_BITS, codec)

    def _read(self, coder: CachedCodec, record: CodedLevel, what: str) -> bytes:
        """The stored bitstream of ``record``, checked against its size and sha256 by the store's reader."""
        try:
            return coder.read_bitstream(record.bitstream)
        except (CodecError, StoreError, OSError, KeyError, ValueError) as exc:  # damaged, or missing files / record
            raise LearnedFusionError(f"{what}: the {record.level} bitstream: {exc}") from exc

    def decode(self, coded: CodedFeatures, coder: CachedCodec, *, label: str = "") -> SplitFeatures:
        rate_point = int(coded.rate_point)
        what = f"{label or 'picture'} rate point {rate_point} [{self.name}]"
        if set(coded.levels) != {"y", "z"}:
            raise LearnedFusionError(f"{what}: expected records y and z, got {sorted(coded.levels)}")
        y, z = coded.levels["y"], coded.levels["z"]
        y_string, z_string = self._read(coder, y, what), self._read(coder, z, what)
        shapes = [tuple(y.geometry["layer_shapes"][lv]) for lv in LEVELS]
        try:
            layers = self.coder_for(rate_point).decompress(
                y_string, z_string, y.geometry["latent_shape"], y.geometry["hyper_shape"], shapes,
                y.quant["crc32_indexes"], y.quant["crc32_symbols"], what=what)
        except LearnedFusionError:
            raise
        except (RuntimeError, ValueError) as exc:  # the range decoder rejects some damaged strings itself
            raise LearnedFusionError(f"{what}: the bitstream does not decode ({exc})") from exc
        return SplitFeatures(layers=dict(zip(LEVELS, layers)), meta=coded.meta)


def _psnr_all(reference: Sequence[np.ndarray], reconstruction: Sequence[np.ndarray], peak: float) -> float:
    """PSNR over all four C-layers together: ``10 log10(peak^2 / MSE)``, MSE over every sample of every level,
    peak = max - min over all original levels."""
    ref = np.concatenate([a.reshape(-1) for a in reference])
    rec = np.concatenate([a.reshape(-1) for a in reconstruction])
    value = psnr_db(ref, rec, peak)
    # a finite stand-in for psnr_db's inf (exact) or nan (constant layers): the bitstream records store it
    return value if math.isfinite(value) else 999.0
