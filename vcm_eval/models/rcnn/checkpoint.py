"""Loading Detectron2 checkpoints (model-zoo ``.pkl`` and trained ``.pth``) with strict key matching.

Zoo ``.pkl`` files are pickles of ``{"model": {name: numpy array}, "__author__": ..., ...}``;
Detectron2's trainer writes ``.pth`` files holding ``{"model": state_dict, "optimizer": ...}``.
Pickles are read with an unpickler that only rebuilds numpy arrays and plain containers, so a
weights file cannot run code. Unlike Detectron2's checkpointer (which logs and carries on) every
missing, unexpected or mis-shaped entry is an error, except the entries Detectron2 itself never
loads: ``pixel_mean``, ``pixel_std`` and the anchor generator's ``cell_anchors``.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vcm_eval.models.base import WeightsError
from vcm_eval.models.rcnn.zoo import RCNNConfig

#: Checkpoint entries Detectron2 does not load (non-persistent buffers there too).
_IGNORED = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\.cell_anchors\.\d+"
                      r"|.*\.num_batches_tracked)$")

_PICKLE_ALLOWED = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays, dtypes and OrderedDicts."""

    def find_class(self, module: str, name: str):
        # numpy 1.x pickles name numpy.core, which numpy 2 renamed to numpy._core.
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        if module.startswith("numpy.dtypes") or (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a weights pickle holds only arrays")


def _fix_message(cfg: RCNNConfig | None) -> str:
    if cfg is None:
        return ""
    env = f" (or set {cfg.weights_env})" if cfg.weights_env else ""
    return (f" For {cfg.zoo_name} fetch the Detectron2 model-zoo file {cfg.weights_file} "
            f"({cfg.weights_url}) and give its path as the config key model.weights{env}; tools take it as --weights.")


def read_checkpoint(path: str | Path | None, cfg: RCNNConfig | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a Detectron2 ``.pkl`` or ``.pth`` checkpoint as float tensors.

    Args:
        path: the weights file; ``None`` means "not configured".
        cfg: the configuration the weights are for, named in error messages.

    Raises:
        WeightsError: the file is not configured, missing, unreadable, or holds no model; the
            message names the zoo file to fetch and the ``model.weights`` key.
    """
    if path is None or str(path) == "":
        raise WeightsError("no weights file configured." + (_fix_message(cfg) or
                           " Give a Detectron2 checkpoint path as model.weights."))
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist." + (_fix_message(cfg) or
                           " Give a Detectron2 checkpoint path as model.weights."))
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                data = _ArrayUnpickler(f, encoding="latin1").load()
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure means the same thing to the user
        raise WeightsError(f"{path}: cannot read this weights file ({type(exc).__name__}: {exc}); it is "
                           "corrupt or not a Detectron2 checkpoint." + _fix_message(cfg)) from exc
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    elif isinstance(data, dict) and "blobs" in data:
        raise WeightsError(f"{path}: this is a Caffe2/Detectron1 pickle (it has 'blobs'), not a Detectron2 "
                           "detection checkpoint; use the Detectron2 model-zoo model_final_*.pkl."
                           + _fix_message(cfg))
    if not isinstance(data, dict) or not data:
        raise WeightsError(f"{path}: holds no state dict (expected a dict with a 'model' entry)." + _fix_message(cfg))
    if all(isinstance(k, str) and k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}  # saved from DistributedDataParallel
    state: dict[str, torch.Tensor] = {}
    for name, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        counter = name.endswith("num_batches_tracked")
        if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or counter):
            raise WeightsError(f"{path}: entry {name!r} is {type(value).__name__}, not a float array; "
                               "not a Detectron2 checkpoint." + _fix_message(cfg))
        state[str(name)] = value
    return state


def describe_state(state: dict[str, torch.Tensor]) -> str:
    """A short guess at the architecture a state dict belongs to, for error messages."""
    prefix = "backbone.bottom_up."
    if not any(k.startswith(prefix) for k in state):
        sample = ", ".join(sorted(state)[:3])
        return f"not a Detectron2 ResNet-FPN model (keys such as {sample})"
    res4 = {int(m.group(1)) for k in state if (m := re.match(r"backbone\.bottom_up\.res4\.(\d+)\.", k))}
    depth = {6: "ResNet-50", 23: "ResNet-101", 36: "ResNet-152"}.get(len(res4), f"{len(res4)} res4 blocks")
    parts = [depth]
    conv2 = state.get(prefix + "res2.0.conv2.weight")
    if conv2 is not None and conv2.ndim == 4 and conv2.shape[1] > 0:
        parts.append(f"{conv2.shape[0] // conv2.shape[1]} groups x {conv2.shape[1]} wide")
    kind = "Mask R-CNN" if any(k.startswith("roi_heads.mask_head.") for k in state) else "Faster R-CNN"
    if not any(k.startswith("roi_heads.box_predictor.") for k in state):
        kind = "backbone only (no detection heads)"
    cls = state.get("roi_heads.box_predictor.cls_score.weight")
    classes = f", {cls.shape[0] - 1} classes" if cls is not None else ""
    return f"{kind}, {', '.join(parts)}{classes}"


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str,
               cfg: RCNNConfig | None = None) -> None:
    """Copy ``state`` into ``model``, requiring every persistent entry and nothing else.

    Raises:
        WeightsError: listing missing keys, unexpected keys and shape mismatches, with a guess
            at the architecture the checkpoint is for.
    """
    expected = model.state_dict()
    provided = {k: v for k, v in state.items() if not _IGNORED.match(k)}
    missing = [k for k in expected if k not in provided]
    unexpected = sorted(k for k in provided if k not in expected)
    mismatched = [f"{k} {tuple(provided[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in provided and provided[k].shape != v.shape]
    if missing or unexpected or mismatched:
        want = cfg.zoo_name if cfg is not None else type(model).__name__
        lines = [f"{source} does not fit {want}: the checkpoint looks like {describe_state(state)}."]
        if missing:
            lines.append(f"Missing keys ({len(missing)}): {_listing(missing)}.")
        if unexpected:
            lines.append(f"Unexpected keys ({len(unexpected)}): {_listing(unexpected)}.")
        if mismatched:
            lines.append(f"Shape mismatches ({len(mismatched)}, checkpoint vs model): {_listing(mismatched, 4)}.")
        lines.append("Use the checkpoint made for this zoo configuration, or pick the zoo_name the "
                     "checkpoint was trained with." + _fix_message(cfg))
        raise WeightsError(" ".join(lines))
    model.load_state_dict(provided, strict=True)
