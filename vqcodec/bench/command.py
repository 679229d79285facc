"""`vqcodec bench`: the rate-distortion benchmark from the command line (add with cli.add_command(bench))."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .codecs import CODECS, DEFAULT_CODECS

KODAK_ENV = "VQCODEC_KODAK"


def default_dataset() -> Path:
    """$VQCODEC_KODAK when set, else benchmarks/kodak in the repository this package lives in."""
    env = os.environ.get(KODAK_ENV)
    if env:
        if not Path(env).is_dir():
            raise click.ClickException(f"${KODAK_ENV}={env} is not a folder; fix it or pass --dataset DIR")
        return Path(env)
    repo_kodak = Path(__file__).resolve().parents[2] / "benchmarks" / "kodak"
    here = Path.cwd() / "benchmarks" / "kodak"
    for folder in (repo_kodak, here):
        if folder.is_dir():
            return folder
    raise click.ClickException(f"Kodak suite not found (no ./benchmarks/kodak, ${KODAK_ENV} not set); "
                               "pass --dataset DIR with the images to benchmark")


def parse_codecs(text: str) -> list[str]:
    names = []
    for name in (n.strip().lower() for n in text.split(",")):
        if name and name not in names:
            names.append(name)
    unknown = [n for n in names if n not in CODECS]
    if unknown:
        raise click.ClickException(f"unknown codec(s) {', '.join(unknown)}; valid: {', '.join(CODECS)}")
    if not names:
        raise click.ClickException(f"--codecs is empty; valid: {', '.join(CODECS)}")
    return names


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda, but CUDA is not available here; use --device cpu")
    return device


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", type=click.Path(path_type=Path), default=None,
              help=f"Folder of .png/.jpg images. Default: benchmarks/kodak in the repo, or ${KODAK_ENV}.")
@click.option("--codecs", "codec_list", default=",".join(DEFAULT_CODECS), show_default=True,
              help=f"Comma-separated codecs, from: {', '.join(CODECS)}.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where vqcodec runs (auto = cuda when available). Classic codecs always use the CPU.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench-results"), show_default=True,
              help="Output folder for results.json, report.md and the figures (its own files are replaced).")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use only the first N images.")
@click.option("--qualities", type=click.IntRange(min=1), default=None,
              help="Run only N evenly spaced points of each codec's quality sweep (quick runs, CI).")
@click.option("--model", default=None,
              help="vqcodec model: a shipped model name or a model folder (default: the shipped model).")
@click.option("--reuse", "reuse", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An earlier run's results.json on the same images: its codecs that this run does not measure "
                   "join the tables and plots as they were measured then (repeatable). For re-running one codec.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar. [default: when standard error is a terminal]")
def bench(dataset, codec_list, device, out_dir, max_images, qualities, model, reuse, progress):
    """Measure rate (bpp), PSNR, MS-SSIM and speed of each codec over a quality sweep on an image set,
    with BD-rates between all codecs, and write a report with rate-distortion plots.

    \b
    Examples:
      vqcodec bench --codecs vqcodec,jpeg,avif --max-images 4 --qualities 4 --out /tmp/bench
      vqcodec bench --codecs vqcodec --reuse old/results.json --out new   # the other codecs as measured before
    """
    names = parse_codecs(codec_list)
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    if dataset is None:
        dataset = default_dataset()
    elif not dataset.is_dir():
        raise click.ClickException(f"--dataset {dataset}: not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise click.ClickException(f"--out {out_dir}: exists and is not a folder")
    device = resolve_device(device)

    try:
        from .runner import run_benchmark
    except ImportError as e:
        raise click.ClickException(f"the benchmark needs {e.name or 'matplotlib'}: "
                                   "pip install 'vqcodec[bench]'") from e

    click.echo(f"benchmark: {', '.join(names)} on {dataset} ({device})")
    try:
        run_benchmark(dataset, names, device=device, out_dir=out_dir, max_images=max_images,
                      qualities_per_codec=qualities, progress=progress, echo=click.echo, model=model,
                      reuse=list(reuse))
    except ImportError as e:
        raise click.ClickException(f"cannot load a codec: {_one_line(e)}") from e
    except (ValueError, OSError, RuntimeError) as e:
        raise click.ClickException(_one_line(e)) from e
