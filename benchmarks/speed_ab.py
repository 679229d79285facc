"""The one-image path of two vqcodec checkouts side by side (e.g. before and after a change), interleaved.

    git worktree add /tmp/old <commit>
    for i in 1 2 3; do
      (cd /tmp/old && OMP_NUM_THREADS=1 PYTHONPATH=/tmp/old python /path/to/benchmarks/speed_ab.py old)
      (cd . && OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/speed_ab.py new)
    done

Each run loads the checkout's default model, warms up, then prints the median of 7 in-process compressions
and decompressions of kodim23 at quality 7, or at the quality given as the second argument (seconds).
Interleaving the runs spreads a shared machine's load over both. (Checkouts from before vqcodec 0.3 named
vqf8-v3 here. An installed vqcodec finds the installed models first: give the old checkout's model folder
as the third argument.)
"""
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from vqcodec.codec import load_codec

label = sys.argv[1] if len(sys.argv) > 1 else "this"
quality = int(sys.argv[2]) if len(sys.argv) > 2 else 7
codec = load_codec(sys.argv[3] if len(sys.argv) > 3 else None)  # a model folder, e.g. the old checkout's
image = Image.open(Path(__file__).resolve().parents[1] / "benchmarks/kodak/kodim23.png").convert("RGB")
data = codec.compress(image, quality)
codec.decompress(data)
enc, dec = [], []
for _ in range(7):
    t = time.perf_counter()
    codec.compress(image, quality)
    enc.append(time.perf_counter() - t)
    t = time.perf_counter()
    codec.decompress(data)
    dec.append(time.perf_counter() - t)
print(label, round(statistics.median(enc), 3), round(statistics.median(dec), 3))
