"""The training data of the learned entry: the frozen split model and random crops of its train C-layers.

The C-layers of the synthetic **train** split (never val, never the CTC's pictures) are computed once and
kept in memory; a batch is random crops aligned to stride 32, so that every level crops exactly.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from proposals.learned_fusion.network import LEVELS


def build_split_model(overrides: list[str]):
    """The split model of ``conf/model`` with ``overrides`` (Hydra syntax), as the pipeline builds it;
    returns ``(model, composed config)``."""
    import vcm_eval
    from vcm_eval.build import build
    from vcm_eval.models.base import SplitModel

    cfg = vcm_eval.compose(*overrides)
    return build(cfg.model, expect=SplitModel, what="model"), cfg


def train_clayers(model, num: int, seed: int, style: str, first: int = 0) -> list[list[np.ndarray]]:
    """C-layers ``[c2..c5]`` of train pictures ``first .. first + num - 1``."""
    from vcm_eval.data.synthetic import generate_image

    torch_threads = torch.get_num_threads()
    out = []
    t0 = time.time()
    for i in range(first, first + num):
        rgb, _ = generate_image(seed, "train", i, style)
        feats = model.encode(rgb)
        out.append([np.ascontiguousarray(feats.layers[lv], dtype=np.float32) for lv in LEVELS])
        if (i - first + 1) % 200 == 0:
            print(f"  C-layers of {i - first + 1}/{num} train pictures ({time.time() - t0:.0f} s)", flush=True)
    torch.set_num_threads(torch_threads)
    return out


def random_batch(data: list[list[np.ndarray]], rng: np.random.Generator, batch: int, crop: int) -> list[torch.Tensor]:
    """``batch`` crops of ``crop`` input pixels (offsets on the stride-32 grid), per level ``(B, C, h, w)``."""
    c5 = crop // 32
    per_level: list[list[np.ndarray]] = [[] for _ in LEVELS]
    for _ in range(batch):
        layers = data[int(rng.integers(len(data)))]
        h5, w5 = layers[3].shape[-2:]
        oy = int(rng.integers(max(1, h5 - c5 + 1)))
        ox = int(rng.integers(max(1, w5 - c5 + 1)))
        flip = bool(rng.random() < 0.5)
        for k, a in enumerate(layers):
            s = 2 ** (3 - k)  # c2 is 8x c5
            part = a[:, oy * s:(oy + c5) * s, ox * s:(ox + c5) * s]
            per_level[k].append(part[:, :, ::-1] if flip else part)
    return [torch.from_numpy(np.ascontiguousarray(np.stack(p))) for p in per_level]
