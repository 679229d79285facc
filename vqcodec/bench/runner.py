"""The benchmark loop: every codec x quality x image, measured, summarised and written to out_dir.

Outputs (each written atomically: temp file + os.replace):
  results.json   every number (schema in benchmarks/README.md)
  report.md      tables ready to paste into a README
  rd_psnr.png, rd_msssim.png, compare.png   figures
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .bdrate import bd_rate_with_overlap
from .codecs import Codec, make_codec
from .metrics import ms_ssim, ms_ssim_scales, msssim_db, psnr
from . import report

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CROP_SIZE = 256
DEFAULT_TARGET_BPP = 0.25
PUBLISHED_PATH = Path(__file__).with_name("kodak_published.json")


def list_images(dataset_dir) -> list[Path]:
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise ValueError(f"dataset folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no .png/.jpg images in {folder}")
    return paths


def load_rgb(path: Path) -> Image.Image:
    """8-bit RGB with no metadata (so no codec embeds an ICC profile or EXIF into its bytes)."""
    try:
        with Image.open(path) as im:
            return Image.fromarray(np.asarray(im.convert("RGB")))
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def subsample(qualities: list, n: int | None) -> list:
    """n evenly spaced points of a sweep, ends included (n=1: the middle one)."""
    if n is None or n >= len(qualities):
        return list(qualities)
    if n < 1:
        raise ValueError(f"qualities per codec must be at least 1, got {n}")
    if n == 1:
        return [qualities[len(qualities) // 2]]
    idx = sorted(set(np.linspace(0, len(qualities) - 1, n).round().astype(int).tolist()))
    return [qualities[i] for i in idx]


def run_benchmark(dataset_dir, codec_names, device: str = "cpu", out_dir="bench-results",
                  max_images: int | None = None, qualities_per_codec: int | None = None,
                  progress: bool = True, echo=print, model=None, reference_curves: bool | None = None,
                  reuse: list = ()) -> dict:
    """Run the benchmark and write results.json, report.md and the figures into out_dir.

    codec_names: registry names (see codecs.CODECS) or ready Codec objects.
    reuse: earlier results.json files of the same images; their codecs that this run does not measure are
    added as they were measured then (marked "reused_from"; not in compare.png, which needs decoded crops).
    reference_curves: draw/compare the published Kodak curves; None = only when every image is a kodimNN.
    Returns the results dict (as written to results.json).
    """
    paths = list_images(dataset_dir)
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max images must be at least 1, got {max_images}")
        paths = paths[:max_images]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path exists and is not a folder: {out}")
    codecs = []
    for c in codec_names:
        if isinstance(c, Codec):
            codecs.append(c)
            continue
        if c == "vqcodec":
            echo(f"loading vqcodec model on {device} ...")
        codecs.append(make_codec(c, device=device, model=model))
    names = [c.name for c in codecs]
    if len(set(names)) != len(names):
        raise ValueError(f"codec names must be unique, got {names}")
    if not codecs:
        raise ValueError("no codecs to benchmark")
    reused = _reused_codecs(reuse, [p.name for p in paths], names)   # checked before anything runs
    out.mkdir(parents=True, exist_ok=True)  # fail now rather than after the run
    images = [(p.name, load_rgb(p)) for p in paths]
    kodak = all(re.fullmatch(r"kodim\d\d", p.stem) for p in paths)
    published_note = None
    if reference_curves is None:
        reference_curves = kodak and len({p.stem for p in paths}) == 24
        if kodak and not reference_curves:
            published_note = (f"Published Kodak results are means over all 24 images; this run has {len(paths)}, "
                              "so they are left out.")
    sweeps = {c.name: subsample(c.qualities, qualities_per_codec) for c in codecs}

    small = [n for n, im in images if ms_ssim_scales(im.height, im.width) < 5]
    if small:
        echo(f"note: {len(small)} image(s) shorter than 161 px on a side; MS-SSIM uses fewer than 5 scales there")

    crop_box = _center_crop_box(images[0][1], CROP_SIZE)
    results = {
        "dataset": Path(dataset_dir).resolve().name,
        "dataset_path": str(Path(dataset_dir).resolve()),
        "images": len(images),
        "image_names": [n for n, _ in images],
        "device": str(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "env": environment(device),
        "codecs": {},
    }
    crops = {}  # codec -> list of {quality, bpp, psnr, crop} for the first image
    total = sum(len(q) for q in sweeps.values()) * len(images)
    with tqdm(total=total, disable=not progress, unit="img", dynamic_ncols=True) as bar:
        def say(line):
            with tqdm.external_write_mode():
                echo(line)

        say(report.ROW_HEADER)
        for codec in codecs:
            entry = {"settings": codec.settings, "qualities": sweeps[codec.name], "points": [], "per_image": []}
            if getattr(codec, "model_load_s", None) is not None:
                entry["model_load_s"] = codec.model_load_s
            _warm_up(codec, images[0][1], sweeps[codec.name])
            crops[codec.name] = []
            for quality in sweeps[codec.name]:
                bar.set_description(f"{codec.name} q={quality}")
                rows, split = _measure(codec, quality, images, bar)
                entry["per_image"] += rows
                point = _summarise(quality, rows, images)
                if split:
                    point["time_split"] = split
                entry["points"].append(point)
                crops[codec.name].append({"quality": quality, "bpp": rows[0]["bpp"], "psnr": rows[0]["psnr"],
                                          "crop": rows[0].pop("_decoded").crop(crop_box)})
                for r in rows[1:]:
                    r.pop("_decoded")
                say(report.row(codec.name, point))
            results["codecs"][codec.name] = entry
    for name, entry in reused.items():
        echo(f"{name}: reused from {entry['reused_from']['file']} ({entry['reused_from']['created']})")
        results["codecs"][name] = entry

    published = _load_published() if reference_curves else None
    if published:
        results["published"] = {"source": published["source"], "codecs": list(published["codecs"])}
    results["bd_rate"], results["bd_rate_overlap"] = bd_rate_matrix(results["codecs"])
    if published:
        results["bd_rate_vs_published"] = bd_rate_vs_published(results["codecs"], published["codecs"])
    if published_note:
        results["published_note"] = published_note
        echo(f"note: {published_note}")
    results["figures"] = report.have_matplotlib()
    results = _json_safe(results)

    write_atomic(out / "results.json", lambda p: p.write_text(json.dumps(results, indent=1, allow_nan=False)))
    write_atomic(out / "report.md", lambda p: p.write_text(report.markdown(results)))
    if not results["figures"]:
        echo(f"wrote results.json and report.md to {out} (no figures: matplotlib is not installed; "
             "pip install 'vqcodec[bench]' adds them)")
        return results
    for metric, filename in (("psnr", "rd_psnr.png"), ("ms_ssim", "rd_msssim.png")):
        fig = report.rd_figure(results, metric, published["codecs"] if published else None)
        write_atomic(out / filename, lambda p: fig.savefig(p, format="png"))
    fig = report.compare_figure(images[0], crop_box, _pick_crops(crops, results["codecs"]))
    write_atomic(out / "compare.png", lambda p: fig.savefig(p, format="png"))
    echo(f"wrote results.json, report.md, rd_psnr.png, rd_msssim.png, compare.png to {out}")
    return results


def _reused_codecs(files, image_names: list[str], measured: list[str]) -> dict:
    """{codec: entry} from earlier results.json files, for the codecs not measured now. ValueError unless each
    file measured exactly these images (its per-image rows name them)."""
    reused = {}
    for f in files:
        try:
            old = json.loads(Path(f).read_text())
            entries = old["codecs"]
            for name, entry in entries.items():
                got = sorted({r["image"] for r in entry["per_image"]})
                if got != sorted(image_names):
                    raise ValueError(f"--reuse {f}: its {name} was measured on {len(got)} other images, not this "
                                     f"run's {len(image_names)}")
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"--reuse {f}: not a vqcodec bench results.json ({type(e).__name__}: {e})") from None
        for name, entry in entries.items():
            if name not in measured and name not in reused:
                reused[name] = dict(entry, reused_from={"file": str(f), "created": old.get("created"),
                                                        "env": old.get("env")})
    return reused


def _warm_up(codec: Codec, image: Image.Image, qualities: list) -> None:
    """One untimed encode/decode so lazy initialisation (threads, CUDA kernels) is not measured."""
    codec.decode(codec.encode(image, qualities[len(qualities) // 2]))


def _measure(codec: Codec, quality, images, bar) -> tuple[list[dict], dict | None]:
    """Encode and decode every image at one quality. Returns per-image rows and, when the codec
    reports one, the median time split {"encode": {...}, "decode": {...}} in seconds."""
    splits = {"encode": [], "decode": []}
    if getattr(codec, "batch", False):
        t0 = time.perf_counter()
        datas = codec.encode_batch([im for _, im in images], quality)
        t1 = time.perf_counter()
        enc_split = codec.last_timings
        decoded = codec.decode_batch(datas)
        t2 = time.perf_counter()
        dec_split = codec.last_timings
        n = len(images)
        times = [((t1 - t0) / n, (t2 - t1) / n)] * n
        for kind, s in (("encode", enc_split), ("decode", dec_split)):
            if s:
                splits[kind] = [{k: v / n for k, v in s.items()}]
        bar.update(n)
    else:
        datas, decoded, times = [], [], []
        for _, image in images:
            t0 = time.perf_counter()
            data = codec.encode(image, quality)
            t1 = time.perf_counter()
            if hasattr(codec, "last_timings") and codec.last_timings:
                splits["encode"].append(codec.last_timings)
            rec = codec.decode(data)
            t2 = time.perf_counter()
            if hasattr(codec, "last_timings") and codec.last_timings:
                splits["decode"].append(codec.last_timings)
            datas.append(data)
            decoded.append(rec)
            times.append((t1 - t0, t2 - t1))
            bar.update(1)

    rows = []
    for (name, image), data, rec, (enc_s, dec_s) in zip(images, datas, decoded, times):
        if rec.size != image.size:
            raise ValueError(f"{codec.name} at quality {quality} decoded {name} to {rec.size}, "
                             f"expected {image.size}")
        rows.append({"image": name, "quality": quality, "bpp": len(data) * 8 / (image.width * image.height),
                     "psnr": psnr(image, rec), "ms_ssim": ms_ssim(image, rec),
                     "encode_s": enc_s, "decode_s": dec_s, "_decoded": rec})
    split = None
    if splits["encode"] or splits["decode"]:
        split = {kind: {k: statistics.median(s.get(k, math.nan) for s in ss) for k in ss[0]}
                 for kind, ss in splits.items() if ss}
    return rows, split


def _summarise(quality, rows: list[dict], images) -> dict:
    """One rate-distortion point: means of per-image bpp/PSNR/MS-SSIM, medians of per-image times."""
    mpix = [im.width * im.height / 1e6 for _, im in images]
    ms = statistics.fmean(r["ms_ssim"] for r in rows)
    return {
        "quality": quality,
        "bpp": statistics.fmean(r["bpp"] for r in rows),
        "psnr": statistics.fmean(r["psnr"] for r in rows),
        "ms_ssim": ms,
        "ms_ssim_db": msssim_db(ms),
        "encode_s": statistics.median(r["encode_s"] for r in rows),
        "decode_s": statistics.median(r["decode_s"] for r in rows),
        "encode_mpps": statistics.median(m / max(r["encode_s"], 1e-12) for m, r in zip(mpix, rows)),
        "decode_mpps": statistics.median(m / max(r["decode_s"], 1e-12) for m, r in zip(mpix, rows)),
    }


def _curve(points: list[dict], metric: str) -> tuple[list, list]:
    key = "psnr" if metric == "psnr" else "ms_ssim_db"
    pts = [(p["bpp"], p[key]) for p in points
           if p[key] is not None and math.isfinite(p[key]) and p["bpp"] and p["bpp"] > 0]
    return [b for b, _ in pts], [q for _, q in pts]


def bd_rate_matrix(codecs: dict) -> tuple[dict, dict]:
    """BD-rate (percent) of every codec (rows) against every other (anchors), for PSNR and MS-SSIM dB.
    None where undefined (no shared quality range, too few points). Also returns the overlaps."""
    bd, overlap = {}, {}
    for metric in ("psnr", "ms_ssim"):
        bd[metric], overlap[metric] = {}, {}
        for test, t in codecs.items():
            bd[metric][test], overlap[metric][test] = {}, {}
            for anchor, a in codecs.items():
                if test == anchor:
                    bd[metric][test][anchor], overlap[metric][test][anchor] = 0.0, 1.0
                    continue
                bd[metric][test][anchor], overlap[metric][test][anchor] = _safe_bd(
                    _curve(a["points"], metric), _curve(t["points"], metric))
    return bd, overlap


def bd_rate_vs_published(codecs: dict, published: dict) -> dict:
    """BD-rate of every measured codec against each published Kodak curve (its points as published)."""
    table = {}
    for metric in ("psnr", "ms_ssim"):
        table[metric] = {}
        for test, t in codecs.items():
            table[metric][test] = {}
            for ref, r in published.items():
                q = r["psnr"] if metric == "psnr" else [msssim_db(v) for v in r["ms_ssim"]]
                table[metric][test][ref], _ = _safe_bd((r["bpp"], q), _curve(t["points"], metric))
    return table


def _safe_bd(anchor, test) -> tuple[float | None, float | None]:
    try:
        return bd_rate_with_overlap(anchor[0], anchor[1], test[0], test[1])
    except ValueError:
        return None, None


def _center_crop_box(image: Image.Image, size: int) -> tuple[int, int, int, int]:
    w, h = min(size, image.width), min(size, image.height)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return left, top, left + w, top + h


def _pick_crops(crops: dict, codecs: dict) -> list[dict]:
    """Per codec, the first-image decode whose bpp is closest to the target: the median bpp of
    vqcodec's points when it ran, else DEFAULT_TARGET_BPP."""
    if crops.get("vqcodec"):
        target = statistics.median(c["bpp"] for c in crops["vqcodec"])
    else:
        target = DEFAULT_TARGET_BPP
    picked = []
    for name, options in crops.items():
        best = min(options, key=lambda c: abs(c["bpp"] - target))
        picked.append({"codec": name, **best})
    return picked


def _load_published() -> dict | None:
    try:
        return json.loads(PUBLISHED_PATH.read_text())
    except (OSError, ValueError):
        return None


def environment(device: str) -> dict:
    """Versions and hardware, for the record."""
    import torch
    from PIL import features

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    gpu = None
    if str(device).startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    from .. import __version__ as vq   # the code that ran (an editable install's metadata can be stale)
    return {
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "numpy": np.__version__, "pillow": version("pillow"),
        "constriction": version("constriction"), "vqcodec": vq,
        "libraries": {lib: features.version(key) for lib, key in (
            ("libjpeg-turbo", "libjpeg_turbo"), ("libwebp", "webp"), ("libavif", "avif"), ("openjpeg", "jpg_2000"))},
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _json_safe(value):
    """NaN/inf -> None (strict JSON), numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path), then move the temp file over path in one step."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
