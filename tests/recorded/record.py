"""Write the recorded results that tests/test_results_unchanged.py compares every later version with.

    python tests/recorded/record.py <run folder> [--out tests/recorded]

The run folder is one of ``python -m vcm_eval 'proposal=[compensation,klt_search,learned_fusion]'
ctc.num_images=2 executor=local tracking=none`` (the test's configuration); the CPU it ran on is recorded
beside the table, because float convolutions differ in their last bits between CPU kinds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for results_table
from results_table import cpu_fingerprint, result_columns  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    for name in ("summary.csv", "bd.csv"):
        table = pd.read_csv(args.run_dir / name, float_precision="round_trip")
        table[result_columns(table)].to_csv(args.out / name, index=False)
    (args.out / "cpu.json").write_text(json.dumps(cpu_fingerprint(), indent=1) + "\n")
    print(f"recorded {args.run_dir} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
