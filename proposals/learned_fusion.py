"""A learned feature codec: multi-scale fusion of every C-layer into one latent, coded with CompressAI.

The four C-layers ``c2..c5`` (``C`` channels each, strides 4, 8, 16, 32 of the padded input) are fused
into one latent ``y`` at stride 16, as L-MSFC-style fusion codecs do::

    a8  = GDN(convKxK/2(c2))                               stride 8
    a16 = GDN(convKxK/2(GDN(conv3x3([a8, c3]))))           stride 16
    y   = conv3x3(GDN(conv3x3([a16, c4, up2(c5)])))        stride 16, M channels (up2: KxK transposed conv)

(K = ``FusionArch.kernel``, 3 in the shipped checkpoints.)

``y`` is coded with a mean-scale hyperprior (Ballé et al. 2018, Minnen et al. 2018): ``z = h_a(y)`` at
stride 64 goes through CompressAI's ``EntropyBottleneck`` (a learned factorised density), and
``(mu, sigma) = h_s(z^)`` parametrise the ``GaussianConditional`` of ``y``: the symbols
``q = round(y - mu)`` are range coded with the discretised N(0, sigma) and ``y^ = q + mu``. The synthesis
``g_s(y^)`` rebuilds every C-layer at its exact shape (c4 at stride 16, c5 by a stride-2 conv, c3 and c2 by
stride-2 transposed convs), and the model's decoder half runs on them.

Bitstreams are real: ``EntropyBottleneck.compress`` and ``GaussianConditional.compress`` (CompressAI's rANS
range coder) write the bytes, which the store keeps under kind ``bitstreams`` (records ``y`` and ``z``);
bpp counts those bytes plus :data:`SIDE_INFO_BITS` (picture size, the length of the z string that a
single-file container would need, and two CRC-32s).

Exact decoding. The range decoder needs the very CDF indexes the encoder used; a last-bit difference in
``sigma`` between two processes (other thread count, other convolution algorithm) silently decodes
garbage. So the hyper-synthesis runs in float64 on one torch thread (:func:`deterministic_torch`), the whole
coding path runs on one thread, and the record carries ``crc32`` of the int32 CDF indexes and of the int32
symbols: the decoder recomputes both and raises :class:`LearnedFusionError` (naming the image and rate
point) on a mismatch, never returning a wrong reconstruction.

Rate points are indices of trained checkpoints, ``weights/learned_fusion/rp<i>.pth``: **a larger index
codes with fewer bits** (a smaller lambda in ``loss = lambda * D + R``), like a larger QP. Each checkpoint's
JSON records its lambda, the training settings and the sha256 of the embedded model weights it was trained
on. ``python tools/train_learned_fusion.py`` re-creates them (docs/learned.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models import CompressionModel
from compressai.models.base import get_scale_table
from compressai.models.utils import conv, deconv
from torch import nn

from vcm_eval.codecs.base import CodecError
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.evaluation.bitrate import IMAGE_SIZE_SIDE_INFO_BITS, psnr_db
from vcm_eval.hashing import file_sha256
from vcm_eval.methods import CodedFeatures, CodedLevel, FeatureCodingMethod
from vcm_eval.store import StoreError, content_key
from vcm_eval.types import SplitFeatures

#: where the shipped checkpoints live (package data, see pyproject.toml)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "learned_fusion"
TRAIN_TOOL = "python tools/train_learned_fusion.py"
LEVELS: tuple[str, ...] = ("c2", "c3", "c4", "c5")
STRIDES: tuple[int, ...] = (4, 8, 16, 32)
#: per picture: original size (2 x uint16, as every feature entry), the byte length of the z string (uint32,
#: what a single-file container needs to split z from y) and two CRC-32s (indexes, symbols)
SIDE_INFO_BITS = IMAGE_SIZE_SIDE_INFO_BITS + 32 + 2 * 32


class LearnedFusionError(CodecError):
    """A checkpoint is missing, corrupt or does not fit, or a bitstream does not decode; the message says which.
    A :class:`~vcm_eval.codecs.base.CodecError`, as the failures of the picture codecs are: the command line
    reports it as a user error, not a traceback."""


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class FusionArch:
    """Every number that shapes :class:`FusionCodec`; saved in each checkpoint's JSON.

    Attributes:
        channels: channels of every C-layer (the model's FPN width; 32 for the embedded model).
        hidden: channels of the fusion and synthesis trunks (N).
        latent: channels of ``y`` (M).
        hyper: channels of ``z`` and of the hyper transforms.
        fine: channels of the stride-4 synthesis branch that rebuilds c2.
        kernel: kernel of the stride-2 (transposed) convolutions of the main transforms (odd).
        scale_max: largest scale of the Gaussian conditional's CDF table (64 log-spaced scales from 0.11;
            a larger sigma codes with the largest table entry, which stays exact, only costs bits).
    """

    channels: int = 32
    hidden: int = 128
    latent: int = 96
    hyper: int = 32
    fine: int = 80
    kernel: int = 3
    scale_max: float = 64.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> FusionArch:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown architecture fields {sorted(unknown)}")
        return cls(**d)

    def scale_table(self) -> torch.Tensor:
        """The 64 log-spaced scales ``exp(linspace(log 0.11, log scale_max, 64))`` of the CDF table."""
        return get_scale_table(0.11, self.scale_max, 64)


class FusionCodec(CompressionModel):
    """Fusion analysis ``g_a``, synthesis ``g_s`` and mean-scale hyperprior (``h_a``, ``h_s``) over C-layers.

    ``forward`` is the training path (uniform noise for the likelihoods, straight-through rounding for the
    synthesis input); the coding path is :class:`ExactCoder`.
    """

    def __init__(self, arch: FusionArch) -> None:
        super().__init__()
        self.arch = arch
        c, n, m, h, f, k = arch.channels, arch.hidden, arch.latent, arch.hyper, arch.fine, arch.kernel
        # analysis: fuse fine to coarse (c2 down to stride 8, merge c3, down to stride 16, merge c4 and up(c5))
        self.down2 = nn.Sequential(conv(c, n, k, 2), GDN(n))
        self.fuse3 = nn.Sequential(conv(n + c, n, 3, 1), GDN(n), conv(n, n, k, 2), GDN(n))
        self.up5 = deconv(c, n, k, 2)
        self.fuse4 = nn.Sequential(conv(n + c + n, n, 3, 1), GDN(n), conv(n, m, 3, 1))
        # hyperprior: z at stride 4 relative to y; h_s gives (sigma, mu)
        self.h_a = nn.Sequential(conv(m, h, 3, 1), nn.LeakyReLU(inplace=True), conv(h, h, 5, 2),
                                 nn.LeakyReLU(inplace=True), conv(h, h, 5, 2))
        self.h_s = nn.Sequential(deconv(h, h, 5, 2), nn.LeakyReLU(inplace=True), deconv(h, m * 3 // 2, 5, 2),
                                 nn.LeakyReLU(inplace=True), conv(m * 3 // 2, 2 * m, 1, 1))
        self.entropy_bottleneck = EntropyBottleneck(h)
        self.gaussian_conditional = GaussianConditional(None)
        # synthesis: trunk at stride 16, a head per level
        self.trunk = nn.Sequential(conv(m, n, 3, 1), GDN(n, inverse=True), conv(n, n, 3, 1),
                                   nn.LeakyReLU(inplace=True))
        self.head4 = conv(n, c, 3, 1)
        self.head5 = conv(n, c, 3, 2)
        self.up8 = nn.Sequential(deconv(n, n, k, 2), GDN(n, inverse=True), conv(n, n, 3, 1),
                                 nn.LeakyReLU(inplace=True))
        self.head3 = conv(n, c, 3, 1)
        self.up4 = nn.Sequential(deconv(n, f, k, 2), GDN(f, inverse=True), conv(f, f, 3, 1),
                                 nn.LeakyReLU(inplace=True))
        self.head2 = conv(f, c, 3, 1)

    def g_a(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        """The latent ``y`` (stride 16) of the four C-layers (strides 4, 8, 16, 32)."""
        a = self.down2(c2)
        a = self.fuse3(torch.cat([a, c3], 1))
        return self.fuse4(torch.cat([a, c4, self.up5(c5)], 1))

    def g_s(self, y_hat: torch.Tensor) -> list[torch.Tensor]:
        """``[c2^, c3^, c4^, c5^]`` of ``y^``: shapes (4h, 2h, h, h/2) for a latent of height h."""
        t = self.trunk(y_hat)
        u8 = self.up8(t)
        u4 = self.up4(u8)
        return [self.head2(u4), self.head3(u8), self.head4(t), self.head5(t)]

    def hyper_params(self, z_hat: torch.Tensor, latent_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sigma, mu)`` of ``y`` from ``z^``, cropped to the latent's (h, w)."""
        params = self.h_s(z_hat)[..., :latent_shape[0], :latent_shape[1]]
        scales, means = params.chunk(2, 1)
        return scales, means

    def forward(self, layers: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Training pass: ``{"layers": [c2^..c5^], "likelihoods": {"y", "z"}}``."""
        y = self.g_a(*layers)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self.hyper_params(z_hat, y.shape[-2:])
        _, y_likelihoods = self.gaussian_conditional(y, scales, means)
        # straight-through rounding: the synthesis sees what the decoder will see, gradients pass unchanged
        y_hat = y + (torch.round(y - means) + means - y).detach()
        return {"layers": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters (the quantiles of the entropy bottleneck included)."""
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- exact coding


@contextlib.contextmanager
def deterministic_torch(threads: int = 1) -> Iterator[None]:
    """Run torch on ``threads`` intra-op threads inside the block and restore the caller's count after.

    Convolution results can differ in their last bits with the thread count; on one thread the coding
    path is the same function in every process, whatever the caller had set.
    """
    previous = torch.get_num_threads()
    if previous != threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def crc32_int32(values: torch.Tensor) -> int:
    """``zlib.crc32`` of the values as little-endian int32, in C order."""
    return zlib.crc32(np.ascontiguousarray(values.cpu().numpy(), dtype="<i4").tobytes()) & 0xFFFFFFFF


@dataclass
class Coded:
    """What the coding path produces for one picture: both strings, shapes, checksums, the reconstruction."""

    y_string: bytes
    z_string: bytes
    latent_shape: tuple[int, int]
    hyper_shape: tuple[int, int]
    crc32_indexes: int
    crc32_symbols: int
    layers: list[np.ndarray]


class ExactCoder:
    """A trained :class:`FusionCodec` with the coding path made reproducible across processes.

    The hyper-synthesis (which decides the CDF indexes and the means) runs on a float64 copy of ``h_s``;
    everything runs on one thread (:func:`deterministic_torch`).
    """

    def __init__(self, net: FusionCodec) -> None:
        self.net = net.eval()
        self.h_s64 = copy.deepcopy(net.h_s).double().eval()

    def _hyper64(self, z_hat: torch.Tensor, latent_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.h_s64(z_hat.double())[..., :latent_shape[0], :latent_shape[1]]
        scales, means = params.chunk(2, 1)
        return scales, means

    def compress(self, layers: Sequence[np.ndarray]) -> Coded:
        """Code ``[c2, c3, c4, c5]`` (each (C, H, W) float32); returns strings and the decoder's reconstruction."""
        with deterministic_torch():
            x = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None] for a in layers]
            y = self.net.g_a(*x)
            z = self.net.h_a(y)
            eb, gc = self.net.entropy_bottleneck, self.net.gaussian_conditional
            z_string = eb.compress(z)[0]
            hyper_shape = tuple(int(v) for v in z.shape[-2:])
            z_hat = eb.decompress([z_string], hyper_shape)
            latent_shape = tuple(int(v) for v in y.shape[-2:])
            scales, means = self._hyper64(z_hat, latent_shape)
            indexes = gc.build_indexes(scales)
            y64 = y.double()
            symbols = gc.quantize(y64, "symbols", means)
            y_string = gc.compress(y64, indexes, means)[0]
            y_hat = (symbols.double() + means).float()
            recon = self._synthesis(y_hat, [a.shape for a in layers])
            return Coded(y_string, z_string, latent_shape, hyper_shape, crc32_int32(indexes), crc32_int32(symbols),
                         recon)

    def decompress(self, y_string: bytes, z_string: bytes, latent_shape: Sequence[int], hyper_shape: Sequence[int],
                   layer_shapes: Sequence[Sequence[int]], crc32_indexes: int, crc32_symbols: int, *,
                   what: str) -> list[np.ndarray]:
        """Rebuild ``[c2^..c5^]``; raises :class:`LearnedFusionError` naming ``what`` when a checksum differs."""
        with deterministic_torch():
            eb, gc = self.net.entropy_bottleneck, self.net.gaussian_conditional
            z_hat = eb.decompress([z_string], tuple(hyper_shape))
            scales, means = self._hyper64(z_hat, latent_shape)
            indexes = gc.build_indexes(scales)
            if crc32_int32(indexes) != int(crc32_indexes):
                raise LearnedFusionError(
                    f"{what}: the decoder's CDF indexes differ from the encoder's (crc32 {crc32_int32(indexes):08x}, "
                    f"recorded {int(crc32_indexes):08x}): the hyper latent z did not decode to what was coded "
                    "(damaged bitstream) or the hyper-synthesis ran differently; refusing to decode y")
            symbols = gc.decompress([y_string], indexes, dtype=torch.float64)
            if crc32_int32(symbols.to(torch.int32)) != int(crc32_symbols):
                raise LearnedFusionError(
                    f"{what}: the decoded symbols of y do not match the encoder's (crc32 "
                    f"{crc32_int32(symbols.to(torch.int32)):08x}, recorded {int(crc32_symbols):08x}): the y "
                    "bitstream is damaged or does not belong to this record")
            y_hat = (symbols + means).float()
            return self._synthesis(y_hat, layer_shapes)

    def _synthesis(self, y_hat: torch.Tensor, layer_shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = self.net.g_s(y_hat)
        return [o[0, :, :s[-2], :s[-1]].contiguous().numpy().astype(np.float32, copy=False)
                for o, s in zip(out, layer_shapes)]


# --------------------------------------------------------------------------- checkpoints


def _stored_half(name: str) -> bool:
    """Whether the checkpoint stores parameter ``name`` as float16: the weights and biases of the convolutions,
    which are nearly all the bytes. The entropy models and the GDN parameters stay float32 (small, and the
    CDF tables and medians must follow from exactly the stored values)."""
    return name.endswith((".weight", ".bias")) and not name.startswith(("entropy_bottleneck.", "gaussian_conditional."))


def round_for_storage(net: FusionCodec) -> None:
    """Round the convolution weights to float16 precision in place, ``w <- float32(float16(w))``.

    The training tool does it before it saves and measures a checkpoint, so the network whose held-out
    figures its JSON records is, bit for bit, the one that loads from the half-size file. (The CDF tables do
    not depend on these weights: they come from the entropy models, which stay float32.)
    """
    with torch.no_grad():
        for name, param in net.named_parameters():
            if _stored_half(name):
                param.copy_(param.to(torch.float16).to(torch.float32))


def storage_state(net: FusionCodec) -> dict[str, torch.Tensor]:
    """The state dict as a checkpoint stores it (see :func:`_stored_half`); call :func:`round_for_storage` first,
    or the conversion loses what the network was measured with."""
    return {k: (v.to(torch.float16) if _stored_half(k) else v) for k, v in net.state_dict().items()}


def checkpoint_path(weights_dir: str | Path | None, rate_point: int) -> Path:
    """``<weights_dir>/rp<rate_point>.pth`` (``weights_dir`` None: the shipped checkpoints)."""
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir).expanduser()
    return folder / f"rp{int(rate_point)}.pth"


