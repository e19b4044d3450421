"""Task networks behind the split interface (:class:`SplitModel`)."""

from vcm_eval.models.base import SplitModel, WeightsError, check_image

__all__ = ["SplitModel", "WeightsError", "check_image"]
