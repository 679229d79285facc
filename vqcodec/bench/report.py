"""Human-readable output of a benchmark: console rows, report.md and the figures.

Figures use matplotlib's object API (matplotlib.figure.Figure), which renders with Agg and needs
neither pyplot nor a display.
"""
from __future__ import annotations

import math
import statistics

import numpy as np

from .metrics import msssim_db


def have_matplotlib() -> bool:
    try:
        import matplotlib.figure  # noqa: F401
        return True
    except ImportError:
        return False

ROW_HEADER = (f"{'codec':<9} {'quality':>7} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'(dB)':>6} "
              f"{'enc ms':>8} {'dec ms':>8}")


def _f(value, fmt: str, missing: str = "-") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def row(codec: str, p: dict) -> str:
    """One console line per rate-distortion point."""
    return (f"{codec:<9} {str(p['quality']):>7} {_f(p['bpp'], '7.4f')} {_f(p['psnr'], '7.2f')} "
            f"{_f(p['ms_ssim'], '8.5f')} {_f(p['ms_ssim_db'], '6.2f')} "
            f"{_f(p['encode_s'] * 1e3, '8.1f')} {_f(p['decode_s'] * 1e3, '8.1f')}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _bd_cell(value, overlap) -> str:
    if value is None:
        return "n/a"
    mark = "*" if overlap is not None and overlap < 0.5 else ""
    return f"{value:+.1f}%{mark}"


def markdown(results: dict) -> str:
    env = results["env"]
    codecs = results["codecs"]
    names = list(codecs)
    hw = env["gpu"] or env["cpu"]
    lines = [
        f"# Rate-distortion benchmark: {results['dataset']} ({results['images']} images)",
        "",
        f"Device `{results['device']}` ({hw}; {env['cpu_count']} CPU cores, torch {env['torch_threads']} threads). "
        f"torch {env['torch']}, Pillow {env['pillow']}, constriction {env['constriction']}, "
        f"vqcodec {env['vqcodec']}; " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()) + ".",
        "",
        "bpp counts every byte of each file (headers included); PSNR and MS-SSIM are on 8-bit RGB, "
        "averaged over images; MS-SSIM dB = -10 log10(1 - MS-SSIM). Times are medians over images, "
        "one untimed warm-up per codec.",
        "",
    ]
    names_line = ", ".join(results.get("image_names", []))
    if names_line:
        lines += [f"Images: {names_line}.", ""]
    reused = {n: c["reused_from"] for n, c in codecs.items() if c.get("reused_from")}
    if reused:
        lines += ["Not re-run here (`--reuse`): " + "; ".join(
            f"{n} as measured on {r.get('created')} ({r['file']})" for n, r in reused.items()) + ".", ""]
    if results.get("published_note"):
        lines += [results["published_note"], ""]
    if results.get("figures", True):
        lines += ["![rate-distortion, PSNR](rd_psnr.png)", "![rate-distortion, MS-SSIM](rd_msssim.png)",
                  "![same crop, similar rate](compare.png)", ""]
    else:
        lines += ["(No figures: matplotlib is not installed; `pip install 'vqcodec[bench]'` adds them.)", ""]
    for metric, title in (("psnr", "PSNR"), ("ms_ssim", "MS-SSIM (dB)")):
        lines += [f"## BD-rate, {title}", "",
                  "Row codec against column anchor; negative = fewer bits for the same quality. "
                  "`*` = curves overlap on less than half of their quality range; n/a = no overlap.", ""]
        bd, ov = results["bd_rate"][metric], results["bd_rate_overlap"][metric]
        lines += _table(["codec \\ anchor"] + names,
                        [[t] + [_bd_cell(bd[t][a], ov[t][a]) for a in names] for t in names])
        lines.append("")
    if "bd_rate_vs_published" in results:
        refs = results["published"]["codecs"]
        lines += ["## BD-rate against published Kodak results (not re-run here)", "",
                  f"Source: {results['published']['source']}", ""]
        for metric, title in (("psnr", "PSNR"), ("ms_ssim", "MS-SSIM (dB)")):
            bd = results["bd_rate_vs_published"][metric]
            lines += [f"{title}:", ""]
            lines += _table(["codec \\ published"] + refs,
                            [[t] + [_bd_cell(bd[t][r], None) for r in refs] for t in names])
            lines.append("")

    lines += ["## Speed", "", "Median over all images and qualities; MP/s = megapixels per second.", ""]
    speed_rows = []
    for name, c in codecs.items():
        enc = [r["encode_s"] for r in c["per_image"]]
        dec = [r["decode_s"] for r in c["per_image"]]
        speed_rows.append([name, _f(statistics.median(enc) * 1e3, ".1f"), _f(statistics.median(dec) * 1e3, ".1f"),
                           _f(statistics.median(p["encode_mpps"] for p in c["points"]), ".2f"),
                           _f(statistics.median(p["decode_mpps"] for p in c["points"]), ".2f"),
                           _f(c.get("model_load_s"), ".2f")])
    lines += _table(["codec", "encode ms", "decode ms", "encode MP/s", "decode MP/s", "model load s"], speed_rows)
    lines.append("")

    lines += ["## Rate-distortion points", ""]
    for name, c in codecs.items():
        lines += [f"### {name}", "", f"Settings: {c['settings']}", ""]
        lines += _table(["quality", "bpp", "PSNR dB", "MS-SSIM", "MS-SSIM dB", "encode ms", "decode ms"],
                        [[str(p["quality"]), _f(p["bpp"], ".4f"), _f(p["psnr"], ".2f"), _f(p["ms_ssim"], ".5f"),
                          _f(p["ms_ssim_db"], ".2f"), _f(p["encode_s"] * 1e3, ".1f"), _f(p["decode_s"] * 1e3, ".1f")]
                         for p in c["points"]])
        lines.append("")
        if any("time_split" in p for p in c["points"]):
            lines += ["Time split, median ms per image (network / prior / entropy coding):", ""]
            split_rows = []
            for p in c["points"]:
                s = p.get("time_split", {})
                split_rows.append([str(p["quality"])] + [
                    " / ".join(_f(_ms(s.get(kind, {}).get(k)), ".1f")
                               for k in ("network_s", "prior_s", "entropy_s"))
                    for kind in ("encode", "decode")])
            lines += _table(["quality", "encode", "decode"], split_rows)
            lines.append("")
    return "\n".join(lines)


