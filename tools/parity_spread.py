"""How far a correct Faster R-CNN FPN lands from the Detectron2 golden files under every CPU kernel choice.

float32 convolutions and matrix products sum in an order that depends on the CPU's kernels (vector
width, FMA, blocking) and the thread count, so a correct implementation differs from the golden
arrays by an amount that depends on the machine. This tool measures that amount: for every kernel
setting this CPU supports (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``,
alone and combined as a machine without AVX-512 or AVX2 would have them) and 1 and 2 torch threads, it
runs vcm_eval's implementation and, where it is installed, the real Detectron2 on both golden pictures
with the seeded R50 and X101 weights, and records per model and tensor the worst
:class:`~vcm_eval.models.rcnn.parity.Spread` against the golden arrays. ``tests/test_rcnn_parity.py``
derives its tolerances from the record (``tests/golden_spread.json``)::

    python tools/parity_spread.py --out tests/golden_spread.json      # ~15 min on 2 cores
    python tools/parity_spread.py --settings default,no-avx512 --models r50
    python tools/parity_spread.py --run-tests      # the golden parity tests under every setting; all must pass

Each setting runs in a fresh process (the variables are read when torch loads its kernels).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("VCM_EVAL_SHARED", REPO.parent / "shared")) / "golden" / "detectron2"

#: golden key -> (zoo name, spec file, stem scale), as the golden README describes them
MODELS = {"r50": ("faster_rcnn_R_50_FPN_3x", "spec_faster_rcnn_R_50_FPN_3x.json", 2.0**-6),
          "x101": ("faster_rcnn_X_101_32x8d_FPN_3x", "spec_faster_rcnn_X_101_32x8d_FPN_3x.json", 1.0)}
IMAGES = ("astronaut", "chelsea")
TEST_SIZE = (320, 533)

#: name -> (environment, CPU flags it needs). The combined ones stand for other machines: "no-avx512" an
#: AVX2-only CPU (e.g. an AMD EPYC before Zen 4), "sse" one without AVX at all.
SETTINGS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "default": ({}, ()),
    "aten-default": ({"ATEN_CPU_CAPABILITY": "default"}, ()),
    "aten-avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, ("avx2",)),
    "aten-avx512": ({"ATEN_CPU_CAPABILITY": "avx512"}, ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    "onednn-sse41": ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, ()),
    "onednn-avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, ("avx2",)),
    "onednn-avx512": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    "mkl-sse42": ({"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, ()),
    "mkl-avx2": ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, ("avx2",)),
    "no-avx512": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                  ("avx2",)),
    "sse": ({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
            ()),
}


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def supported_settings() -> list[str]:
    """The settings whose instructions this CPU has."""
    flags = cpu_flags()
    return [name for name, (_, needs) in SETTINGS.items() if all(f in flags for f in needs)]


def _generator():
    spec = importlib.util.spec_from_file_location("seeded_checkpoint", GOLDEN / "seeded_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_weights(folder: Path, keys: list[str]) -> dict[str, str]:
    """The seeded golden checkpoints, checked against the recorded sha256; key -> path."""
    gen, out = _generator(), {}
    for key in keys:
        _, spec, stem_scale = MODELS[key]
        ckpt = gen.build_checkpoint(gen.load_spec(str(GOLDEN / spec)), seed=0, stem_scale=stem_scale)
        recorded = json.loads((GOLDEN / f"config_{key}.json").read_text())["weights"]["sha256"]
        if gen.checkpoint_digest(ckpt) != recorded:
            raise SystemExit(f"regenerated {key} weights differ from the golden ones")
        path = folder / f"seeded_{key}.pkl"
        gen.write_pkl(ckpt, str(path))
        out[key] = str(path)
    return out


def measure_here(weights: dict[str, str], threads: list[int], backends: list[str]) -> list[dict]:
    """Spreads of every (backend, model, picture, threads) in this process's kernel setting."""
    import numpy as np
    import torch

    from vcm_eval.data.images import read_image
    from vcm_eval.models.rcnn import build_zoo_model
    from vcm_eval.models.rcnn.parity import spread, stage_arrays

    rows = []
    for key, path in weights.items():
        runners = {}
        if "vcm_eval" in backends:
            model = build_zoo_model(MODELS[key][0], path, *TEST_SIZE)
            runners["vcm_eval"] = lambda image, m=model: stage_arrays(m.run_stages(image))
        if "detectron2" in backends:
            from vcm_eval.models.detectron2_backend import Detectron2SplitModel

            real = Detectron2SplitModel(MODELS[key][0], path, *TEST_SIZE)
            runners["detectron2"] = real.stage_arrays
        for image_name in IMAGES:
            image = read_image(GOLDEN / f"{image_name}.png")
            with np.load(GOLDEN / f"golden_{key}_{image_name}.npz") as data:
                gold = {k: data[k] for k in data.files}
            for backend, runner in runners.items():
                for n in threads:
                    torch.set_num_threads(n)
                    spreads = spread(runner(image), gold)
                    rows.append({"backend": backend, "model": key, "image": image_name, "threads": n,
                                 "spread": {k: s.to_dict() for k, s in spreads.items()}})
    return rows


