#!/usr/bin/env python
"""Plan a sweep before running it: how many coding tasks a CTC has, how fast the selected codec codes
C-layer pictures here, what the whole sweep costs in core-hours and wall time on N workers, how much disk
its store needs (peak and final, per kind, for each ``store.keep_features`` policy) and how much memory a
worker needs.

    python tools/plan_sweep.py                                   # the embedded CTC, x265
    python tools/plan_sweep.py ctc=paper codec=vvenc proposal=compensation --workers 1 64 512
    python tools/plan_sweep.py ctc=paper codec=vtm proposal=compensation --clayers x101_image.npz

Arguments of the form key=value are Hydra overrides, exactly as for ``python -m vcm_eval``. The sample
codes the first ``--sample-images`` pictures of the data set (or the C-layer files given with
``--clayers``, e.g. written by ``tools/run_detector.py --save-clayers``) at one QP with every feature
entry, with a fresh bitstream cache so every picture is really encoded. Projections assume the
sample's mean picture size and seconds per Mpixel for every image and QP (lower QPs code slower), and
ideal scaling across workers; the anchor and the proposal share their identical encodes (the coarsest
level, and uncompensated levels) in a real sweep, which the projection counts.

Disk: the sample's objects are serialised exactly as the sweep stores them (C-layers, bitstreams with
their records, coded-feature records, detections on the uncoded C-layers and on the sample's coded
pictures, and, when the data set is sampled, the image entries' pictures at their middle QP), and
multiplied by the CTC's pictures, entries and QPs. Bitstreams are measured at one QP (lower QPs make
larger ones). With ``keep_features=until_done`` no C-layers stay, and at most ``pictures_in_flight``
pictures hold them at once (docs/scale.md), which bounds the peak. ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

import vcm_eval
from vcm_eval.build import build
from vcm_eval.cli import USER_ERRORS, build_entries
from vcm_eval.codecs.base import VideoCodec
from vcm_eval.codecs.cache import CachedCodec
from vcm_eval.data.base import DetectionDataset
from vcm_eval.evaluation.distortion import topdown_psnr
from vcm_eval.methods import CodedFeatures, CodedImage, FeatureCodingMethod, ImageCodingMethod
from vcm_eval.models.base import SplitModel
from vcm_eval.pipeline import Retention, StoreSettings, build_model
from vcm_eval.pipeline.records import clayer_arrays, detection_record, uncompressed_record
from vcm_eval.store import Store
from vcm_eval.types import SplitFeatures, SplitMeta

#: store kinds a sweep writes, in the order they are printed
KINDS = ("clayers", "bitstreams", "coded", "detections")


def load_clayers(path: Path) -> SplitFeatures:
    with np.load(path) as npz:
        layers = {k: np.asarray(npz[k], np.float32).reshape(npz[k].shape[-3:]) for k in ("c2", "c3", "c4", "c5")}
    h, w = layers["c2"].shape[1] * 4, layers["c2"].shape[2] * 4
    return SplitFeatures(layers, SplitMeta((h, w), (h, w), (h, w)))


@dataclass
class Sample:
    """The sampled pictures: their C-layers, and (unless ``--clayers``) the pictures and the model."""

    features: list[SplitFeatures]
    pictures: list[np.ndarray] | None = None
    model: SplitModel | None = None


def sample_inputs(cfg, args) -> Sample:
    """C-layers of the first ``--sample-images`` pictures of the data set, or of the ``--clayers`` files."""
    if args.clayers:
        return Sample([load_clayers(p) for p in args.clayers])
    dataset = build(cfg.dataset, expect=DetectionDataset, what="dataset")
    model = build_model(json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True))
    pictures = [dataset.load(r) for r in dataset.records()[: args.sample_images]]
    return Sample([model.encode(p) for p in pictures], pictures, model)


def features_at(sample: Sample, split: str) -> list[SplitFeatures]:
    """The sample's features at an entry's split point (the model carries C-layers on, as the sweep does).

    Raises:
        ValueError: a split other than the C-layers with no model to carry them there (``--clayers``).
    """
    if split == "c":
        return sample.features
    if sample.model is None:
        raise ValueError(f"an entry codes the split point {split!r}: planning it needs the model, which --clayers "
                         "leaves out; sample pictures of the data set instead")
    return [sample.model.to_split(feats, split) for feats in sample.features]


_KEYS = itertools.count()


def stored_size(store: Store, kind: str, obj: dict | None = None, arrays: dict | None = None,
                refs: int = 0, refers_to: str = "bitstreams") -> int:
    """Bytes of one object written as the sweep writes it (a JSON record with ``refs`` references to objects of
    kind ``refers_to`` in its checksum header, or arrays)."""
    key = f"{next(_KEYS):04d}"
    if arrays is not None:
        return os.path.getsize(store.write_arrays(kind, key, arrays))
    like = [(refers_to, f"{i:064x}", ".json", "0" * 64) for i in range(refs)]  # a key and a sha256 take 64 digits
    return os.path.getsize(store.write_json(kind, key, obj, refs=like))


def project_disk(per_picture: dict[str, float | None], num_images: int,
                 window: int | None) -> dict[str, dict[str, float | None]]:
    """Peak and final bytes per kind of a sweep from an empty store.

    ``per_picture``: bytes a picture adds per kind, over every entry and QP (None: not measured).
    ``window``: None for ``keep_features=all`` (nothing is deleted: peak = final); else the most pictures
    holding C-layers at once under ``until_done``, so C-layers peak at ``min(images, window)`` pictures and
    none stay. The other kinds only grow. The total's peak is at most the sum of the kinds' peaks.
    """
    out: dict[str, dict[str, float | None]] = {}
    for kind, size in per_picture.items():
        total = None if size is None else size * num_images
        if kind == "clayers" and window is not None and size is not None:
            out[kind] = {"peak": size * min(num_images, window), "final": 0.0}
        else:
            out[kind] = {"peak": total, "final": total}
    known = [v for v in out.values() if v["final"] is not None]
    out["total"] = {"peak": sum(v["peak"] for v in known), "final": sum(v["final"] for v in known)}
    return out


def peak_rss_bytes() -> tuple[int, int]:
    """Peak resident memory of this process and of its largest finished child process."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale)


