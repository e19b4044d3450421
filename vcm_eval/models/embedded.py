"""The embedded default detector: a small torchvision Faster R-CNN + FPN whose weights ship in the package.

Architecture (all sizes in :class:`EmbeddedArch`, stored with the weights in ``embedded.json``):

* ``GeneralizedRCNNTransform``: ImageNet mean/std normalisation, resize so the short side is 320 px
  (long side at most 480 px), zero padding of the batch to a multiple of 32;
* a small ResNet-like bottom-up network defined here (BasicBlocks with BatchNorm, trained from
  scratch) whose four stages have strides 4, 8, 16, 32;
* torchvision's ``FeaturePyramidNetwork`` with 32 channels and the ``LastLevelMaxPool`` extra level.
  Its ``inner_blocks`` (the 1x1 lateral convolutions) produce the C-layers ``c2..c5``;
* RPN with two anchor sizes per level (11 px on P2 to 256 px on P6), and ROI heads
  (``MultiScaleRoIAlign`` 7x7 with canonical scale 112, so that boxes under 56 px pool from P2,
  56-112 px from P3, 112-224 px from P4 and larger ones from P5: on 320 px pictures every level carries
  ROI features, where torchvision's default of 224 would leave P5 unused; a two-layer MLP head).

Why 32 FPN channels: every lateral convolution maps at least as many channels as it outputs (32, 64, 96,
128 -> 32), so every C-layer is full rank, as in X101-FPN (256 -> 256 at C2 and more above); the earlier
64-channel FPN made C2 a 1x1 convolution of 32 channels into 64, half of them linear combinations of the
others, which a feature codec could exploit and the real model does not offer. The C-layers are coded as
one monochrome picture per level, 32 channels packing into a 4x8 grid: a 320x480 input gives pictures of
320x960 (c2), 160x480, 80x240 and 40x120 samples, about 0.41 Mpixel per image per QP, so an x265 sweep over
every level of 100 images at 5 QPs stays within minutes on two cores.

The split (:class:`EmbeddedDetector`) follows ``vcm_eval.models.base``: ``encode`` stops after the
lateral convolutions; ``decode`` repeats torchvision's FPN top-down pathway operation for operation,
so ``decode(encode(x))`` equals the unsplit torchvision forward bit for bit. At the P-layer split point
(``to_split(c, "p")``: the FPN's outputs ``p2..p5``, torchvision's "0".."3") the maps have the C-layers'
shapes (32 channels each), so P-layer pictures are as large as C-layer pictures; "pool" (P6) is derived
by the receiver from P5, and ``decode(to_split(encode(x), "p"))`` is the unsplit forward bit for bit too.

Masks (``task="segmentation"`` in ``conf/model/embedded.yaml``, set by ``ctc=embedded_segmentation``; the
branch's weights are ``mask_weights``): torchvision's Mask R-CNN branch
(:class:`MaskHeadArch`: ``MultiScaleRoIAlign`` 14x14 with the box head's level rule, ``MaskRCNNHeads``,
``MaskRCNNPredictor``) is attached to the same network. It was trained on top of the frozen shipped detector
(``tools/train_embedded_mask_head.py``), so backbone, FPN, RPN and box head are those of ``embedded.pth``: the
C-layers and the boxes, scores and classes are bit for bit those of the detection model, and only the masks
are new. Its weights (``embedded_mask.pth`` + ``.json``) hold the mask branch alone and name the detector
weights they belong to. A detection's mask is its class's 28x28 probability map pasted into the picture
(torchvision's ``paste_masks_in_image``), thresholded at ``p > 0.5``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vcm_eval.errors import SettingError
from vcm_eval.models.base import SPLIT_LEVELS, SplitModel, WeightsError, check_image, split_of
from vcm_eval.types import Detections, SplitFeatures, SplitMeta
from vcm_eval.weights import SidecarKind, load_with_sidecar

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PACKAGED_WEIGHTS = WEIGHTS_DIR / "embedded.pth"
#: weights shipped in the package, by the synthetic set's style they were trained on (``weights: shapes``
#: reproduces runs made before the natural style became the default)
PACKAGED_VARIANTS: dict[str, Path] = {"natural": PACKAGED_WEIGHTS, "shapes": WEIGHTS_DIR / "embedded_shapes.pth"}
TRAIN_TOOL = "python tools/train_embedded_model.py"
#: the mask branch shipped for the default detector (``task="segmentation"``)
PACKAGED_MASK_WEIGHTS = WEIGHTS_DIR / "embedded_mask.pth"
MASK_TRAIN_TOOL = "python tools/train_embedded_mask_head.py"
#: a pasted mask probability above this is inside the mask (torchvision's and Detectron2's 0.5)
MASK_THRESHOLD = 0.5

_FEATURE_KEYS = ("0", "1", "2", "3")  # torchvision's names of the FPN levels P2..P5


@dataclass(frozen=True)
class EmbeddedArch:
    """Every number that shapes the network; saved in ``embedded.json`` and read back to rebuild it."""

    stem_channels: int = 24
    stage_channels: tuple[int, ...] = (32, 64, 96, 128)
    stage_blocks: tuple[int, ...] = (1, 1, 2, 1)
    fpn_channels: int = 32
    min_size: int = 320
    max_size: int = 480
    size_divisible: int = 32
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    anchor_sizes: tuple[tuple[int, ...], ...] = ((11, 16), (22, 32), (45, 64), (90, 128), (181, 256))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    roi_canonical_scale: int = 112
    roi_canonical_level: int = 4
    box_representation: int = 128
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 500
    rpn_pre_nms_top_n_test: int = 600
    rpn_post_nms_top_n_test: int = 300
    box_batch_size_per_image: int = 128
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 100
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> EmbeddedArch:
        kw = dict(d)
        for key in ("stage_channels", "stage_blocks", "image_mean", "image_std", "aspect_ratios"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if "anchor_sizes" in kw:
            kw["anchor_sizes"] = tuple(tuple(s) for s in kw["anchor_sizes"])
        unknown = set(kw) - set(cls.__dataclass_fields__)
        if unknown:
            raise SettingError(f"unknown architecture fields {sorted(unknown)}")
        return cls(**kw)


@dataclass(frozen=True)
class MaskHeadArch:
    """The mask branch's sizes; saved in ``embedded_mask.json`` and read back to rebuild it.

    ROI features are pooled at ``roi_output`` x ``roi_output`` from P2..P5 with the box head's level rule
    (canonical box ``roi_canonical_scale`` px on level ``roi_canonical_level``), go through ``len(layers)``
    3x3 convolutions + ReLU (``MaskRCNNHeads``), a 2x2 stride-2 transposed convolution to ``dim_reduced``
    channels + ReLU and a 1x1 convolution to one logit map per class (``MaskRCNNPredictor``): class-specific
    masks of ``2 * roi_output`` px square. 32-channel convolutions (torchvision's default is 256) because
    the FPN has 32 channels and the shapes are simple; they keep the branch cheap at 100 detections a picture.
    """

    roi_output: int = 14
    roi_sampling_ratio: int = 2
    roi_canonical_scale: int = 112
    roi_canonical_level: int = 4
    layers: tuple[int, ...] = (32, 32, 32, 32)
    dilation: int = 1
    dim_reduced: int = 32

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> MaskHeadArch:
        kw = dict(d)
        unknown = set(kw) - set(cls.__dataclass_fields__)
        if unknown:
            raise SettingError(f"unknown mask head fields {sorted(unknown)}")
        if "layers" in kw:
            kw["layers"] = tuple(kw["layers"])
        return cls(**kw)


def attach_mask_head(net: FasterRCNN, arch: EmbeddedArch, mask_arch: MaskHeadArch, num_classes: int) -> FasterRCNN:
    """Give ``net``'s ROI heads torchvision's Mask R-CNN branch (``mask_roi_pool``, ``mask_head``,
    ``mask_predictor``; freshly initialised) for ``num_classes`` object classes plus background; returns ``net``.
    With the three set, ``RoIHeads`` predicts a mask for every final detection (and trains them when training)."""
    heads = net.roi_heads
    heads.mask_roi_pool = MultiScaleRoIAlign(list(_FEATURE_KEYS), output_size=mask_arch.roi_output,
                                             sampling_ratio=mask_arch.roi_sampling_ratio,
                                             canonical_scale=mask_arch.roi_canonical_scale,
                                             canonical_level=mask_arch.roi_canonical_level)
    heads.mask_head = MaskRCNNHeads(arch.fpn_channels, list(mask_arch.layers), mask_arch.dilation)
    heads.mask_predictor = MaskRCNNPredictor(mask_arch.layers[-1], mask_arch.dim_reduced, num_classes + 1)
    return net


def mask_head_state(net: FasterRCNN) -> dict[str, torch.Tensor]:
    """The mask branch's parameters (``mask_head.*``, ``mask_predictor.*``): what ``embedded_mask.pth`` holds."""
    heads = net.roi_heads
    state = {f"mask_head.{k}": v for k, v in heads.mask_head.state_dict().items()}
    state.update({f"mask_predictor.{k}": v for k, v in heads.mask_predictor.state_dict().items()})
    return state


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class SmallResNet(nn.Module):
    """Bottom-up network: a stride-4 stem (two stride-2 3x3 convs) then four stages of BasicBlocks.

    ``layer1..layer4`` output ``stage_channels`` at strides 4, 8, 16, 32.

    Example::

        >>> net = SmallResNet(24, (32, 64, 96, 128), (1, 1, 2, 1))
        >>> x = torch.zeros(1, 3, 320, 448)
        >>> [tuple(net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x))))).shape)]
        [(1, 128, 10, 14)]
    """

    def __init__(self, stem_channels: int, stage_channels: Sequence[int], stage_blocks: Sequence[int]) -> None:
        super().__init__()
        if len(stage_channels) != 4 or len(stage_blocks) != 4:
            raise ValueError("SmallResNet needs four stages (C2..C5)")
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True),
            nn.Conv2d(stem_channels, stage_channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(stage_channels[0]),
            nn.ReLU(inplace=True),
        )
        in_ch = stage_channels[0]
        for i, (ch, n) in enumerate(zip(stage_channels, stage_blocks)):
            blocks = [BasicBlock(in_ch, ch, 1 if i == 0 else 2)] + [BasicBlock(ch, ch, 1) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch so every block starts as the identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_network(arch: EmbeddedArch, num_classes: int) -> FasterRCNN:
    """The torchvision Faster R-CNN of ``arch`` for ``num_classes`` object classes (background added)."""
    body = SmallResNet(arch.stem_channels, arch.stage_channels, arch.stage_blocks)
    backbone = BackboneWithFPN(
        body,
        return_layers={f"layer{i + 1}": k for i, k in enumerate(_FEATURE_KEYS)},
        in_channels_list=list(arch.stage_channels),
        out_channels=arch.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(sizes=arch.anchor_sizes, aspect_ratios=(arch.aspect_ratios,) * len(arch.anchor_sizes))
    roi_pool = MultiScaleRoIAlign(list(_FEATURE_KEYS), output_size=7, sampling_ratio=2,
                                  canonical_scale=arch.roi_canonical_scale,
                                  canonical_level=arch.roi_canonical_level)
    rep = arch.box_representation
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=arch.min_size,
        max_size=arch.max_size,
        image_mean=list(arch.image_mean),
        image_std=list(arch.image_std),
        size_divisible=arch.size_divisible,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=arch.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=arch.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=arch.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=arch.rpn_post_nms_top_n_test,
        box_roi_pool=roi_pool,
        box_head=TwoMLPHead(arch.fpn_channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes + 1),
        box_batch_size_per_image=arch.box_batch_size_per_image,
        box_score_thresh=arch.box_score_thresh,
        box_detections_per_img=arch.box_detections_per_img,
    )


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1] (value / 255), the input torchvision expects."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).to(torch.float32).div_(255.0)