def worst_by_model(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """model -> tensor -> the worst Spread over every row of that model."""
    from vcm_eval.models.rcnn.parity import Spread

    out: dict[str, dict[str, dict[str, float]]] = {}
    for model in sorted({r["model"] for r in rows}):
        tensors = {t for r in rows if r["model"] == model for t in r["spread"]}
        out[model] = {t: Spread.worst([Spread(**r["spread"][t]) for r in rows
                                       if r["model"] == model and t in r["spread"]]).to_dict()
                      for t in sorted(tensors)}
    return out


def max_abs_by_setting(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """setting -> model -> tensor -> the largest difference over backends, pictures and threads (for reading)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        tensors = out.setdefault(r["setting"], {}).setdefault(r["model"], {})
        for tensor, s in r["spread"].items():
            tensors[tensor] = max(tensors.get(tensor, 0.0), s["max_abs"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", help="comma-separated names (default: all this CPU supports): "
                        + ", ".join(SETTINGS))
    parser.add_argument("--models", default="r50,x101")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--backends", default="vcm_eval,detectron2",
                        help="detectron2 is skipped with a note where it is not installed")
    parser.add_argument("--out", type=Path, help="write the record (JSON) here")
    parser.add_argument("--run-tests", action="store_true",
                        help="instead of measuring, run the golden parity tests (pytest) under every setting")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON of one setting's job, run in a fresh process
    args = parser.parse_args(argv)

    if args.child:
        job = json.loads(args.child)
        print(json.dumps(measure_here(job["weights"], job["threads"], job["backends"])))
        return 0

    names = args.settings.split(",") if args.settings else supported_settings()
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    if args.run_tests:
        return run_tests(names)
    backends = args.backends.split(",")
    if "detectron2" in backends:
        from vcm_eval.models.detectron2_backend import detectron2_available

        ok, reason = detectron2_available()
        if not ok:
            print(f"note: detectron2 is not importable ({reason}); measuring vcm_eval alone", file=sys.stderr)
            backends.remove("detectron2")
    threads = [int(t) for t in args.threads.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_weights(Path(tmp), args.models.split(","))
        for i, name in enumerate(names, 1):
            env = {**os.environ, **SETTINGS[name][0]}
            job = json.dumps({"weights": weights, "threads": threads, "backends": backends})
            start = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--child", job], env=env, capture_output=True,
                                  text=True, check=False)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"setting {name} failed (exit {done.returncode})")
            for row in json.loads(done.stdout.strip().splitlines()[-1]):
                rows.append({"setting": name, **row})
            print(f"[{i}/{len(names)}] {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    worst = worst_by_model(rows)
    for model, tensors in worst.items():
        print(f"\n{model}: worst over {len(names)} settings x threads {threads} x {backends}")
        print(f"{'tensor':>16} {'abs (|ref|<1)':>14} {'rel (|ref|>=1)':>15} {'max abs':>10}")
        for tensor, s in tensors.items():
            print(f"{tensor:>16} {s['abs_small']:14.2e} {s['rel_large']:15.2e} {s['max_abs']:10.2e}")
    if args.out:
        import platform

        import torch

        record = {"about": "worst spread against ../shared/golden/detectron2, written by tools/parity_spread.py",
                  "cpu": _cpu_model(), "machine": platform.machine(), "torch": torch.__version__,
                  "settings": {n: SETTINGS[n][0] for n in names}, "threads": threads, "backends": backends,
                  "worst": worst, "max_abs_by_setting": max_abs_by_setting(rows)}
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


def run_tests(names: list[str]) -> int:
    """``pytest`` on the golden parity tests under each setting; prints a line per setting, 1 if any failed."""
    tests = ["tests/test_rcnn_parity.py", "tests/test_rcnn_backends.py", "tests/test_rcnn_split.py"]
    failed = []
    for name in names:
        env = {**os.environ, **SETTINGS[name][0]}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO,
                              env=env, capture_output=True, text=True, check=False)
        last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"{name:>14} {SETTINGS[name][0] or ''}: {last} ({time.perf_counter() - start:.0f} s)", flush=True)
        if done.returncode:
            failed.append(name)
            print(done.stdout[-4000:], file=sys.stderr)
    print("all settings passed" if not failed else f"FAILED under: {', '.join(failed)}")
    return 1 if failed else 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