def _gb(n: float | None) -> str:
    if n is None:
        return "not measured"
    return f"{n / 1e9:.3f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. ctc=paper codec=vtm")
    parser.add_argument("--sample-images", type=int, default=2)
    parser.add_argument("--clayers", type=Path, nargs="*", help="C-layer .npz files to sample instead of a model")
    parser.add_argument("--qp", type=int, help="QP of the sample (default: the CTC's middle feature QP)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 16, 128, 1024])
    parser.add_argument("--mpixel-per-image", type=float,
                        help="packed C-layer Mpixel per image and rate point for the projection (default: the "
                             "sample's); 18.2 for X101-FPN on an 800x1067 picture: 256 x (200x268 + 100x134 + "
                             "50x67 + 25x34) samples. Scales the C-layer and bitstream sizes too")
    parser.add_argument("--disk-qps", choices=("middle", "all"), default="middle",
                        help="QPs the sample's bitstreams are sized at: the sample QP only, times the number of "
                             "QPs (lower QPs make larger bitstreams: on the embedded CTC this under-states them by "
                             "~20 %%), or every QP of the CTC (exact, but codes the sample once per QP)")
    parser.add_argument("--json", type=Path, help="also write every projected figure to this JSON file")
    args = parser.parse_args(argv)

    cfg = vcm_eval.compose(*args.overrides)
    # the store settings first: a wrong one stops before any picture is measured
    settings = StoreSettings.of(cfg.get("store"))
    retention, feature_memory = settings.retention, settings.feature_memory_bytes
    codec = build(cfg.codec, expect=VideoCodec, what="codec")
    codec.check_available()
    entries = [s.entry for s in build_entries(cfg)]
    feature_entries = [e for e in entries if isinstance(e, FeatureCodingMethod)]
    image_entries = [e for e in entries if isinstance(e, ImageCodingMethod)]
    qps = sorted(cfg.ctc.qps.features)
    qp = args.qp if args.qp is not None else qps[len(qps) // 2]
    num_images = cfg.ctc.num_images
    print(f"CTC {cfg.ctc.name}: {num_images} images, codec {codec.name}, feature QPs {qps}, "
          f"entries {[e.name for e in entries]}")

    sample = sample_inputs(cfg, args)
    features = sample.features
    mpixel_sample = np.mean([sum(np.prod(_picture_shape(x)) for x in f.layers.values()) / 1e6 for f in features])
    mpixel_per_image = mpixel_sample
    print(f"sample: {len(features)} image(s), {mpixel_per_image:.2f} Mpixel of packed C-layer pictures per image "
          f"and rate point, coded at QP {qp}")
    if args.mpixel_per_image:
        mpixel_per_image = args.mpixel_per_image
        print(f"projection: {mpixel_per_image:.2f} Mpixel per image and rate point (--mpixel-per-image)")

    measured = measure_sample(codec, feature_entries, image_entries, sample, qp, args.disk_qps)
    seconds, mpixels, new_share, per_picture = (measured.seconds, measured.mpixels, measured.new_share,
                                                measured.per_picture)
    scale = mpixel_per_image / mpixel_sample  # C-layer samples and bits grow with the packed picture area
    for kind in ("clayers", "bitstreams"):
        per_picture[kind] *= scale
    if sample.model is None:
        names = [e.name for e in image_entries]
        print(f"--clayers: no model and no pictures, so the disk figures leave out detections"
              f"{f' and the bitstreams of {names}' if names else ''}")
    s_per_mpixel = seconds / mpixels
    print(f"measured: {s_per_mpixel:.2f} s per Mpixel with {codec.name} ({seconds:.1f} s for {mpixels:.2f} Mpixel)")

    chains = {e.name: num_images * len(e.rate_points) for e in feature_entries}
    pictures = {e.name: chains[e.name] * len(getattr(e, "levels", [])) for e in feature_entries}
    total_mpixel = sum(num_images * len(e.rate_points) * mpixel_per_image * new_share[e.name] for e in feature_entries)
    core_hours = total_mpixel * s_per_mpixel / 3600
    print(f"tasks: {sum(chains.values())} coding chains ({chains}), {sum(pictures.values())} pictures; "
          f"{total_mpixel:.0f} Mpixel to encode after sharing identical pictures")
    print(f"projected encoder time: {core_hours:.1f} core-hours ({core_hours / 24:.1f} core-days)")

    figures = report_storage(measured, sample, num_images, retention, args.workers, core_hours, feature_memory)
    if args.json:
        args.json.write_text(json.dumps({
            "ctc": str(cfg.ctc.name), "num_images": num_images, "sample_images": len(features), "qp": qp,
            "keep_features": retention.keep_features, "core_hours": core_hours, "s_per_mpixel": s_per_mpixel,
            **figures}, indent=1))
    return 0


@dataclass
class Measured:
    """What coding the sample showed: encoder time and sharing, and what a sweep stores per picture."""

    seconds: float
    mpixels: float
    new_share: dict[str, float]
    per_picture: dict[str, float | None]
    files_per_picture: dict[str, float]
    encoder_rss: int
    rss_before: int


def measure_sample(codec: VideoCodec, feature_entries: list[FeatureCodingMethod],
                   image_entries: list[ImageCodingMethod], sample: Sample, qp: int, disk_qps: str) -> Measured:
    """Code the sample at ``qp`` with every feature entry: timed with a fresh cache, then again with one
    cache shared by all entries (what a sweep stores); code it with the image entries; size every object a
    sweep stores per picture."""
    seconds, mpixels, new_share = 0.0, 0.0, {}
    # children forked before the coding (ldconfig from a big process) would pass for the encoder's memory
    _, rss_before = peak_rss_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        shared = CachedCodec(codec, Store(Path(tmp) / "shared"))
        bitstreams = _Growth(Path(tmp) / "shared" / "bitstreams", len(sample.features), disk_qps)
        coded_sample: dict[str, list[CodedFeatures]] = {}
        for entry in feature_entries:
            coded_new = coded_all = 0
            for i, feats in enumerate(features_at(sample, entry.split)):
                fresh = CachedCodec(codec, Store(Path(tmp) / f"{entry.name}-{i}"))
                t0 = time.perf_counter()
                coded = entry.encode(feats, qp, fresh, label=f"sample {i}")
                elapsed = time.perf_counter() - t0
                seconds += sum(level.encode_s for level in coded.levels.values()) or elapsed
                mpixels += sum(np.prod(_geometry_shape(level.geometry)) for level in coded.levels.values()) / 1e6
                again = entry.encode(feats, qp, shared, label=f"sample {i}")  # what a sweep shares
                coded_sample.setdefault(entry.name, []).append(again)
                sizes = {k: np.prod(_geometry_shape(v.geometry)) for k, v in again.levels.items()}
                coded_all += sum(sizes.values())
                coded_new += sum(sizes[k] for k, v in again.levels.items() if not v.from_cache)
                for other in _other_qps(entry.rate_points, qp, disk_qps):
                    entry.encode(feats, other, shared, label=f"sample {i}")
            new_share[entry.name] = coded_new / max(coded_all, 1)
            bitstreams.add(entry.rate_points)
        decoded: dict[str, list[tuple[np.ndarray, CodedImage]]] = {}
        for entry in image_entries if sample.pictures else []:
            middle = _middle(entry.rate_points)
            for i, picture in enumerate(sample.pictures):
                decoded.setdefault(entry.name, []).append(entry.code(picture, middle, shared, label=f"sample {i}"))
                for other in _other_qps(entry.rate_points, middle, disk_qps):
                    entry.code(picture, other, shared, label=f"sample {i}")
            bitstreams.add(entry.rate_points)
        per_picture = disk_per_picture(sample, feature_entries, image_entries, coded_sample, decoded, shared,
                                       Store(Path(tmp) / "sizes"))
    per_picture["bitstreams"] = bitstreams.bytes
    _, rss_after = peak_rss_bytes()
    entries = [*feature_entries, *image_entries]
    files_per_picture = {"clayers": 1.0, "bitstreams": bitstreams.files,
                         "coded": float(sum(len(e.rate_points) for e in entries)),
                         "detections": 1.0 + sum(len(e.rate_points) for e in entries)}
    return Measured(seconds, mpixels, new_share, per_picture, files_per_picture,
                    rss_after if rss_after > rss_before else 0, rss_before)


class _Growth:
    """Bytes and files a folder gains per picture, entry by entry, over each entry's QPs (measured at every
    QP, or at one and multiplied)."""

    def __init__(self, folder: Path, pictures: int, disk_qps: str) -> None:
        self.folder, self.pictures, self.disk_qps = folder, pictures, disk_qps
        self.bytes = self.files = 0.0
        self._seen = (0, 0)

    def add(self, rate_points: list[int]) -> None:
        """Count what the folder gained since the last call, for an entry with these rate points."""
        files = [os.path.join(d, f) for d, _, names in os.walk(self.folder) for f in names]
        now = (sum(os.path.getsize(f) for f in files), len(files))
        factor = (1 if self.disk_qps == "all" else len(rate_points)) / self.pictures
        self.bytes += (now[0] - self._seen[0]) * factor
        self.files += (now[1] - self._seen[1]) * factor
        self._seen = now


def _middle(rate_points: list[int]) -> int:
    return sorted(rate_points)[len(rate_points) // 2]


def report_storage(measured: Measured, sample: Sample, num_images: int, retention: Retention, workers: list[int],
                   core_hours: float, feature_memory_bytes: float = 0.0) -> dict:
    """Print the store's disk per kind and policy, wall time and peak per workers count, files and memory
    per worker (with the C-layers a worker keeps, ``store.feature_memory_mb``, as many pictures as fit);
    returns the figures for ``--json``."""
    per_picture = measured.per_picture
    keep_all = project_disk(per_picture, num_images, None)
    until_done = {n: project_disk(per_picture, num_images, _window(retention, n)) for n in workers}
    first = workers[0] if workers else None
    print_disk(per_picture, keep_all, until_done.get(first), first and min(num_images, _window(retention, first)),
               retention)
    for n in workers:
        hours = core_hours / n
        print(f"  {n:>5} workers: {hours:9.3f} h wall ({hours * 60:.1f} min, {hours / 24:.2f} days); until_done: "
              f"store peak <= {_gb(until_done[n]['total']['peak'])} "
              f"({min(num_images, _window(retention, n))} pictures in flight)")
    files = sum(measured.files_per_picture.values())
    print(f"files: {files:.0f} per picture, {num_images * files:.0f} in all; a filesystem with 4 KiB blocks rounds "
          f"each up: up to {_gb(files * 4096)} more per picture ({_gb(num_images * files * 4096)} in all)")
    own, child = peak_rss_bytes()[0], measured.encoder_rss
    work = "model, C-layers, coding chain, decoder side" if sample.model else "C-layer files, coding chain, no model"
    encoder = _gb(child) if child else "none" + (f" (or one below {_gb(measured.rss_before)})" if measured.rss_before
                                                  else "")
    clayers = per_picture.get("clayers", 0.0)
    kept = min(feature_memory_bytes, num_images * clayers) if clayers else 0.0
    kept = clayers * int(kept // clayers) if clayers else 0.0  # whole pictures only
    print(f"memory per worker: ~{_gb(own + child + kept)} (peak RSS of this process, which did a worker's work on "
          f"the sample: {work}: {_gb(own)}; largest encoder process: {encoder}; C-layers kept between tasks "
          f"(store.feature_memory_mb): {_gb(kept)})")
    return {"per_picture_bytes": per_picture, "files_per_picture": measured.files_per_picture,
            "disk_bytes": {"all": keep_all, "until_done": {str(n): v for n, v in until_done.items()}},
            "pictures_in_flight": {str(n): _window(retention, n) for n in workers},
            "memory_per_worker_bytes": own + child + kept}


def _other_qps(rate_points: list[int], qp: int, disk_qps: str) -> list[int]:
    """The entry's QPs besides the sample's, when the bitstreams are sized at every QP."""
    return [q for q in rate_points if q != qp] if disk_qps == "all" else []


def _window(retention: Retention, workers: int) -> int:
    return Retention("until_done", retention.pictures_in_flight).window(workers)


def disk_per_picture(sample: Sample, feature_entries: list[FeatureCodingMethod],
                     image_entries: list[ImageCodingMethod], coded_sample: dict[str, list[CodedFeatures]],
                     decoded: dict[str, list[tuple[np.ndarray, CodedImage]]], shared: CachedCodec,
                     sizes: Store) -> dict[str, float | None]:
    """Bytes of C-layers, coded records and detections the store gains per picture, over every entry and QP
    of the CTC, sized on the sample at one QP. Detections need the model: None without it (``--clayers``)."""
    n = len(sample.features)
    clayers = sum(stored_size(sizes, "clayers", arrays=clayer_arrays(f, 0.1)) for f in sample.features) / n
    coded = sum(stored_size(sizes, "coded", c.to_dict(), refs=len(c.levels)) * len(e.rate_points) / n
                for e in feature_entries for c in coded_sample[e.name])
    model = sample.model
    if model is None:
        return {"clayers": clayers, "coded": coded, "detections": None}
    detections = 0.0
    for i, feats in enumerate(sample.features):
        t0 = time.perf_counter()
        dets = model.decode(feats)
        took = time.perf_counter() - t0  # stands in for both stage times: a float takes as many characters
        detections += stored_size(sizes, "detections", uncompressed_record(f"{i}", feats, dets, took, took))
        for entry in feature_entries:
            c = coded_sample[entry.name][i]
            t0 = time.perf_counter()
            reconstruction = entry.decode(c, shared)
            t1 = time.perf_counter()
            psnr = topdown_psnr(feats, reconstruction) if entry.split == "c" else {}  # as the sweep's detect task
            record = detection_record(f"{i}", c, model.decode(reconstruction), t1 - t0, time.perf_counter() - t1,
                                      c.meta.original_size, {"topdown_psnr": psnr} if psnr else {})
            detections += stored_size(sizes, "detections", record, refs=1, refers_to="coded") * len(entry.rate_points)
    for entry in image_entries:
        for i, (picture, (decoded_picture, coding)) in enumerate(zip(sample.pictures, decoded[entry.name])):
            t0 = time.perf_counter()
            found = model.detect(decoded_picture)
            record = detection_record(f"{i}", coding, found, coding.decode_s, time.perf_counter() - t0,
                                      picture.shape[:2])
            # an image entry stores its coded result beside its detections
            detections += (stored_size(sizes, "detections", record, refs=1, refers_to="coded")
                           + stored_size(sizes, "coded", coding.to_dict(), refs=1)) * len(entry.rate_points)
    return {"clayers": clayers, "coded": coded, "detections": detections / n}


def print_disk(per_picture: dict[str, float | None], keep_all: dict, until_done: dict | None, window: int | None,
               retention: Retention) -> None:
    """The store's disk per kind: per picture, and for the sweep under each retention policy."""
    print(f"store disk, from an empty store (this config: keep_features={retention.keep_features}):")
    head = f"until_done peak ({window} in flight)" if window else ""
    print(f"  {'kind':<11} {'per picture':>13} {'all (peak=final)':>17} {'until_done final':>17} {head:>27}")
    for kind in (*KINDS, "total"):
        final = _gb(until_done[kind]["final"]) if until_done else ""
        peak = _gb(until_done[kind]["peak"]) if until_done else ""
        per = _gb(per_picture.get(kind)) if kind != "total" else ""
        print(f"  {kind:<11} {per:>13} {_gb(keep_all[kind]['final']):>17} {final:>17} {peak:>27}")


def _picture_shape(layer: np.ndarray) -> tuple[int, int]:
    from vcm_eval.features.packing import PackingGeometry

    return PackingGeometry.for_shape(layer.shape).picture_shape


def _geometry_shape(geometry: dict) -> tuple[int, int]:
    return geometry["rows"] * geometry["tile_h"], geometry["cols"] * geometry["tile_w"]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except USER_ERRORS as exc:  # a wrong setting, a missing codec or picture: its message, not a traceback
        print(f"plan_sweep: error: {exc}", file=sys.stderr)
        sys.exit(2)
