"""vcm_eval: evaluation of feature-pyramid compression for machine vision (MPEG VCM / FCM style)."""

__version__ = "0.1.0"
