"""The paper's compression-distortion compensation, as pure array functions.

The FPN decoder rebuilds ``T_k = C_k + up(T_{k+1})``; coding ``C_{k+1}`` with error ``E_{k+1}``
therefore leaks ``up(E_{k+1})`` into every finer level. Adding that error to the finer level
before it is coded cancels it in the decoder's sum (closed loop, DPCM-style)::

    E_N = C'_N - dec(enc(C'_N));    C'_{N-1} = C_{N-1} + up(E_N)
"""

from __future__ import annotations

import numpy as np


def upsample_nearest(x: np.ndarray, target_hw: tuple[int, int]) -> np.ndarray:
    """2x nearest-neighbour upsampling of (C, H, W), as ``F.interpolate(scale_factor=2, mode='nearest')``
    in the FPN: ``y[:, i, j] = x[:, i // 2, j // 2]``, cropped to ``target_hw``.

    Raises:
        ValueError: when ``target_hw`` is not within the 2x upsampled size (the FPN's levels always are).
    """
    th, tw = target_hw
    if th > 2 * x.shape[1] or tw > 2 * x.shape[2]:
        raise ValueError(f"cannot upsample {x.shape[1:]} x2 to {target_hw}")
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)[:, :th, :tw]


def coding_error(coded_input: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """``E_N = C'_N - dec(enc(C'_N))``: what the codec took away from the map it was given."""
    return coded_input.astype(np.float32) - reconstruction.astype(np.float32)


def add_upsampled_error(finer: np.ndarray, error: np.ndarray) -> np.ndarray:
    """``C'_{N-1} = C_{N-1} + up(E_N)``: the finer level that goes to the codec instead of ``C_{N-1}``."""
    return finer.astype(np.float32) + upsample_nearest(error, finer.shape[1:]).astype(np.float32)


def top_down_sums(
    layers: dict[str, np.ndarray], order: tuple[str, ...] = ("c5", "c4", "c3", "c2")
) -> dict[str, np.ndarray]:
    """The FPN's top-down maps before the output convolutions: ``T5 = C5``, ``Tk = Ck + up(T(k+1))``.

    ``order`` lists the levels coarse to fine; keys of the result are the same level names.
    """
    sums: dict[str, np.ndarray] = {}
    previous = None
    for level in order:
        current = layers[level].astype(np.float32)
        if previous is not None:
            current = current + upsample_nearest(previous, current.shape[1:])
        sums[level] = current
        previous = current
    return sums
