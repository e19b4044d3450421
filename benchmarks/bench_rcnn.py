"""Per-image wall time and peak memory of the encoder and decoder sides of the Detectron2 detectors.

Runs vcm_eval's Faster R-CNN FPN (R50-FPN and X101-FPN, seeded weights from the golden folder's
generator: the same arithmetic as the zoo weights) on one picture at the default test size
800/1333 and prints, per side, the median wall time over the repeats and the peak resident set
size while that side ran. The peak is the kernel's VmHWM, reset before each side through
``/proc/self/clear_refs`` (Linux); "+peak" is the rise over the resident size before that side
started (the loaded model, the picture and, for the decoder, the C-layers).

    python benchmarks/bench_rcnn.py                       # R50 + X101, chelsea.png, 3 repeats, CPU
    python benchmarks/bench_rcnn.py --models x101 --repeats 5 --threads 2 --image photo.jpg

Not a test: figures depend on the machine; docs/detector.md records measured ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vcm_eval.data.images import read_image
from vcm_eval.models.rcnn import build_zoo_model

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "r50": ("faster_rcnn_R_50_FPN_3x", "spec_faster_rcnn_R_50_FPN_3x.json", 2.0**-6),
    "x101": ("faster_rcnn_X_101_32x8d_FPN_3x", "spec_faster_rcnn_X_101_32x8d_FPN_3x.json", 1.0),
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Reset the peak-RSS counter (VmHWM) to the current RSS; return the current RSS in KiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


def seeded_weights(golden: Path, key: str, out_dir: Path) -> Path:
    """Write the golden folder's seeded checkpoint for ``key`` into ``out_dir`` (reused when present)."""
    _, spec, stem_scale = MODELS[key]
    path = out_dir / f"seeded_{key}.pkl"
    if path.is_file():
        return path
    module_spec = importlib.util.spec_from_file_location("seeded_checkpoint", golden / "seeded_checkpoint.py")
    generator = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(generator)
    ckpt = generator.build_checkpoint(generator.load_spec(str(golden / spec)), seed=0, stem_scale=stem_scale)
    generator.write_pkl(ckpt, str(path))
    return path


def bench_model(key: str, weights: Path, image_path: Path, repeats: int, min_size: int, max_size: int) -> dict:
    zoo_name = MODELS[key][0]
    model = build_zoo_model(zoo_name, weights, min_size, max_size)
    image = read_image(image_path)
    model.decode(model.encode(image))  # warm-up: allocator pools, lazy kernels
    enc_s, dec_s, enc_cpu, dec_cpu, enc_peak, dec_peak, enc_rise, dec_rise = ([] for _ in range(8))
    for _ in range(repeats):
        before = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        features = model.encode(image)
        enc_s.append(time.perf_counter() - t0)
        enc_cpu.append(time.process_time() - c0)
        enc_peak.append(_status_kib("VmHWM"))
        enc_rise.append(enc_peak[-1] - before)
        before = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        dets = model.decode(features)
        dec_s.append(time.perf_counter() - t0)
        dec_cpu.append(time.process_time() - c0)
        dec_peak.append(_status_kib("VmHWM"))
        dec_rise.append(dec_peak[-1] - before)
    meta = features.meta
    return {
        "model": zoo_name, "image": image_path.name,
        "original": f"{meta.original_size[1]}x{meta.original_size[0]}",
        "input": f"{meta.input_size[1]}x{meta.input_size[0]}", "padded": f"{meta.padded_size[1]}x{meta.padded_size[0]}",
        "detections": len(dets),
        "enc_s": statistics.median(enc_s), "dec_s": statistics.median(dec_s),
        "enc_cpu_s": statistics.median(enc_cpu), "dec_cpu_s": statistics.median(dec_cpu),
        "enc_peak_mib": max(enc_peak) / 1024, "enc_rise_mib": max(enc_rise) / 1024,
        "dec_peak_mib": max(dec_peak) / 1024, "dec_rise_mib": max(dec_rise) / 1024,
        "clayer_mib": sum(a.nbytes for a in features.layers.values()) / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    shared = Path(os.environ.get("VCM_EVAL_SHARED", REPO_ROOT.parent / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["r50", "x101"])
    ap.add_argument("--golden", type=Path, default=shared / "golden" / "detectron2",
                    help="folder with seeded_checkpoint.py and the specs (default ../shared/golden/detectron2)")
    ap.add_argument("--image", type=Path, help="picture (default: chelsea.png of the golden folder)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-size", type=int, default=800)
    ap.add_argument("--max-size", type=int, default=1333)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--weights-dir", type=Path, help="keep the seeded checkpoints here (default: a temp folder)")
    args = ap.parse_args(argv)
    if not (args.golden / "seeded_checkpoint.py").is_file():
        print(f"bench_rcnn: {args.golden} has no seeded_checkpoint.py; pass --golden or set VCM_EVAL_SHARED",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    image = args.image or args.golden / "chelsea.png"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_rcnn_") as tmp:
        out_dir = args.weights_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for key in args.models:
            weights = seeded_weights(args.golden, key, out_dir)
            rows.append(bench_model(key, weights, image, args.repeats, args.min_size, args.max_size))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{load:.1f}; {image.name}; median of {args.repeats} runs after one warm-up; s = wall, cpu = process "
          "CPU time; peak = VmHWM during the side, +peak = its rise over the RSS before the side")
    header = (f"{'model':32} {'input':>9} {'enc s':>7} {'enc cpu':>7} {'dec s':>7} {'dec cpu':>7} "
              f"{'enc peak MiB':>12} {'+peak':>6} {'dec peak MiB':>12} {'+peak':>6} {'C-layers MiB':>12}")
    print(header)
    for r in rows:
        print(f"{r['model']:32} {r['padded']:>9} {r['enc_s']:7.2f} {r['enc_cpu_s']:7.2f} {r['dec_s']:7.2f} "
              f"{r['dec_cpu_s']:7.2f} {r['enc_peak_mib']:12.0f} {r['enc_rise_mib']:6.0f} {r['dec_peak_mib']:12.0f} "
              f"{r['dec_rise_mib']:6.0f} {r['clayer_mib']:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
