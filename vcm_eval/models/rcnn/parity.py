"""Compare one model run, stage by stage, with Detectron2 reference arrays (``golden_*.npz`` layout).

A run is a dict of arrays under the golden files' keys (:data:`STAGE_KEYS`). Row-wise outputs whose
order is not stable across float roundings are matched before they are compared: proposals as sets
(each reference box to our nearest box), final instances by class and box. :func:`spread` measures
how far a run is from the reference per tensor, in the two numbers an ``assert_allclose(rtol, atol)``
tolerance needs; ``tools/parity_spread.py`` records them under every CPU kernel choice, and the parity
tests derive their tolerances from that record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: tensors compared numerically, in pipeline order (``p2`` only on the reference's stored channels)
STAGE_KEYS: tuple[str, ...] = ("c2", "c3", "c4", "c5", "p2", "p3", "p4", "p5", "p6", "proposal_boxes",
                               "proposal_logits", "roi_cls_logits", "boxes_resized", "pred_boxes", "scores")


@dataclass(frozen=True)
class Spread:
    """How far one tensor is from its reference, ``d = |ours - ref|``.

    ``abs_small`` = A = max d over elements with |ref| < 1; ``rel_large`` = R = max (d - A) / |ref| over
    elements with |ref| >= 1 (0 when none exceeds A): the tightest bound ``d <= A + R * |ref|`` that holds
    for every element, so any ``assert_allclose(ours, ref, atol >= A, rtol >= R)`` passes. Where the
    difference does not grow with the values (logits), R stays near 0 and the bound stays absolute; where
    it does (box coordinates in pixels), R carries it. ``max_abs`` = max d, for reading.
    """

    abs_small: float
    rel_large: float
    max_abs: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @staticmethod
    def of(ours: np.ndarray, ref: np.ndarray) -> Spread:
        ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
        if ours.shape != ref.shape:
            raise ValueError(f"shapes differ: {ours.shape} against the reference's {ref.shape}")
        diff, mag = np.abs(ours - ref), np.abs(ref)
        small, large = mag < 1, mag >= 1
        abs_small = float(diff[small].max(initial=0.0))
        return Spread(abs_small=abs_small,
                      rel_large=float(((diff[large] - abs_small) / mag[large]).max(initial=0.0)),
                      max_abs=float(diff.max(initial=0.0)))

    @staticmethod
    def worst(spreads: list[Spread]) -> Spread:
        """A Spread bounding each of ``spreads`` (every field at its maximum: the bound of each holds for it)."""
        return Spread(*(max(getattr(s, f) for s in spreads) for f in ("abs_small", "rel_large", "max_abs")))


def match_rows(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """For each reference box (N, 4), the index of our box (M, 4) nearest in max-abs coordinate distance."""
    dist = np.abs(ref[:, None, :].astype(np.float64) - ours[None, :, :]).max(axis=2)
    return dist.argmin(axis=1)


def match_instances(boxes: np.ndarray, classes: np.ndarray, ref_boxes: np.ndarray, ref_classes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For each reference instance, the index of our nearest box of the same class and its distance (px)."""
    dist = np.abs(ref_boxes.astype(np.float64)[:, None, :] - boxes[None]).max(axis=2)
    dist[ref_classes[:, None] != classes[None, :]] = np.inf
    idx = dist.argmin(axis=1)
    return idx, dist[np.arange(len(idx)), idx]


