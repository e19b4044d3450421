"""Scoring: detection metrics (pycocotools, Open Images), bits and bpp, BD-rate."""
