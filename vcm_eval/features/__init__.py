"""Pure numerics between float C-layers and codec pictures: quantise, pack, compensate."""

from vcm_eval.features.compensation import add_upsampled_error, coding_error, top_down_sums, upsample_nearest
from vcm_eval.features.packing import PackingGeometry, grid_shape, pack_channels, unpack_channels
from vcm_eval.features.quantize import QuantParams, dequantize, min_max_params, quantize

__all__ = [
    "PackingGeometry",
    "QuantParams",
    "add_upsampled_error",
    "coding_error",
    "dequantize",
    "grid_shape",
    "min_max_params",
    "pack_channels",
    "quantize",
    "top_down_sums",
    "unpack_channels",
    "upsample_nearest",
]