def rd_figure(results: dict, metric: str, published: dict | None):
    """bpp vs PSNR or vs MS-SSIM (dB): one line per measured codec, published curves dashed."""
    key, ylabel = ("psnr", "PSNR (dB)") if metric == "psnr" else ("ms_ssim_db", "MS-SSIM (dB)")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    xmax = 0.0
    for name, c in results["codecs"].items():
        pts = sorted((p["bpp"], p[key]) for p in c["points"] if p[key] is not None)
        if pts:
            ours = name == "vqcodec"
            ax.plot(*zip(*pts), marker="o", markersize=4 if ours else 3, linewidth=2.5 if ours else 1.5,
                    label=name, zorder=3 if ours else 2)
            xmax = max(xmax, pts[-1][0])
    # published curves: dashed, in greys, told apart by their markers
    for i, (name, ref) in enumerate((published or {}).items()):
        y = ref["psnr"] if metric == "psnr" else [msssim_db(v) for v in ref["ms_ssim"]]
        pts = [(b, v) for b, v in zip(ref["bpp"], y) if xmax == 0 or b <= xmax * 1.3]
        if pts:
            ax.plot(*zip(*pts), linestyle="--", linewidth=1, color=str(0.15 + 0.13 * (i % 5)),
                    marker="^sDvx"[i % 5], markersize=3.5, label=f"{name} (published, not re-run)", zorder=1)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    n = results["images"]
    ax.set_title(f"{results['dataset']}, {n} image{'s' if n != 1 else ''}, RGB")
    if xmax > 0:
        ax.set_xlim(0, xmax * 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def compare_figure(original: tuple, crop_box: tuple, picked: list[dict]) -> Figure:
    """The same crop of the first image: original, then each codec at its rate closest to the target."""
    name, image = original
    panels = [("original", image.crop(crop_box), "")]
    panels += [(p["codec"], p["crop"], f"q={p['quality']}, {p['bpp']:.3f} bpp, {_f(p['psnr'], '.2f')} dB")
               for p in picked]
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * cols, 3.6 * rows + 0.4), dpi=100, layout="constrained")
    fig.suptitle(f"{name}, crop {crop_box[2] - crop_box[0]}x{crop_box[3] - crop_box[1]} at ({crop_box[0]}, "
                 f"{crop_box[1]}); bpp and PSNR of the whole image", fontsize=9)
    for i, (title, crop, sub) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(np.asarray(crop), interpolation="nearest")
        ax.set_title(f"{title}\n{sub}" if sub else title, fontsize=9)
        ax.set_axis_off()
    return fig
