"""vcm_eval: evaluation of feature-pyramid compression for machine vision (MPEG VCM / FCM style)."""

__version__ = "0.1.0"

__all__ = ["compose", "run"]


def compose(*overrides: str, **kwargs):
    """The configuration ``python -m vcm_eval <overrides>`` would run; see :func:`vcm_eval.api.compose`."""
    from vcm_eval.api import compose as _compose

    return _compose(*overrides, **kwargs)


def run(cfg, out_dir=None):
    """Run a composed configuration and return its :class:`~vcm_eval.api.Results` (nothing printed); see
    :func:`vcm_eval.api.run`."""
    from vcm_eval.api import run as _run

    return _run(cfg, out_dir)
