"""The default thread count against fixed --threads settings, for one compress and one decompress process of a
Kodak image, while the machine is as it is (run it beside a busy process to see the oversubscription case).

    python benchmarks/threads.py --image benchmarks/kodak/kodim23.png --settings default,1,2 --repeat 3 \
        --json benchmarks/results/threads.json

Each setting runs the installed `vqcodec` command as a whole process, interleaved, `--repeat` times; the median
wall time is reported with the load average seen at the start and the thread count the default picked.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vqcodec.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=ROOT / "benchmarks" / "kodak" / "kodim23.png")
    ap.add_argument("--settings", default="default,1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from vqcodec.progress import default_threads

    settings = args.settings.split(",")
    times: dict = {s: {"compress": [], "decompress": []} for s in settings}
    picked = []
    with tempfile.TemporaryDirectory() as tmp:
        vq, png = Path(tmp) / "x.vq", Path(tmp) / "x.png"
        subprocess.run([sys.executable, "-m", "vqcodec.cli", "compress", str(args.image), str(vq), "-f"], check=True)
        load = os.getloadavg()[0]
        for _ in range(args.repeat):
            for s in settings:
                extra = [] if s == "default" else ["--threads", s]
                picked.append(default_threads())
                times[s]["compress"].append(run(["compress", str(args.image), str(Path(tmp) / "y.vq"), "-f", *extra]))
                times[s]["decompress"].append(run(["decompress", str(vq), str(png), "-f", *extra]))
    out = {"image": args.image.name, "cpus": len(os.sched_getaffinity(0)), "load_average_at_start": round(load, 2),
           "default_picked": sorted(set(picked)),
           "median_s": {s: {k: round(statistics.median(v), 3) for k, v in t.items()} for s, t in times.items()}}
    best = {k: min(out["median_s"][s][k] for s in settings if s != "default") for k in ("compress", "decompress")}
    if "default" in settings:
        out["default_over_best"] = {k: round(out["median_s"]["default"][k] / best[k], 3) for k in best}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
