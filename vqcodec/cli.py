"""The `vqcodec` command: a thin click layer over the library (no model logic here)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from . import DEFAULT_QUALITY, __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
IMAGE_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM",
                 ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}


def fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def write_atomically(path: Path, write, force: bool) -> None:
    """Write via a temporary file in the same folder, then rename: no partial file on any error."""
    if path.exists() and not force:
        raise fail(f"{path} already exists (use --force to overwrite)")
    if path.is_dir():
        raise fail(f"{path} is a directory")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise fail(f"folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise fail(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise fail(f"cannot write {path}: {e.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_input(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise fail(f"no such file: {path}") from None
    except IsADirectoryError:
        raise fail(f"{path} is a directory") from None
    except OSError as e:
        raise fail(f"cannot read {path}: {e.strerror}") from None


def library_errors(fn):
    """Turn library errors (ValueError and friends) into one-line click errors."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except OSError as e:
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise fail(f"{e.strerror or e}{where}".splitlines()[0]) from None
        except (ValueError, MemoryError) as e:
            raise fail((str(e) or e.__class__.__name__).splitlines()[0]) from None
    return wrapper


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version")
def cli():
    """vqcodec: a learned image codec. Compress images to .vq files and back.

    \b
      vqcodec compress photo.png photo.vq -q 6
      vqcodec decompress photo.vq restored.png
      vqcodec info photo.vq
    """


@cli.command(context_settings=CONTEXT)
@click.argument("input", metavar="INPUT_IMAGE")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-q", "--quality", type=int, default=DEFAULT_QUALITY, show_default=True,
              help="1 = smallest file; higher = better image (the model's number of levels is the top).")
@click.option("--model", default=None, help="Shipped model name or model folder (default: the shipped default).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--quiet", is_flag=True, help="Print nothing on success.")
@library_errors
def compress(input, output, quality, model, device, force, quiet):
    """Compress INPUT_IMAGE (PNG, JPEG, ...) into the .vq file OUTPUT."""
    from .codec import load_codec
    from .images import open_image

    if output.exists() and not force:
        raise fail(f"{output} already exists (use --force to overwrite)")
    image = open_image(input)
    codec = load_codec(model, device)
    codec.check_quality(quality)
    notes: list[str] = []
    data = codec.compress(image, quality, notes=notes)
    for note in notes:
        click.echo(f"Note: {note}", err=True)
    write_atomically(output, lambda f: f.write(data), force)
    if not quiet:
        bpp = 8 * len(data) / (image.width * image.height)
        click.echo(f"{input} -> {output}: {image.width}x{image.height}, quality {quality}, "
                   f"{len(data)} bytes, {bpp:.4f} bpp")


@cli.command(context_settings=CONTEXT)
@click.argument("input", metavar="INPUT_VQ")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="Model name or folder (default: the shipped model the file names).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--quiet", is_flag=True, help="Print nothing on success.")
@library_errors
def decompress(input, output, model, device, force, quiet):
    """Decode the .vq file INPUT_VQ into the image OUTPUT (format from its extension, e.g. .png)."""
    from . import read_info
    from .codec import load_codec

    fmt = IMAGE_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise fail(f"unknown image extension {output.suffix!r} (use one of {', '.join(sorted(IMAGE_FORMATS))})")
    if output.exists() and not force:
        raise fail(f"{output} already exists (use --force to overwrite)")
    data = read_input(input)
    header = read_info(data)
    image = load_codec(model or header.model_name, device).decompress(data)
    write_atomically(output, lambda f: image.save(f, format=fmt), force)
    if not quiet:
        click.echo(f"{input} -> {output}: {image.width}x{image.height} {image.mode}")


@cli.command(context_settings=CONTEXT)
@click.argument("input", metavar="INPUT_VQ")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@library_errors
def info(input, as_json):
    """Show what a .vq file holds: model, size, quality, bytes, bits per pixel."""
    from . import read_info
    from .container import FORMAT_VERSION

    data = read_input(input)
    h = read_info(data)
    fields = {"file": input, "format_version": FORMAT_VERSION, "model": h.model_name, "model_hash": h.model_hash.hex(),
              "width": h.width, "height": h.height, "mode": h.mode, "quality": h.quality,
              "bytes": len(data), "bpp": round(8 * len(data) / (h.width * h.height), 6)}
    if as_json:
        click.echo(json.dumps(fields))
    else:
        for k, v in fields.items():
            click.echo(f"{k:>14}: {v}")


@cli.command(context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/train"),
              show_default=True, help="Checkpoints and the exported model go here; a rerun resumes.")
@click.option("--name", default="vqf8-custom", show_default=True, help="Name of the exported model.")
@click.option("--steps", type=int, default=6000, show_default=True, help="Autoencoder training steps (total; a rerun with more steps continues, ramping the learning rate up again over 200 steps).")
@click.option("--prior-steps", type=int, default=1500, show_default=True, help="Prior steps (float, then 1/3 more quantisation-aware).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--crop", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--prior-crops", type=int, default=1600, show_default=True, help="Crops whose indices train the prior.")
@click.option("--prior-crop", type=int, default=256, show_default=True, help="Size of those crops.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--config", "config_json", default=None,
              help="JSON object overriding model config fields, e.g. '{\"num_stages\": 8}'. coarse_sizes "
                   "defaults to [32, 128] (the coarse quality levels below one full stage; [] for none).")
@library_errors
def train(data_dir, out, name, steps, prior_steps, batch_size, crop, lr, prior_crops, prior_crop, device, config_json):
    """Train a model on a folder of images (autoencoder, then prior), and export it to OUT/NAME."""
    from .training_cli import run_training

    run_training(data_dir=data_dir, out=out, name=name, steps=steps, prior_steps=prior_steps,
                 batch_size=batch_size, crop=crop, lr=lr, prior_crops=prior_crops, prior_crop=prior_crop,
                 device=device, config_json=config_json, echo=click.echo)


def _register_bench():
    try:
        from .bench.command import bench
    except ImportError:  # the benchmark extra is not installed
        return
    cli.add_command(bench)


_register_bench()


def main():
    cli(prog_name="vqcodec")


if __name__ == "__main__":
    main()
