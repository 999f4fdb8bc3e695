"""Search the digits example, export the best trial under a MACs budget, print the before/after figures.

    python experiments/export_digits.py [--output /tmp/digits-export] [--n-trials 20] [--max-macs 0.5]

The target (issue 3): test accuracy after recovery within 1 point of the base model's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import autoprune
from autoprune import Selection, export_model, load_config

CONFIG = Path(__file__).parent / "digits" / "config.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="/tmp/digits-export", help="run folder (study, cached base model)")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--max-macs", type=float, default=0.5)
    parser.add_argument("--iterative-steps", type=int, default=1)
    args = parser.parse_args()

    output = Path(args.output)
    config = load_config(
        CONFIG,
        {"output": str(output / "run"), "study.n_trials": args.n_trials, "export.schedule.steps": args.iterative_steps},
    )
    started = time.perf_counter()
    autoprune.search(config, log=print)
    searched = time.perf_counter() - started
    result = export_model(config, Selection("max_macs", args.max_macs), output / "export", force=True, log=print)
    exported = time.perf_counter() - started - searched

    r = result.record
    m = r["metric"]
    print()
    print(result.summary())
    print(f"search {searched:.0f}s ({args.n_trials} trials), export {exported:.0f}s")
    gap = (m["base"] - m["recovered"]) * 100
    verdict = "met" if gap <= 1.0 else "MISSED"
    print(f"test accuracy: base {m['base'] * 100:.2f}%, recovered {m['recovered'] * 100:.2f}% "
          f"(gap {gap:+.2f} points; target <= 1 point: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