def _help(path: Path) -> str:
    return (f"re-create it with `{TRAIN_TOOL}` (writes rp<i>.pth and rp<i>.json for every rate point; "
            f"--out-dir {path.parent} for this folder), or reinstall vcm_eval, whose package ships them")


def read_checkpoint_meta(path: Path) -> dict:
    """The JSON beside a checkpoint, with the sha256 of the ``.pth`` checked against it."""
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise LearnedFusionError(f"{path}: learned_fusion checkpoint not found; {_help(path)}")
    if not meta_path.is_file():
        raise LearnedFusionError(f"{meta_path}: the description of {path.name} is missing; {_help(path)}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected = str(meta["sha256"])
        FusionArch.from_json(meta["architecture"])
        float(meta["lambda"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LearnedFusionError(f"{meta_path}: unreadable checkpoint description ({exc!r}); {_help(path)}") from exc
    actual = file_sha256(path)
    if actual != expected:
        raise LearnedFusionError(f"{path}: corrupt or replaced checkpoint (sha256 {actual[:16]}..., {meta_path.name} "
                                 f"records {expected[:16]}...); {_help(path)}")
    return meta


def load_checkpoint(path: Path) -> tuple[FusionCodec, dict]:
    """The trained network of ``path`` (CDF tables included) and its JSON description.

    Raises:
        LearnedFusionError: naming the file, when it is missing, corrupt, or does not fit its architecture.
    """
    meta = read_checkpoint_meta(path)
    net = FusionCodec(FusionArch.from_json(meta["architecture"]))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        # float16 conv weights (storage_state) become float32 exactly; older float32 checkpoints load as they are
        state = {k: (v.to(torch.float32) if v.dtype == torch.float16 else v) for k, v in state.items()}
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged or foreign archive
        raise LearnedFusionError(f"{path}: checkpoint does not fit the architecture in "
                                 f"{path.with_suffix('.json').name} ({exc}); {_help(path)}") from exc
    if net.gaussian_conditional.quantized_cdf.numel() == 0 or net.entropy_bottleneck.quantized_cdf.numel() == 0:
        raise LearnedFusionError(f"{path}: the checkpoint has no CDF tables (saved before update(force=True)); "
                                 f"{_help(path)}")
    return net.eval(), meta


# --------------------------------------------------------------------------- the entry


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
            raise ValueError(f"{self.name}: features of {label} lack levels {missing}; "
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
            raise ValueError(f"{self.name}: padded input {ph}x{pw} of {label} is not a multiple of 32")
        layers = []
        for lv, stride in zip(LEVELS, STRIDES):
            shape = tuple(np.shape(features.layers[lv]))[1:]
            if shape != (ph // stride, pw // stride):
                raise ValueError(f"{self.name}: level {lv} of {label} is {shape}, expected "
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
    return value if math.isfinite(value) else 999.0