def _weights_help(path: Path) -> str:
    return (f"re-create it with `{TRAIN_TOOL} --out {path}` (it writes the .pth and its .json), "
            "or reinstall vcm_eval, whose package ships it")


#: how the messages about the detector's weights read (vcm_eval.weights checks and loads the pair)
WEIGHTS_KIND = SidecarKind(noun="embedded model weights", thing="weights", description="weights description",
                           fix=_weights_help, error=WeightsError, contents=" (classes, architecture)")


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``path`` (a ``.pth`` state dict) and its ``.json`` sidecar; check the sha256 the sidecar records.

    Raises:
        WeightsError: naming the file, when either is missing, unreadable, or the checksum differs.
    """
    path = Path(path).expanduser()

    def check(meta: dict) -> None:
        if not isinstance(meta["class_names"], list) or not isinstance(meta["architecture"], dict):
            raise WEIGHTS_KIND.fail(path.with_suffix(".json"),
                                    "'class_names' must be a list and 'architecture' a mapping", path)

    return load_with_sidecar(path, WEIGHTS_KIND, check)


class EmbeddedDetector(SplitModel):
    """The embedded detector behind the split interface.

    Args:
        net: the torchvision Faster R-CNN (see :func:`build_network`).
        class_names: class index -> name (torchvision label ``i + 1``).
        arch: the architecture ``net`` was built from.
        weights_sha256: sha256 of the weights file, for :meth:`identity`.
        device: torch device the network runs on.

    Example::

        >>> model = build_embedded_model()
        >>> feats = model.encode(rgb)                  # {c2..c5}: (32, H/4..H/32, W/4..W/32) float32
        >>> dets = model.decode(feats)                 # boxes in rgb's pixel coordinates
    """

    name = "embedded"

    def __init__(self, net: FasterRCNN, class_names: Sequence[str], arch: EmbeddedArch,
                 weights_sha256: str, device: str = "cpu", metadata: dict | None = None,
                 mask_arch: MaskHeadArch | None = None, mask_sha256: str | None = None,
                 mask_metadata: dict | None = None) -> None:
        self.net = net.eval().to(device)
        self.class_names = tuple(class_names)
        self.arch = arch
        self.weights_sha256 = weights_sha256
        self.device = torch.device(device)
        self.metadata = dict(metadata or {})
        self.mask_arch = mask_arch
        self.mask_sha256 = mask_sha256
        self.mask_metadata = dict(mask_metadata or {})
        if mask_arch is not None:
            self.name = "embedded_mask"

    @property
    def has_masks(self) -> bool:
        """True when :meth:`decode` returns instance masks (the mask branch is attached)."""
        return self.net.roi_heads.has_mask()

    def encoder_identity(self) -> dict:
        """The detection model's identity: the mask branch changes nothing before the split, so C-layers (and
        everything coded from them) are shared with detection runs of the same detector weights."""
        return {"name": "embedded", "architecture": self.arch.to_json(), "class_names": list(self.class_names),
                "weights_sha256": self.weights_sha256}

    def identity(self) -> dict:
        ident = self.encoder_identity()
        if self.mask_arch is not None:
            ident.update(name=self.name, mask_head={"architecture": self.mask_arch.to_json(),
                                                    "weights_sha256": self.mask_sha256,
                                                    "threshold": MASK_THRESHOLD})
        return ident

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> SplitFeatures:
        image = check_image(image)
        images, _ = self.net.transform([image_to_tensor(image).to(self.device)])
        body = self.net.backbone.body(images.tensors)
        inner = self.net.backbone.fpn.inner_blocks
        layers = {name: inner[i](body[key])[0].cpu().numpy().astype(np.float32, copy=False)
                  for i, (name, key) in enumerate(zip(self.level_names, _FEATURE_KEYS))}
        meta = SplitMeta(original_size=(int(image.shape[0]), int(image.shape[1])),
                         input_size=tuple(int(v) for v in images.image_sizes[0]),
                         padded_size=tuple(int(v) for v in images.tensors.shape[-2:]))
        return SplitFeatures(layers=layers, meta=meta)

    def _check_features(self, features: SplitFeatures) -> str:
        """The split ``features`` are at, after checking every level of it is there with its shape."""
        split = split_of(features)
        ph, pw = features.meta.padded_size
        for name, stride in zip(SPLIT_LEVELS[split], self.level_strides):
            if name not in features.layers:
                raise ValueError(f"split features lack level {name}; got {sorted(features.layers)}")
            shape = np.shape(features.layers[name])
            want = (self.arch.fpn_channels, -(-ph // stride), -(-pw // stride))
            if tuple(shape) != want:
                raise ValueError(f"level {name} has shape {tuple(shape)}, expected {want} for a padded "
                                 f"input of {ph}x{pw}")
        return split

    def _tensors(self, features: SplitFeatures, split: str) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(features.layers[n], dtype=np.float32))[None].to(self.device)
                for n in SPLIT_LEVELS[split]]

    def _fpn_outputs(self, c: list[torch.Tensor]) -> list[torch.Tensor]:
        """torchvision ``FeaturePyramidNetwork.forward`` from the lateral outputs on, without its extra block:
        ``T5 = C5, Tk = Ck + up(T(k+1))`` (nearest, to Ck's size), ``Pk = layer_block_k(Tk)``; [P2..P5]."""
        fpn = self.net.backbone.fpn
        last_inner = c[-1]
        results = [fpn.layer_blocks[-1](last_inner)]
        for idx in range(len(c) - 2, -1, -1):
            inner_lateral = c[idx]
            top_down = F.interpolate(last_inner, size=inner_lateral.shape[-2:], mode="nearest")
            last_inner = inner_lateral + top_down
            results.insert(0, fpn.layer_blocks[idx](last_inner))
        return results

    @torch.inference_mode()
    def c_to_p(self, features: SplitFeatures) -> SplitFeatures:
        """C-layers -> P-layers ``p2..p5``: the FPN's top-down sums and 3x3 output convolutions (32 channels
        each, the C-layers' shapes). P6 ("pool") is left to the receiver (:mod:`vcm_eval.models.base`)."""
        if self._check_features(features) != "c":
            raise ValueError(f"c_to_p takes C-layers, got levels {sorted(features.layers)}")
        p = self._fpn_outputs(self._tensors(features, "c"))
        layers = {name: t[0].cpu().numpy().astype(np.float32, copy=False) for name, t in zip(SPLIT_LEVELS["p"], p)}
        return features.replace_layers(layers)

    @torch.inference_mode()
    def decode(self, features: SplitFeatures) -> Detections:
        split = self._check_features(features)
        fpn = self.net.backbone.fpn
        x = self._tensors(features, split)
        results = self._fpn_outputs(x) if split == "c" else x
        # P6 ("pool"): LastLevelMaxPool subsamples the last P-layer and ignores its second argument (the
        # C-layers), so the same call serves both splits and gives the receiver the P6 the unsplit model has.
        if not isinstance(fpn.extra_blocks, LastLevelMaxPool):
            raise ValueError(f"the embedded FPN's extra block is {type(fpn.extra_blocks).__name__}; "
                             "only LastLevelMaxPool is derivable from P5")
        results, names = fpn.extra_blocks(results, x, list(_FEATURE_KEYS))
        feats = OrderedDict(zip(names, results))

        meta = features.meta
        # The RPN's anchor generator reads only the padded shape, dtype and device of the batch tensor.
        placeholder = torch.zeros((1, 1, 1, 1), device=self.device).expand(1, 3, *meta.padded_size)
        image_list = ImageList(placeholder, [tuple(meta.input_size)])
        proposals, _ = self.net.rpn(image_list, feats)
        dets, _ = self.net.roi_heads(feats, proposals, image_list.image_sizes)
        dets = self.net.transform.postprocess(dets, image_list.image_sizes, [tuple(meta.original_size)])
        return _to_detections(dets[0])

    @torch.inference_mode()
    def detect_unsplit(self, image: np.ndarray) -> Detections:
        """torchvision's own ``FasterRCNN.forward`` (no split): the reference that ``detect`` must equal."""
        image = check_image(image)
        return _to_detections(self.net([image_to_tensor(image).to(self.device)])[0])


def _to_detections(out: dict[str, torch.Tensor]) -> Detections:
    masks = None
    if "masks" in out:  # (N, 1, H, W) pasted probabilities from the mask branch
        masks = (out["masks"][:, 0] > MASK_THRESHOLD).cpu().numpy()
    return Detections(out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(), out["labels"].cpu().numpy() - 1,
                      masks=masks)


def _mask_help(path: Path) -> str:
    return (f"re-create it with `{MASK_TRAIN_TOOL} --out {path}` (it writes the .pth and its .json), "
            "or reinstall vcm_eval, whose package ships it")


#: how the messages about the mask branch's weights read
MASK_WEIGHTS_KIND = SidecarKind(noun="embedded mask head weights", thing="weights",
                                description="mask head description", fix=_mask_help, error=WeightsError,
                                contents=" (mask architecture, detector weights)")


def load_mask_weights(path: str | Path, detector_sha256: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a mask branch (``.pth``) and its ``.json``; check its sha256 and that it was trained on the detector
    whose weights have sha256 ``detector_sha256``.

    Raises:
        WeightsError: naming the file, when either is missing, unreadable, corrupt or for other detector weights.
    """
    path = Path(path).expanduser()

    def check(meta: dict) -> None:
        detector, arch = meta["detector_sha256"], meta["mask_architecture"]
        if not isinstance(arch, dict):
            raise MASK_WEIGHTS_KIND.fail(path.with_suffix(".json"), "'mask_architecture' must be a mapping", path)
        # checked before the sha256: a mask head for other detector weights is refused whatever its bytes
        if detector != detector_sha256:
            raise MASK_WEIGHTS_KIND.fail(path, f"this mask head was trained on detector weights "
                                               f"{str(detector)[:16]}..., not on those in use "
                                               f"({detector_sha256[:16]}...)", path)

    return load_with_sidecar(path, MASK_WEIGHTS_KIND, check)


def build_embedded_model(weights: str | Path | None = None, device: str = "cpu", task: str = "detection",
                         mask_weights: str | Path | None = None) -> EmbeddedDetector:
    """The embedded detector with ``weights``: ``None`` (the file shipped in the package), the name of a shipped
    variant (:data:`PACKAGED_VARIANTS`: ``natural``, ``shapes``), or the path of a ``.pth`` with its ``.json``.

    ``task="segmentation"`` attaches the mask branch ``mask_weights`` (``None``: :data:`PACKAGED_MASK_WEIGHTS`,
    trained for the default detector; else the path of a ``.pth`` written by the mask training tool), whose
    ``.json`` must name these detector weights. ``task="detection"`` gives the box detector, as always.

    Raises:
        WeightsError: when the weights or their ``.json`` are missing, corrupt, or do not fit the architecture.
        ValueError: an unknown task.
    """
    from vcm_eval.data.base import check_task

    check_task(task)
    if weights is None:
        path = PACKAGED_WEIGHTS
    elif str(weights) in PACKAGED_VARIANTS:
        path = PACKAGED_VARIANTS[str(weights)]
    else:
        path = Path(weights).expanduser()
    state, meta = load_weights(path)
    try:
        arch = EmbeddedArch.from_json(meta["architecture"])
        net = build_network(arch, len(meta["class_names"]))
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: weights do not fit the architecture described in "
                           f"{path.with_suffix('.json').name} ({exc}); {_weights_help(path)}") from exc
    if task == "detection":
        return EmbeddedDetector(net, meta["class_names"], arch, meta["sha256"], device=device, metadata=meta)
    mask_path = PACKAGED_MASK_WEIGHTS if mask_weights is None else Path(mask_weights).expanduser()
    mask_state, mask_meta = load_mask_weights(mask_path, meta["sha256"])
    try:
        mask_arch = MaskHeadArch.from_json(mask_meta["mask_architecture"])
        attach_mask_head(net, arch, mask_arch, len(meta["class_names"]))
        missing, unexpected = net.roi_heads.load_state_dict(mask_state, strict=False)
        missing = [k for k in missing if k.startswith(("mask_head.", "mask_predictor."))]
        if missing or unexpected:
            raise RuntimeError(f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    except (RuntimeError, ValueError, TypeError) as exc:
        raise WeightsError(f"{mask_path}: weights do not fit the mask head described in "
                           f"{mask_path.with_suffix('.json').name} ({exc}); {_mask_help(mask_path)}") from exc
    return EmbeddedDetector(net, meta["class_names"], arch, meta["sha256"], device=device, metadata=meta,
                            mask_arch=mask_arch, mask_sha256=mask_meta["sha256"], mask_metadata=mask_meta)
