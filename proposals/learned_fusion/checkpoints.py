"""The learned entry's checkpoints: ``<folder>/rp<i>.pth`` and the ``rp<i>.json`` that describes it.

The JSON records the rate point's lambda, the architecture, the training settings and the sha256 of the
``.pth``; reading goes through the project's one sidecar loader (:mod:`vcm_eval.weights`), which checks
the sha256 before torch reads a byte, so a damaged or replaced checkpoint is an error naming the file and
the tool that re-creates it.
"""

from __future__ import annotations

from pathlib import Path

from proposals.learned_fusion.errors import LearnedFusionError
from proposals.learned_fusion.network import FusionArch, FusionCodec, state_from_storage
from vcm_eval.weights import SidecarKind, load_with_sidecar, read_sidecar

#: where the shipped checkpoints live (package data of ``proposals``, see pyproject.toml)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "learned_fusion"
TRAIN_TOOL = "python tools/train_learned_fusion.py"


def checkpoint_path(weights_dir: str | Path | None, rate_point: int) -> Path:
    """``<weights_dir>/rp<rate_point>.pth`` (``weights_dir`` None: the shipped checkpoints)."""
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir).expanduser()
    return folder / f"rp{int(rate_point)}.pth"


def _help(path: Path) -> str:
    return (f"re-create it with `{TRAIN_TOOL}` (writes rp<i>.pth and rp<i>.json for every rate point; "
            f"--out-dir {path.parent} for this folder), or reinstall vcm_eval, whose package ships them")


#: how the messages about a checkpoint read
CHECKPOINT_KIND = SidecarKind(noun="learned_fusion checkpoint", thing="checkpoint",
                              description="checkpoint description", fix=_help, error=LearnedFusionError)


def _check_description(meta: dict) -> None:
    """Refuse a description without a usable architecture or lambda (reported as unreadable)."""
    FusionArch.from_json(meta["architecture"])
    float(meta["lambda"])


def read_checkpoint_meta(path: Path) -> dict:
    """The JSON beside a checkpoint, with the sha256 of the ``.pth`` checked against it.

    Raises:
        LearnedFusionError: naming the file, when either file is missing, the JSON is unreadable, or the
            sha256 differs.
    """
    return read_sidecar(path, CHECKPOINT_KIND, _check_description)


def load_checkpoint(path: Path) -> tuple[FusionCodec, dict]:
    """The trained network of ``path`` (CDF tables included) and its JSON description.

    Raises:
        LearnedFusionError: naming the file, when it is missing, corrupt, or does not fit its architecture.
    """
    state, meta = load_with_sidecar(path, CHECKPOINT_KIND, _check_description)
    net = FusionCodec(FusionArch.from_json(meta["architecture"]))
    try:
        net.load_state_dict(state_from_storage(state), strict=True)
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:  # mismatched keys, shapes, non-tensors
        raise LearnedFusionError(f"{path}: checkpoint does not fit the architecture in "
                                 f"{path.with_suffix('.json').name} ({exc}); {_help(path)}") from exc
    if net.gaussian_conditional.quantized_cdf.numel() == 0 or net.entropy_bottleneck.quantized_cdf.numel() == 0:
        raise LearnedFusionError(f"{path}: the checkpoint has no CDF tables (saved before update(force=True)); "
                                 f"{_help(path)}")
    return net.eval(), meta
