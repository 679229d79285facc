"""Issue 30, the colour layer as built (vqcodec/colour.py): which blocks and steps, and which threshold in dB per
added bpp, should the encoder use? Whole files with real bytes (the layer's header fields, length, CRC and
stream words counted), on the held-out clean photos; the per-image numbers are kept so any policy can be
scored offline.

    python experiments/colour_policy.py vqf8-v13 runs/holdout_clean --qualities 1-8 --json experiments/results/colour_policy_v13.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from vqcodec import colour
from vqcodec.bench.bdrate import bd_rate_with_overlap
from vqcodec.codec import load_codec

VARIANTS = [(lb, s) for lb in (5, 6, 7, 8) for s in (2, 4, 8)]


def score(rows, qualities, policy):
    """Mean bpp and PSNR per quality when each image takes the layer `policy` picks (None: none)."""
    pts = []
    for q in qualities:
        bpp, ps = [], []
        for r in rows[str(q)]:
            px, base_bytes, sse0 = r["pixels"], r["bytes"], r["sse"]
            pick = policy(r)
            nbytes, sse = (base_bytes, sse0) if pick is None else (base_bytes + pick["cost_bytes"], pick["sse"])
            bpp.append(8 * nbytes / px)
            ps.append(10 * math.log10(255 ** 2 * px * r["channels"] / max(sse, 1e-9)))
        pts.append((float(np.mean(bpp)), float(np.mean(ps))))
    return pts


def threshold_policy(variants, db_per_bpp):
    def pick(r):
        best, best_score = None, 0.0
        for v in r["variants"]:
            if [v["log2_block"], v["step"]] not in [list(x) for x in variants]:
                continue
            gain = 10 * math.log10(r["sse"] / max(v["sse"], 1e-9))
            s = gain - db_per_bpp * 8 * v["cost_bytes"] / r["pixels"]
            if s > best_score:
                best, best_score = v, s
        return best
    return pick


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--qualities", default="1-8")
    ap.add_argument("--json")
    args = ap.parse_args()
    codec = load_codec(args.model)
    lo, hi = (int(v) for v in args.qualities.split("-"))
    qualities = list(range(lo, hi + 1))
    paths = sorted(Path(args.images).glob("*.png"))
    rows = {}
    for q in qualities:
        rows[str(q)] = []
        for p in paths:
            img = Image.open(p).convert("RGB")
            x = np.asarray(img)
            data = codec.compress(img, q)
            y = np.asarray(codec.decompress(data).convert("RGB"))
            r = dict(image=p.name, pixels=x.shape[0] * x.shape[1], channels=3, bytes=len(data),
                     sse=float(((x.astype(np.int64) - y) ** 2).sum()), variants=[])
            for lb, s in VARIANTS:
                values = colour.fit(x, y, lb, s)
                decays, stream = colour.encode(values, s)
                layer = colour.Layer(lb, s, decays, stream, values)
                yc = colour.apply(y, values, lb, s)
                r["variants"].append(dict(log2_block=lb, step=s, cost_bytes=layer.cost_bytes,
                                          sse=float(((x.astype(np.int64) - yc) ** 2).sum())))
            rows[str(q)].append(r)
        print(q, "done", flush=True)
    none = score(rows, qualities, lambda r: None)
    results = {}
    for name, variants in [("all", VARIANTS), ("built", colour.CANDIDATES)] + [(f"B{1 << lb} s{s}", [(lb, s)]) for lb, s in VARIANTS]:
        for t in (0, 10, 20, 40, 80, 160):
            pts = score(rows, qualities, threshold_policy(variants, t))
            bd = bd_rate_with_overlap([p[0] for p in none], [p[1] for p in none], [p[0] for p in pts], [p[1] for p in pts])[0]
            results[f"{name} @{t}"] = dict(bd_rate_pct=round(bd, 2), points=[[round(a, 5), round(b, 3)] for a, b in pts])
    for k, v in sorted(results.items(), key=lambda kv: kv[1]["bd_rate_pct"])[:15]:
        print(f"{k:18s} {v['bd_rate_pct']:+.2f} %")
    print("built @%g" % colour.DB_PER_BPP, results.get(f"built @{colour.DB_PER_BPP:g}", {}).get("bd_rate_pct"))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "images": args.images, "count": len(paths),
                                               "none": none, "policies": results, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
