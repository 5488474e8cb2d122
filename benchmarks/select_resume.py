"""What a rerun of ``zooforge select`` costs when the ranking and the chosen weights are stored.

    python benchmarks/select_resume.py [--zoo timm6] [--target counting] [--repeats 3]

A rerun of a finished (or killed) ``select`` finds every trial in its ledger; before this it still
scored the whole catalogue again and fine-tuned the chosen model again to save its weights. This
runs ``select`` at 5% on one target of the selection benchmark's zoos (built in its work folder),
finishes it once, then alternates three reruns: one that must rank and retrain the winner (its
``ranking.json`` and ``chosen.json`` removed: the old behaviour), one that must rank only, and one
that reads both; it prints the median of each and the ratio of the old to the new. Every rerun takes
every trial from the ledger.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from selection_build import torch_threads  # noqa: E402
from selection_select import select_config  # noqa: E402
from selection_zoos import catalogue_path, target_data  # noqa: E402


def main() -> None:
    import torch

    from selection import WORK
    from zooforge.selection.select import select

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default="timm6")
    ap.add_argument("--target", default="counting")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(torch_threads())
    cfg = select_config(a.zoo, a.target, 0.05)
    catalogue, data = catalogue_path(a.zoo, WORK), target_data(a.zoo, a.target)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "select"

        def run() -> float:
            start = time.perf_counter()
            select(catalogue, data, cfg, out_dir=out, cache_dir=WORK / "cache", progress=False)
            return time.perf_counter() - start

        first = run()
        drop = {"ranks and retrains the winner (before)": ("ranking.json", "chosen.json"),
                "ranks, loads the weights": ("ranking.json",), "reads both (now)": ()}
        times = {name: [] for name in drop}
        for _ in range(a.repeats):
            for name, files in drop.items():
                for f in files:
                    (out / f).unlink()
                times[name].append(run())
    print(f"{a.zoo}/{a.target}, select at 5%: first run {first:.1f} s; reruns, median of {a.repeats} alternated:")
    for name, t in times.items():
        print(f"  rerun that {name:<40s} {statistics.median(t):6.2f} s")
    before, now = (statistics.median(times[n]) for n in ("ranks and retrains the winner (before)", "reads both (now)"))
    print(f"ratio (before / now): {before / now:.0f}x")


if __name__ == "__main__":
    main()
