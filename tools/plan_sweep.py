#!/usr/bin/env python
"""Plan a sweep before running it: how many coding tasks a CTC has, how fast the selected codec codes
C-layer pictures here, what the whole sweep costs in core-hours and wall time on N workers, how much disk
its store needs (peak and final, per kind, for each ``store.keep_features`` policy) and how much memory a
worker needs.

    python tools/plan_sweep.py                                   # the embedded CTC, x265
    python tools/plan_sweep.py ctc=paper codec=vvenc proposal=compensation --workers 1 64 512
    python tools/plan_sweep.py ctc=paper codec=vtm proposal=compensation --clayers x101_image.npz
    python tools/plan_sweep.py ctc=fcm_sfu proposal=compensation --sample-frames 8       # a video CTC with VTM

Arguments of the form key=value are Hydra overrides, exactly as for ``python -m vcm_eval``. The sample is
the sweep itself on the first ``--sample-images`` pictures of the data set, in this process, from an empty
store: the same tasks (:mod:`vcm_eval.pipeline.tasks`) write the same objects, so every picture the sweep
would encode is encoded once, and pictures two entries share (the coarsest level, uncompensated levels)
are encoded by the first, as in the real sweep. Feature entries code at one QP (``--qp``, default the CTC's
middle feature QP; entries whose rate points are their own, such as the learned entry's checkpoints, and
image entries at their middle rate point), or at every QP with ``--disk-qps all``. With ``--clayers``
(C-layer files, e.g. written by ``tools/run_detector.py --save-clayers``) there is no model: only the
coding tasks run, and the disk figures leave out detections. Projections assume the sample's mean picture
size and seconds per Mpixel for every image and QP (lower QPs code slower), and ideal scaling across workers.

Disk: what the sample's sweep stored, per kind, multiplied by the CTC's pictures (and, at one QP, by each
entry's number of rate points: lower QPs make larger bitstreams). With ``keep_features=until_done`` no
C-layers stay, and at most ``pictures_in_flight`` pictures hold them at once (docs/scale.md), which bounds
the peak. ``--json FILE`` writes every figure.

A video CTC (``ctc.coding: video``: ``embedded_video``, ``fcm_sfu``, ``fcm_tvd``) is sampled with the sequence
sweep on the first ``--sample-frames`` frames of its first sequence under the CTC's condition and projected by
frame-megapixels onto every sequence, entry and QP (:mod:`vcm_eval.pipeline.sequence_plan`).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

import vcm_eval
from vcm_eval.build import build
from vcm_eval.cli import USER_ERRORS, build_entries
from vcm_eval.codecs.base import VideoCodec
from vcm_eval.data.base import DetectionDataset
from vcm_eval.errors import SettingError
from vcm_eval.executors.base import LocalExecutor
from vcm_eval.hashing import file_sha256
from vcm_eval.methods import CodedFeatures, CodingEntry, FeatureCodingMethod
from vcm_eval.pipeline import EntrySpec, Retention, StoreSettings, Sweep, build_model
from vcm_eval.pipeline.chains import chain_for
from vcm_eval.pipeline.records import clayer_arrays, key
from vcm_eval.pipeline.tasks import code_features
from vcm_eval.pipeline.worker import Runtime
from vcm_eval.store import Store, canonical_json
from vcm_eval.types import SplitFeatures, SplitMeta

#: store kinds a sweep writes, in the order they are printed
KINDS = ("clayers", "bitstreams", "coded", "detections")


def load_clayers(path: Path) -> SplitFeatures:
    """C-layers ``c2..c5`` of one ``.npz`` file (``tools/run_detector.py --save-clayers``, or a store's C-layers).

    Raises:
        SettingError: the file is not such a file, naming it.
    """
    try:
        with np.load(path) as npz:
            layers = {k: np.asarray(npz[k], np.float32).reshape(npz[k].shape[-3:]) for k in ("c2", "c3", "c4", "c5")}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise SettingError(f"{path}: not a C-layer file with arrays c2..c5 ({type(exc).__name__}: {exc}); write one "
                           "with `python tools/run_detector.py --save-clayers`") from None
    h, w = layers["c2"].shape[1] * 4, layers["c2"].shape[2] * 4
    return SplitFeatures(layers, SplitMeta((h, w), (h, w), (h, w)))


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. ctc=paper codec=vtm")
    parser.add_argument("--sample-images", type=int, default=2)
    parser.add_argument("--sample-frames", type=int, default=8,
                        help="video CTCs: frames of the first sequence the sample codes")
    parser.add_argument("--clayers", type=Path, nargs="*", help="C-layer .npz files to sample instead of a model")
    parser.add_argument("--qp", type=int, help="QP of the sample (default: the CTC's middle feature QP)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 16, 128, 1024])
    parser.add_argument("--mpixel-per-image", type=float,
                        help="packed C-layer Mpixel per image and rate point for the projection (default: the "
                             "sample's); 18.2 for X101-FPN on an 800x1067 picture: 256 x (200x268 + 100x134 + "
                             "50x67 + 25x34) samples. Scales the C-layer and bitstream sizes too")
    parser.add_argument("--disk-qps", choices=("middle", "all"), default="middle",
                        help="QPs the sample is coded at: one QP per entry, its sizes times the entry's number of "
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
    specs = build_entries(cfg)
    if str(cfg.ctc.get("coding", "")) == "video":
        return plan_video(cfg, codec, specs, args)
    entries = [s.entry for s in specs]
    feature_entries = [e for e in entries if isinstance(e, FeatureCodingMethod)]
    qps = sorted(cfg.ctc.qps.features)
    qp = args.qp if args.qp is not None else qps[len(qps) // 2]
    num_images = cfg.ctc.num_images
    print(f"CTC {cfg.ctc.name}: {num_images} images, codec {codec.name}, feature QPs {qps}, "
          f"entries {[e.name for e in entries]}")

    dataset = None
    if not args.clayers:
        dataset = build(cfg.dataset, expect=DetectionDataset, what="dataset")
        dataset.records()  # made (a synthetic set is generated) before any memory is measured
        build_model(canonical_json(OmegaConf.to_container(cfg.model, resolve=True)))  # once per process, cached
    with tempfile.TemporaryDirectory() as tmp:
        _, rss_before = peak_rss_bytes()  # children forked before the coding would pass for the encoder's memory
        sample = (code_clayer_files(args.clayers, specs, codec, qp, args.disk_qps, Store(Path(tmp) / "store"))
                  if dataset is None else run_sample(cfg, dataset, specs, codec, qp, args.disk_qps,
                                                     args.sample_images, Store(Path(tmp) / "store")))
        measured = measure(sample, rss_before)
    mpixel_sample = measured.clayer_mpixel
    mpixel_per_image = mpixel_sample
    print(f"sample: {sample.pictures} image(s), {mpixel_per_image:.2f} Mpixel of packed C-layer pictures per image "
          f"and rate point, {_sample_qps(sample)}")
    if args.mpixel_per_image:
        mpixel_per_image = args.mpixel_per_image
        print(f"projection: {mpixel_per_image:.2f} Mpixel per image and rate point (--mpixel-per-image)")
    per_picture = measured.per_picture
    scale = mpixel_per_image / mpixel_sample  # C-layer samples and bits grow with the packed picture area
    for kind in ("clayers", "bitstreams"):
        per_picture[kind] *= scale
    if not sample.has_model:
        names = [s.entry.name for s in specs if not isinstance(s.entry, FeatureCodingMethod)]
        print(f"--clayers: no model and no pictures, so the disk figures leave out detections"
              f"{f' and the bitstreams of {names}' if names else ''}")
    if not measured.mpixels:
        raise SettingError("the sample encoded no feature picture (every one was in the store already); "
                           "nothing to time")
    s_per_mpixel = measured.seconds / measured.mpixels
    print(f"measured: {s_per_mpixel:.2f} s per Mpixel with {codec.name} ({measured.seconds:.1f} s for "
          f"{measured.mpixels:.2f} Mpixel)")

    chains = {e.name: num_images * len(e.rate_points) for e in feature_entries}
    pictures = {e.name: chains[e.name] * len(getattr(e, "levels", [])) for e in feature_entries}
    total_mpixel = sum(num_images * len(e.rate_points) * mpixel_per_image * measured.new_share.get(e.name, 1.0)
                       for e in feature_entries)
    core_hours = total_mpixel * s_per_mpixel / 3600
    print(f"tasks: {sum(chains.values())} coding chains ({chains}), {sum(pictures.values())} pictures; "
          f"{total_mpixel:.0f} Mpixel to encode after sharing identical pictures")
    print(f"projected encoder time: {core_hours:.1f} core-hours ({core_hours / 24:.1f} core-days)")

    figures = report_storage(measured, sample.has_model, num_images, retention, args.workers, core_hours,
                             feature_memory)
    if args.json:
        args.json.write_text(json.dumps({
            "ctc": str(cfg.ctc.name), "num_images": num_images, "sample_images": sample.pictures, "qp": qp,
            "keep_features": retention.keep_features, "core_hours": core_hours, "s_per_mpixel": s_per_mpixel,
            **figures}, indent=1))
    return 0


def plan_video(cfg, codec: VideoCodec, specs: list[EntrySpec], args: argparse.Namespace) -> int:
    """A video CTC: the sequence sweep on ``--sample-frames`` frames of the first sequence, projected."""
    from vcm_eval.api_sequences import coding_condition
    from vcm_eval.data.sequences import SequenceDataset
    from vcm_eval.pipeline.sequence_plan import describe, plan_sequences

    dataset = build(cfg.dataset, expect=SequenceDataset, what="dataset")
    condition = coding_condition(cfg)
    print(f"video CTC {cfg.ctc.name}: {len(dataset.sequences())} sequences, {condition.mode} (intra period "
          f"{condition.intra_period}), codec {codec.name}, entries {[s.entry.name for s in specs]}")
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_sequences(dataset, OmegaConf.to_container(cfg.model, resolve=True), codec, condition, specs,
                              Store(Path(tmp) / "store"), sample_frames=args.sample_frames, workers=args.workers)
    print(describe(plan, codec.name))
    if args.json:
        args.json.write_text(json.dumps({"ctc": str(cfg.ctc.name), **plan.figures}, indent=1))
    return 0


@dataclass
class PlannedChain:
    """One coded result of the sample: its entry (with the CTC's rate points), the QP, its two records."""

    entry: CodingEntry
    qp: int
    coded_key: str
    detections_key: str | None


@dataclass
class SampleRun:
    """The sample's sweep: where it stored what, per picture.

    Attributes:
        store: the sample's store.
        clayers: the C-layers' key per picture.
        uncompressed: the uncoded detections' key per picture (empty without a model).
        chains: per picture, every coded result in plan order.
        factors: entry -> how many of its rate points each coded result stands for (1 with ``--disk-qps all``).
        has_model: detections were made (not ``--clayers``).
    """

    store: Store
    clayers: list[str]
    uncompressed: list[str]
    chains: list[list[PlannedChain]]
    factors: dict[str, float]
    has_model: bool = True
    qps: dict[str, list[int]] = field(default_factory=dict)

    @property
    def pictures(self) -> int:
        return len(self.clayers)


def sample_qps(entry: CodingEntry, qp: int, disk_qps: str) -> list[int]:
    """The QPs the sample codes an entry at: all of them, or one (``qp`` for feature entries coding at the CTC
    codec's QPs, else the entry's middle rate point)."""
    if disk_qps == "all":
        return list(entry.rate_points)
    if isinstance(entry, FeatureCodingMethod) and entry.codec_qps:
        return [qp]
    return [sorted(entry.rate_points)[len(entry.rate_points) // 2]]


def _at(entry: CodingEntry, qps: list[int]) -> CodingEntry:
    """``entry`` with other rate points (its identity, and so every key, leaves them out)."""
    other = copy.copy(entry)
    other.rate_points = list(qps)
    return other


class _FirstPictures:
    """The first ``n`` pictures of a data set, as the sweep reads data sets."""

    def __init__(self, dataset: DetectionDataset, n: int) -> None:
        self.dataset, self.n, self.name = dataset, n, dataset.name

    def records(self) -> list:
        return self.dataset.records()[: self.n]

    def fingerprint(self, record) -> str:
        return self.dataset.fingerprint(record)


def run_sample(cfg, dataset: DetectionDataset, specs: list[EntrySpec], codec: VideoCodec, qp: int, disk_qps: str,
               sample_images: int, store: Store) -> SampleRun:
    """The sweep of the first ``sample_images`` pictures, in this process, into ``store`` (empty)."""
    qps = {s.entry.name: sample_qps(s.entry, qp, disk_qps) for s in specs}
    sampled = [EntrySpec(_at(s.entry, qps[s.entry.name]), s.role) for s in specs]
    sweep = Sweep(dataset=_FirstPictures(dataset, sample_images), model_cfg=OmegaConf.to_container(cfg.model,
                  resolve=True), codec=codec, entries=sampled, store=store, executor=LocalExecutor(),
                  progress=False, model_threads=int(cfg.model_threads))
    sweep.run()
    run = SampleRun(store, [], [], [], _factors(specs, qps), qps=qps)
    for image in sweep.images():
        keys = sweep.keys(image)
        run.clayers.append(keys.clayers)
        run.uncompressed.append(keys.uncompressed)
        run.chains.append([PlannedChain(s.entry, q, keys.chains[(s.entry.name, q)].coded,
                                        keys.chains[(s.entry.name, q)].detections)
                           for s in sampled for q in s.entry.rate_points])
    return run


def code_clayer_files(paths: list[Path], specs: list[EntrySpec], codec: VideoCodec, qp: int, disk_qps: str,
                      store: Store) -> SampleRun:
    """Without a model: the C-layer files stored as the extract task stores C-layers, then the feature
    entries' coding tasks on them (entries coding another split point need the model)."""
    entries = [s.entry for s in specs if isinstance(s.entry, FeatureCodingMethod)]
    for entry in entries:
        if entry.split != "c":
            raise SettingError(f"entry {entry.name!r} codes the split point {entry.split!r}: planning it needs the "
                               "model, which --clayers leaves out; sample pictures of the data set instead")
    qps = {e.name: sample_qps(e, qp, disk_qps) for e in entries}
    runtime = Runtime(store.url, {}, codec)
    codec_id = runtime.coder.identity()
    run = SampleRun(store, [], [], [], _factors(specs, qps), has_model=False, qps=qps)
    for path in paths:
        clayers = key("clayers", file_sha256(path), "--clayers")
        store.write_arrays("clayers", clayers, clayer_arrays(load_clayers(path), 0.0))
        chains = []
        for entry in entries:
            for q in qps[entry.name]:
                coded = chain_for(entry).keys(None, clayers, entry, q, _NoModel(codec_id)).coded
                code_features(runtime, path.name, clayers, entry, q, coded)
                chains.append(PlannedChain(entry, q, coded, None))
        run.clayers.append(clayers)
        run.chains.append(chains)
    return run


@dataclass(frozen=True)
class _NoModel:
    """The identities a key needs when there is no model (``--clayers``)."""

    codec: dict
    model: dict = field(default_factory=dict)
    encoder: dict = field(default_factory=dict)


def _factors(specs: list[EntrySpec], qps: dict[str, list[int]]) -> dict[str, float]:
    return {s.entry.name: len(s.entry.rate_points) / len(qps[s.entry.name]) for s in specs if s.entry.name in qps}


def _sample_qps(sample: SampleRun) -> str:
    return "coded at " + ", ".join(f"{name} QP {'/'.join(map(str, q))}" for name, q in sample.qps.items())


@dataclass
class Measured:
    """What the sample's sweep showed: encoder time and sharing, and what a sweep stores per picture."""

    seconds: float
    mpixels: float
    new_share: dict[str, float]
    per_picture: dict[str, float | None]
    files_per_picture: dict[str, float]
    encoder_rss: int
    rss_before: int
    clayer_mpixel: float


def measure(sample: SampleRun, rss_before: int) -> Measured:
    """Encoder time per Mpixel of the feature pictures the sample encoded, each entry's share of pictures not
    shared with an entry before it, and the bytes and files of every kind per picture (each coded result's
    objects times the rate points it stands for)."""
    store, n = sample.store, sample.pictures
    seconds = mpixels = 0.0
    coded_px: dict[str, float] = {}
    new_px: dict[str, float] = {}
    sizes = dict.fromkeys(KINDS, 0.0)
    files = dict.fromkeys(KINDS, 0.0)
    seen: set[str] = set()
    clayer_mpixel = 0.0
    for p in range(n):
        arrays = store.read_arrays("clayers", sample.clayers[p])
        clayer_mpixel += sum(np.prod(_picture_shape(arrays[k])) for k in arrays if k[:1] in "cp" and
                             k[1:].isdigit()) / 1e6
        sizes["clayers"] += _size(store, "clayers", sample.clayers[p], ".npz")
        files["clayers"] += 1
        if sample.has_model:
            sizes["detections"] += _size(store, "detections", sample.uncompressed[p], ".json")
            files["detections"] += 1
        for planned in sample.chains[p]:
            entry, factor = planned.entry, sample.factors[planned.entry.name]
            coded = chain_for(entry).coded_type.from_dict(store.read_json("coded", planned.coded_key))
            sizes["coded"] += factor * _size(store, "coded", planned.coded_key, ".json")
            files["coded"] += factor
            if planned.detections_key is not None:
                sizes["detections"] += factor * _size(store, "detections", planned.detections_key, ".json")
                files["detections"] += factor
            for bitstream in dict.fromkeys(coded.bitstream_keys()):
                if bitstream not in seen:
                    seen.add(bitstream)
                    sizes["bitstreams"] += factor * (_size(store, "bitstreams", bitstream, ".bin")
                                                     + _size(store, "bitstreams", bitstream, ".json"))
                    files["bitstreams"] += 2 * factor
            if isinstance(coded, CodedFeatures):
                for level in coded.levels.values():
                    px = float(np.prod(_geometry_shape(level.geometry)))
                    coded_px[entry.name] = coded_px.get(entry.name, 0.0) + px
                    if not level.from_cache:
                        new_px[entry.name] = new_px.get(entry.name, 0.0) + px
                        seconds += level.encode_s
                        mpixels += px / 1e6
    per_picture: dict[str, float | None] = {kind: sizes[kind] / n for kind in KINDS}
    if not sample.has_model:
        per_picture["detections"] = None
    _, rss_after = peak_rss_bytes()
    return Measured(seconds, mpixels, {name: new_px.get(name, 0.0) / px for name, px in coded_px.items()},
                    per_picture, {kind: files[kind] / n for kind in KINDS},
                    rss_after if rss_after > rss_before else 0, rss_before, clayer_mpixel / n)


def _size(store: Store, kind: str, name: str, suffix: str) -> int:
    return Path(store.path(kind, name, suffix)).stat().st_size


def report_storage(measured: Measured, has_model: bool, num_images: int, retention: Retention, workers: list[int],
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
    work = "model, C-layers, coding chain, decoder side" if has_model else "C-layer files, coding chain, no model"
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


def _window(retention: Retention, workers: int) -> int:
    return Retention("until_done", retention.pictures_in_flight).window(workers)


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