def aligned(run: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``run``'s arrays reordered to the reference's rows (proposals as sets, instances by class and box).

    Raises:
        ValueError: the row counts differ, or two reference rows match the same row of ``run``.
    """
    out = {k: run[k] for k in ("c2", "c3", "c4", "c5", "p3", "p4", "p5", "p6")}
    out["p2"] = run["p2"][:, ref["p2_channels"]] if "p2_channels" in ref else run["p2"]
    if run["proposal_boxes"].shape != ref["proposal_boxes"].shape:
        raise ValueError(f"{len(run['proposal_boxes'])} proposals against {len(ref['proposal_boxes'])}")
    idx = match_rows(run["proposal_boxes"], ref["proposal_boxes"])
    if len(set(idx.tolist())) != len(idx):
        raise ValueError("two reference proposals matched the same box")
    for key in ("proposal_boxes", "proposal_logits", "roi_cls_logits"):
        if key in run and key in ref:
            out[key] = run[key][idx]
    if len(run["scores"]) != len(ref["scores"]):
        raise ValueError(f"{len(run['scores'])} instances against {len(ref['scores'])}")
    for key in ("pred_boxes", "boxes_resized"):
        idx, _ = match_instances(run[key], run["pred_classes"], ref[key], ref["pred_classes"])
        if len(set(idx.tolist())) != len(idx):
            raise ValueError(f"two reference instances matched the same one ({key})")
        out[key] = run[key][idx]
        if key == "pred_boxes":
            out["scores"], out["pred_classes"] = run["scores"][idx], run["pred_classes"][idx]
    return out


def spread(run: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Spread]:
    """Per tensor of :data:`STAGE_KEYS` present in both, how far ``run`` is from ``ref`` after matching rows."""
    ours = aligned(run, ref)
    ref = {**ref, "p2": ref.get("p2_sub", ref.get("p2"))}
    return {k: Spread.of(ours[k], ref[k]) for k in STAGE_KEYS if k in ours and ref.get(k) is not None}


def stage_arrays(stages) -> dict[str, np.ndarray]:
    """vcm_eval's :class:`~vcm_eval.models.rcnn.model.StageOutputs` as arrays under the golden keys."""
    out = {k: v.cpu().numpy() for k, v in {**stages.c_layers, **stages.p_layers}.items()}
    heads = stages.heads
    out.update({k: heads[k].cpu().numpy() for k in ("proposal_boxes", "proposal_logits", "roi_cls_logits")})
    out["boxes_resized"] = heads["boxes"].cpu().numpy()
    dets = stages.detections
    out.update(pred_boxes=dets.boxes, scores=dets.scores, pred_classes=dets.classes)
    return out


# ------------------------------------------------------------------------------------------- Mask R-CNN
def mask_stage_arrays(stages) -> dict[str, np.ndarray]:
    """The mask outputs of a Mask R-CNN :class:`~vcm_eval.models.rcnn.model.StageOutputs` under the golden keys:
    ``mask_logits`` (N, 28, 28), rows as ``boxes_resized``; ``pred_masks`` (N, H, W) bool, rows as ``pred_boxes``."""
    return {"mask_logits": stages.heads["mask_logits"].cpu().numpy(), "pred_masks": stages.detections.masks}


def mask_pixel_budget(boxes: np.ndarray) -> np.ndarray:
    """Per box (N, 4) in picture pixels, how many pasted-mask pixels may differ from the reference's:
    ``max(1, 0.5 % of (ceil(x1) - floor(x0)) * (ceil(y1) - floor(y0)))`` (the golden files' README: pixels
    whose resampled probability lies within float rounding of 0.5 can flip either way)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    extent = (np.ceil(boxes[:, 2]) - np.floor(boxes[:, 0])) * (np.ceil(boxes[:, 3]) - np.floor(boxes[:, 1]))
    return np.maximum(1, np.floor(0.005 * extent)).astype(np.int64)


@dataclass(frozen=True)
class MaskComparison:
    """How one run's masks compare with the reference's, per reference instance (matched by class and box).

    ``logits``: :class:`Spread` of the 28x28 mask logits; ``pixels``: differing pasted pixels per instance;
    ``budget``: :func:`mask_pixel_budget` of the reference boxes; ``iou``: pasted-mask IoU per instance (1 where
    both are empty).
    """

    logits: Spread
    pixels: np.ndarray
    budget: np.ndarray
    iou: np.ndarray

    @property
    def worst_over_budget(self) -> int:
        """Largest ``pixels - budget`` (<= 0 when every instance is within its budget)."""
        return int((self.pixels - self.budget).max(initial=-1))


def compare_masks(run: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> MaskComparison:
    """Match ``run``'s instances to ``ref``'s by class and box, then compare mask logits and pasted masks.

    Both dicts hold ``pred_boxes``, ``boxes_resized``, ``pred_classes``, ``mask_logits`` and ``pred_masks``
    (the golden ``pred_masks_packed`` unpacked). ``mask_logits`` rows follow ``boxes_resized`` and ``pred_masks``
    rows ``pred_boxes``; both are the same instances when ``detector_postprocess`` dropped none, which is required.

    Raises:
        ValueError: instance counts differ, or two reference instances match the same one of ``run``.
    """
    n = len(ref["pred_classes"])
    for name, arrays in (("run", run), ("reference", ref)):
        counts = {len(arrays[k]) for k in ("pred_boxes", "boxes_resized", "pred_classes", "mask_logits", "pred_masks")}
        if counts != {n}:
            raise ValueError(f"{name}: instance counts {sorted(counts)} differ from the reference's {n} (an instance "
                             "dropped after the mask head cannot be compared)")
    out = {}
    for key in ("boxes_resized", "pred_boxes"):
        idx, _ = match_instances(run[key], run["pred_classes"], ref[key], ref["pred_classes"])
        if len(set(idx.tolist())) != len(idx):
            raise ValueError(f"two reference instances matched the same one ({key})")
        out[key] = idx
    logits = Spread.of(run["mask_logits"][out["boxes_resized"]], ref["mask_logits"])
    ours = np.asarray(run["pred_masks"], bool)[out["pred_boxes"]]
    theirs = np.asarray(ref["pred_masks"], bool)
    pixels = (ours != theirs).reshape(n, -1).sum(axis=1)
    inter = (ours & theirs).reshape(n, -1).sum(axis=1)
    union = (ours | theirs).reshape(n, -1).sum(axis=1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return MaskComparison(logits=logits, pixels=pixels, budget=mask_pixel_budget(ref["pred_boxes"]), iou=iou)
