"""The `vqcodec` command: a thin click layer over the library (no model logic here)."""
from __future__ import annotations

import io
import json
import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import click

from . import ALPHA_CHOICES, DEFAULT_EFFORT, DEFAULT_QUALITY, EFFORT_BEAMS, METADATA_CHOICES, __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
IMAGE_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM",
                 ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}
# --format NAME -> (Pillow format, the extension a batch gives its outputs)
OUTPUT_FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg"),
                  "bmp": ("BMP", ".bmp"), "tiff": ("TIFF", ".tif"), "ppm": ("PPM", ".ppm"),
                  "webp": ("WEBP", ".webp")}
# What a folder given to `compress -o` contributes (not recursive); `decompress -o` takes its *.vq files.
INPUT_IMAGE_EXTENSIONS = set(IMAGE_FORMATS) | {".gif", ".tga", ".pbm", ".pnm", ".jp2", ".j2k", ".avif", ".qoi"}
STDIO = "-"


def fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output(path: Path, force: bool) -> None:
    """Refuse an output file that cannot or must not be written; called before any work is done. Nothing that
    is not a regular file (a device, a FIFO, a socket) is ever replaced, with or without --force."""
    if path.is_dir():
        raise fail(f"{path} is a directory")
    if path.exists() and not path.is_file():
        raise fail(f"{str(path)!r} is not a regular file (give - for standard output)")
    if (path.exists() or path.is_symlink()) and not force:
        raise fail(f"{path} already exists (use --force to overwrite)")
    folder = path.parent
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder" if folder.exists() else f"folder {folder} does not exist")


def write_atomically(path: Path, write, force: bool) -> None:
    """Write via a temporary file in the same folder, then rename: no partial file on any error.

    The file gets the permissions an ordinary new file gets (0666 less the umask), or keeps those of
    the file it replaces; not the 0600 of the temporary file.
    """
    check_output(path, force)
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise fail(f"cannot write {path}: {e.strerror}") from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise fail(f"cannot write {path}: {e.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stdout_binary():
    """Standard output for binary data; refuses a terminal."""
    stream = click.get_binary_stream("stdout")
    if stream.isatty():
        raise fail("refusing to write binary data to a terminal (redirect standard output, or name an output file)")
    return stream


def write_output(target: str, data: bytes, force: bool) -> None:
    """Write bytes to a file (atomically) or, for "-", to standard output."""
    if target != STDIO:
        write_atomically(Path(target), lambda f: f.write(data), force)
        return
    stream = stdout_binary()
    try:
        stream.write(data)
        stream.flush()
    except BrokenPipeError:
        try:  # keep Python's exit-time flush of a closed pipe quiet
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        raise fail("standard output was closed before all was written") from None


def label(path: str, output: bool = False) -> str:
    return ("<stdout>" if output else "<stdin>") if path == STDIO else str(path)


def read_input(path: str, named: bool = True, kind: str = "any", max_pixels: int | None = None) -> bytes:
    """The bytes of a file, or of standard input for "-". named=False: messages leave the path out.

    kind "vq": read no more than the .vq header allows a valid file to hold (container.read_bounded), so an
    endless input is refused early. kind "image": an input that no image format recognises in its first
    16 MiB is refused, and one longer than its image's header allows (max_pixels applies) too.
    A device or socket is refused (a FIFO is read: opening one is the user's choice)."""
    where = f"{path!r}" if named else "it"
    try:
        if path == STDIO:
            stream = click.get_binary_stream("stdin")
        else:
            mode = os.stat(path).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise fail(f"{path!r} is not a regular file" if named else "not a regular file")
            stream = open(path, "rb")
        try:
            if kind == "vq":
                from .container import read_bounded

                return read_bounded(stream.read)
            if kind == "image":
                return _read_image_bytes(stream.read, max_pixels)
            return stream.read()
        finally:
            if path != STDIO:
                stream.close()
    except FileNotFoundError:
        raise fail(f"no such file: {path!r}" if named else "no such file") from None
    except IsADirectoryError:
        raise fail(f"{path!r} is a directory" if named else "is a directory") from None
    except OSError as e:
        raise fail(f"cannot read {where}: {e.strerror}") from None


def _read_image_bytes(read, max_pixels: int | None) -> bytes:
    """An image file's bytes from a stream, bounded: its format must show within 16 MiB, and its length stays
    within what an image of its header's size can take (8 bytes a pixel, plus 64 MiB of metadata)."""
    from PIL import Image

    from .images import ImageError, check_pixels

    buf, limit = bytearray(), None
    for probe in (1 << 16, 1 << 20, 1 << 24):
        while len(buf) < probe:
            got = read(probe - len(buf))
            if not got:
                break
            buf.extend(got)
        try:
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(io.BytesIO(buf)) as im:
                    width, height = im.size
            finally:
                Image.MAX_IMAGE_PIXELS = old
            check_pixels(width, height, max_pixels, "the input")
            limit = 8 * width * height + (64 << 20)
            break
        except ImageError:
            raise
        except Exception:  # noqa: BLE001 - not (yet) recognisable as an image
            if len(buf) < probe:  # the input ended
                break
    if limit is None:
        raise ImageError("cannot read the input as an image (UnidentifiedImageError)")
    while len(buf) <= limit:
        got = read(min(1 << 20, limit + 1 - len(buf)))
        if not got:
            return bytes(buf)
        buf.extend(got)
    raise ImageError(f"the input is longer than an image of its size can be ({limit} bytes)")


def error_text(e: BaseException) -> str:
    """The one line the CLI prints for an error."""
    if isinstance(e, click.ClickException):
        return e.format_message()
    if isinstance(e, OSError) and not isinstance(e, click.ClickException):
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        return f"{e.strerror or e}{where}".splitlines()[0]
    return (str(e) or e.__class__.__name__).splitlines()[0]


def library_errors(fn):
    """Turn library errors (ValueError and friends) into one-line click errors."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            except click.ClickException:
                raise
            except (OSError, ValueError, MemoryError) as e:
                raise fail(error_text(e)) from None
            except Exception as e:  # noqa: BLE001 - whatever a hostile input reaches: one line, never a traceback
                raise fail(f"{e.__class__.__name__}: {error_text(e)}") from None
            finally:
                for w in caught:  # a library's warning (Pillow's, say) becomes a note, not Python's two lines
                    if not issubclass(w.category, DeprecationWarning):
                        click.echo(f"Note: {str(w.message).splitlines()[0] if str(w.message) else w.category.__name__}",
                                   err=True)
    return wrapper


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="vqcodec")
def cli():
    """vqcodec: a learned image codec. Compress images to .vq files and back.

    \b
      vqcodec compress photo.png photo.vq -q 6
      vqcodec decompress photo.vq restored.png
      vqcodec info photo.vq
      vqcodec compress photo.png small.vq --target-size 20000
      cat photo.png | vqcodec compress - - > photo.vq
      vqcodec compress pictures/ -o vqfiles/
    """


def _compress_one(codec, source, name: str, quality, target_bpp, target_size, options: dict, quiet: bool,
                  say) -> tuple[int, bytes, list[str], object]:
    """-> (quality, file bytes, notes, header). With a target: the highest quality whose file fits, never a
    larger file (VQCodec.compress_to_fit)."""
    from . import read_info

    notes: list[str] = []
    if target_bpp is None and target_size is None:
        quality = codec.check_quality(DEFAULT_QUALITY if quality is None else quality)
        data = codec.compress(source, quality, notes=notes, **options)
        return quality, data, notes, read_info(data)
    quality, data = codec.compress_to_fit(source, max_bytes=target_size, max_bpp=target_bpp, notes=notes, **options)
    if not quiet:
        target = f"{target_size} bytes" if target_size is not None else f"{target_bpp:g} bpp"
        say(f"{name}: quality {quality}, the highest that fits in {target} ({len(data)} bytes)")
    return quality, data, notes, read_info(data)


def _batch_inputs(paths, extensions: set[str], what: str) -> list[tuple[Path, str | None]]:
    """Files and folders (their files with one of these extensions, sorted, not recursive) ->
    [(path, None) or (path, error)]."""
    out: list[tuple[Path, str | None]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.suffix.lower() in extensions and not q.name.startswith(".") and q.is_file())
            out += [(q, None) for q in found] or [(p, f"no {what} in this folder")]
        else:
            out.append((p, None))
    return out


class _Batch:
    """A progress bar on stderr (a terminal only, not with --quiet) and messages that do not break it."""

    def __init__(self, total: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True, leave=False,
                        disable=quiet or total < 2 or not sys.stderr.isatty())
        self.failures = self.skipped = 0
        self.written: dict[Path, Path] = {}   # output -> the input that made it

    def claim(self, out: Path, source: Path, force: bool) -> None:
        """Refuse an output that another input of the batch already wrote, or that may not be written."""
        if out in self.written:
            raise fail(f"{out} is already the output of {self.written[out]}")
        check_output(out, force)

    def say(self, message: str, err: bool = True) -> None:
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stderr):
            click.echo(message, err=err)

    def line(self, message: str, quiet: bool) -> None:
        """One line per file where no progress bar shows (standard error is not a terminal: a log)."""
        if not quiet and not sys.stderr.isatty():
            self.say(message)

    def failed(self, path, e: BaseException) -> None:
        self.failures += 1
        self.say(f"Error: {path}: {error_text(e)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


BATCH_ERRORS = (click.ClickException, OSError, ValueError, MemoryError)


def _batch_folder(paths, output_dir: Path) -> None:
    if STDIO in paths:
        raise fail("standard input (-) cannot be used with -o")
    if not paths:
        raise fail("no input given")
    if output_dir.exists() and not output_dir.is_dir():
        raise fail(f"{output_dir} is not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"cannot create folder {output_dir}: {e.strerror}") from None


def _one_file_output(paths, output_dir: Path | None, extensions) -> tuple:
    """`-o NAME` with one input file, where NAME ends in one of `extensions` and is not a folder: the cwebp
    habit (-o names the output file) -> (paths + (NAME,), None)."""
    if output_dir is None or len(paths) != 1 or output_dir.is_dir():
        return paths, output_dir
    if output_dir.suffix.lower() in ((extensions,) if isinstance(extensions, str) else extensions) \
            and not Path(paths[0]).is_dir():
        return (paths[0], str(output_dir)), None
    return paths, output_dir


def _max_pixels(value: int) -> int | None:
    if value < 0:
        raise fail(f"--max-pixels must be 0 (no limit) or more, not {value}")
    return value or None


def _two_paths(paths, what: str) -> tuple[str, str]:
    if len(paths) != 2:
        raise fail(f"give {what} and OUTPUT" if len(paths) < 2 else
                   f"{len(paths)} paths given: several inputs need -o FOLDER")
    src, dst = paths
    if dst == "/dev/stdout":
        dst = STDIO
    if src != STDIO and dst != STDIO and os.path.exists(dst) and os.path.samefile(src, dst):
        raise fail(f"{what} and OUTPUT are the same file: {src!r}")
    return src, dst


def _threads_option():
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                        help="CPU threads for one image's work. [default: the free CPUs (CPUs less the load "
                             "average), at most 4]")


def _set_threads(threads: int | None) -> None:
    import torch

    from .progress import default_threads

    torch.set_num_threads(threads or default_threads())


class _TileProgress:
    """A bar per step of one image's tiled work, on a terminal only, for images of more than 4 tiles."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bars: dict = {}

    def __call__(self, what: str, total: int) -> None:
        if not self.enabled or total <= 4:
            return
        if what not in self.bars:
            from tqdm import tqdm

            self.bars[what] = tqdm(total=total, desc=what, unit="tile", file=sys.stderr, leave=False,
                                   dynamic_ncols=True)
        self.bars[what].update()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _with_tile_progress(quiet: bool, work):
    from .progress import listening

    bars = _TileProgress(quiet)
    try:
        with listening(bars):
            return work()
    finally:
        bars.close()


def _max_pixels_option():
    from . import DEFAULT_MAX_PIXELS

    return click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True, metavar="N",
                        help="Refuse images of more pixels than this (0: no limit).")


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, metavar="INPUT OUTPUT | INPUT... -o FOLDER")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=None, metavar="FOLDER",
              help="Compress every INPUT (images, or folders: the images in them, not recursive) to "
                   "FOLDER/<name>.vq; FOLDER is created if missing.")
@click.option("-q", "--quality", type=int, default=None,
              help=f"1 = smallest file; higher = better image (the model's number of levels is the top). "
                   f"[default: {DEFAULT_QUALITY}]")
@click.option("--target-bpp", type=float, default=None, metavar="BPP",
              help="Instead of -q: the highest quality whose file takes at most BPP bits per pixel.")
@click.option("--target-size", type=int, default=None, metavar="BYTES",
              help="Instead of -q: the highest quality whose file takes at most BYTES bytes.")
@click.option("--metadata", type=click.Choice(list(METADATA_CHOICES)), default="all", show_default=True,
              help="Which of the image's ICC profile, EXIF and XMP the file keeps.")
@click.option("--alpha", type=click.Choice(list(ALPHA_CHOICES)), default="keep", show_default=True,
              help="Keep the alpha channel (transparency), or drop it.")
@click.option("--effort", type=click.IntRange(0, len(EFFORT_BEAMS) - 1), default=DEFAULT_EFFORT, show_default=True,
              help="Encoder effort: 0 = the nearest code at each residual stage (fastest); 1 = a beam search over "
                   f"the stages ({EFFORT_BEAMS[1]} paths: about 6 % fewer bits for the same PSNR). The same "
                   "decoder reads both.")
@click.option("--colour-layer/--no-colour-layer", default=True, show_default=True,
              help="At the qualities without a refinement, add a coarse correction of the decoded image's colour "
                   "where it pays for its bytes (the encoder decodes the image once to decide).")
@_max_pixels_option()
@click.option("--model", default=None, help="Shipped model name or model folder (default: the shipped default).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@_threads_option()
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--skip-existing", is_flag=True, help="In a batch (-o), skip inputs whose output already exists.")
@click.option("--quiet", is_flag=True, help="Print nothing on success (no progress bar either).")
@library_errors
def compress(paths, output_dir, quality, target_bpp, target_size, metadata, alpha, effort, colour_layer, max_pixels,
             model, device, threads, force, skip_existing, quiet):
    """Compress an image (PNG, JPEG, ...) into a .vq file, or several into a folder.

    \b
      vqcodec compress photo.png photo.vq -q 6
      vqcodec compress photo.png photo.vq --target-bpp 0.25    # the best quality that fits
      vqcodec compress photo.png photo.vq --target-size 20000  # ... in 20000 bytes
      cat photo.png | vqcodec compress - - > photo.vq          # "-": standard input / output
      vqcodec compress a.png b.jpg pictures/ -o out/           # out/a.vq, out/b.vq, ...

    With "-" as OUTPUT, every message goes to standard error. A batch goes on past a file that fails,
    and exits with 1 if any did.
    """
    from .codec import load_codec

    if target_bpp is not None and target_size is not None:
        raise fail("--target-bpp and --target-size cannot be used together")
    if quality is not None and (target_bpp is not None or target_size is not None):
        raise fail(f"-q/--quality cannot be used with {'--target-bpp' if target_bpp is not None else '--target-size'}")
    if target_bpp is not None and not target_bpp > 0:
        raise fail(f"--target-bpp must be above 0, not {target_bpp:g}")
    if target_size is not None and target_size < 1:
        raise fail(f"--target-size must be at least 1 byte, not {target_size}")
    options = {"metadata": metadata, "alpha": alpha, "max_pixels": _max_pixels(max_pixels), "effort": effort,
               "colour_layer": colour_layer}
    _set_threads(threads)
    paths, output_dir = _one_file_output(paths, output_dir, ".vq")

    if output_dir is None:
        src, dst = _two_paths(paths, "INPUT")
        if dst != STDIO:
            check_output(Path(dst), force)
        else:
            stdout_binary()
        source = read_input(src, kind="image", max_pixels=options["max_pixels"]) if src == STDIO else src
        codec = load_codec(model, device)
        if quality is not None:
            codec.check_quality(quality)
        quality, data, notes, header = _with_tile_progress(quiet, lambda: _compress_one(
            codec, source, label(src), quality, target_bpp, target_size, options, quiet,
            lambda m: click.echo(m, err=True)))
        if dst != STDIO and Path(dst).suffix.lower() != ".vq":
            notes.append(f"the output {dst!r} does not end in .vq")
        for note in notes:
            click.echo(f"Note: {note}", err=True)
        write_output(dst, data, force)
        if not quiet:
            bpp = 8 * len(data) / (header.width * header.height)
            click.echo(f"{label(src)} -> {label(dst, output=True)}: {header.width}x{header.height}, "
                       f"quality {quality}, {len(data)} bytes, {bpp:.4f} bpp", err=dst == STDIO)
        return

    _batch_folder(paths, output_dir)
    codec = load_codec(model, device)  # once, for every file
    if quality is not None:
        codec.check_quality(quality)
    inputs = _batch_inputs(paths, INPUT_IMAGE_EXTENSIONS, "images")
    total_bytes, bpps = 0, []
    with _Batch(len(inputs), quiet) as batch:
        for path, problem in inputs:
            try:
                if problem:
                    raise fail(problem)
                out = output_dir / f"{path.stem}.vq"
                if skip_existing and (out.exists() or out.is_symlink()):
                    batch.skipped += 1
                    batch.bar.update()
                    continue
                batch.claim(out, path, force)
                _, data, notes, header = _compress_one(codec, read_input(str(path), named=False, kind="image", max_pixels=options["max_pixels"]), str(path),
                                                       quality, target_bpp, target_size, options, quiet, batch.say)
                for note in notes:
                    batch.say(f"Note: {path}: {note}")
                write_atomically(out, lambda f: f.write(data), force)
                batch.written[out] = path
                total_bytes += len(data)
                bpps.append(8 * len(data) / (header.width * header.height))
                batch.line(f"{path} -> {out}: {len(data)} bytes, {bpps[-1]:.4f} bpp", quiet)
            except BATCH_ERRORS as e:
                batch.failed(path, e)
            batch.bar.update()
        if not quiet or batch.failures:
            mean = f"{sum(bpps) / len(bpps):.4f}" if bpps else "-"
            skipped = f", {batch.skipped} skipped (their output exists)" if batch.skipped else ""
            batch.say(f"{len(bpps)} of {len(inputs)} files compressed into {output_dir}: {total_bytes} bytes, "
                      f"mean {mean} bpp, {batch.failures} failed{skipped}", err=False)
    if batch.failures:
        raise SystemExit(1)


def _output_format(target: str, fmt: str | None) -> str:
    """The Pillow format of an OUTPUT: --format, else its extension; PNG for standard output."""
    if target == STDIO:
        return OUTPUT_FORMATS[(fmt or "png").lower()][0]
    from_extension = IMAGE_FORMATS.get(Path(target).suffix.lower())
    if fmt is not None:
        chosen = OUTPUT_FORMATS[fmt.lower()][0]
        if from_extension is not None and from_extension != chosen:
            raise fail(f"--format {fmt} does not match the extension of {target}")
        return chosen
    if from_extension is None:
        raise fail(f"unknown image extension {Path(target).suffix!r} "
                   f"(use one of {', '.join(sorted(IMAGE_FORMATS))}, or --format)")
    return from_extension


def image_bytes(image, fmt: str, say) -> bytes:
    """A decoded image in a Pillow format, with its ICC profile, EXIF and XMP where the format holds them;
    `say` gets a note for each thing the format could not keep."""
    from .images import save_image

    buffer, notes = io.BytesIO(), []
    save_image(image, buffer, fmt, notes)
    for note in notes:
        say(f"Note: {note}")
    return buffer.getvalue()


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, metavar="INPUT_VQ OUTPUT | INPUT_VQ... -o FOLDER")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=None, metavar="FOLDER",
              help="Decode every INPUT_VQ (.vq files, or folders: the .vq files in them) to FOLDER/<name>.png "
                   "(or the --format's extension); FOLDER is created if missing.")
@click.option("--format", "fmt", type=click.Choice(sorted(OUTPUT_FORMATS), case_sensitive=False), default=None,
              help="Image format for standard output and for -o (default png), or for an OUTPUT whose extension "
                   "names none.")
@click.option("-q", "--quality", type=int, default=None,
              help="Decode a lower quality than the file's, from the same file (default: the file's own).")
@_max_pixels_option()
@click.option("--max-work", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
              help="Refuse, before decoding, files that ask for more than N index positions per coded byte "
                   "(decode time per byte of input; photos take 1 to 3, a flat image up to about 175). "
                   "[default: no limit]")
@click.option("--decoder", type=click.Choice(["fidelity", "realistic"]), default="fidelity", show_default=True,
              help="realistic: the model's second decoder, trained adversarially to draw plausible texture at low "
                   "qualities (less like the photo pixel by pixel; above the qualities it serves, and on images "
                   "that --detail sample filled past them, the fidelity image; `vqcodec info` lists a model's "
                   "decoders).")
@click.option("--detail", type=click.Choice(["coded", "sample"]), default="coded", show_default=True,
              help="sample: draw the residual stages the file does not code from the model's prior, given those it "
                   "codes (more texture, not the photo's own; see --seed).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="With --detail sample: the draw (the same seed gives the same image).")
@click.option("--detail-stages", type=int, default=None, metavar="S",
              help="With --detail sample: fill the file up to S stages (default 10).")
@click.option("--model", default=None, help="Model name or folder (default: the shipped model the file names).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@_threads_option()
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--skip-existing", is_flag=True, help="In a batch (-o), skip inputs whose output already exists.")
@click.option("--quiet", is_flag=True, help="Print nothing on success (no progress bar either).")
@library_errors
def decompress(paths, output_dir, fmt, quality, max_pixels, max_work, decoder, detail, seed, detail_stages, model,
               device, threads, force, skip_existing, quiet):
    """Decode a .vq file into an image (format from OUTPUT's extension, e.g. .png), or several into a folder.

    \b
      vqcodec decompress photo.vq restored.png
      vqcodec decompress photo.vq preview.png -q 4            # a lower quality, from the same file
      vqcodec decompress photo.vq - | display                 # PNG on standard output
      vqcodec decompress photo.vq - --format jpeg > photo.jpg
      vqcodec decompress a.vq b.vq vqfiles/ -o out/ --format webp
      vqcodec decompress photo.vq textured.png --detail sample --seed 7
      vqcodec decompress photo.vq realistic.png --decoder realistic

    With "-" as OUTPUT, every message goes to standard error. A batch goes on past a file that fails,
    and exits with 1 if any did.
    """
    import vqcodec

    limit = _max_pixels(max_pixels)
    _set_threads(threads)
    paths, output_dir = _one_file_output(paths, output_dir, tuple(IMAGE_FORMATS))

    def decode(data: bytes):
        return vqcodec.decompress(data, model=model, device=device, quality=quality, max_pixels=limit,
                                  max_work=max_work, detail=detail, seed=seed, detail_stages=detail_stages,
                                  decoder=decoder)

    if detail == "coded" and detail_stages is not None:
        raise fail("--detail-stages goes with --detail sample")

    if output_dir is None:
        src, dst = _two_paths(paths, "INPUT_VQ")
        if dst != STDIO:
            check_output(Path(dst), force)
        else:
            stdout_binary()
        out_format = _output_format(dst, fmt)
        data = read_input(src, kind="vq")
        image = _with_tile_progress(quiet, lambda: decode(data))
        write_output(dst, image_bytes(image, out_format, lambda m: click.echo(m, err=True)), force)
        if not quiet:
            click.echo(f"{label(src)} -> {label(dst, output=True)}: {image.width}x{image.height} {image.mode}",
                       err=dst == STDIO)
        return

    out_format, extension = OUTPUT_FORMATS[(fmt or "png").lower()]
    _batch_folder(paths, output_dir)
    inputs = _batch_inputs(paths, {".vq"}, ".vq files")
    total_pixels = 0
    with _Batch(len(inputs), quiet) as batch:
        for path, problem in inputs:
            try:
                if problem:
                    raise fail(problem)
                out = output_dir / f"{path.stem}{extension}"
                if skip_existing and (out.exists() or out.is_symlink()):
                    batch.skipped += 1
                    batch.bar.update()
                    continue
                batch.claim(out, path, force)
                image = decode(read_input(str(path), named=False, kind="vq"))
                encoded = image_bytes(image, out_format, lambda m, p=path: batch.say(m.replace("Note: ", f"Note: {p}: ", 1)))
                write_atomically(out, lambda f: f.write(encoded), force)
                batch.written[out] = path
                total_pixels += image.width * image.height
                batch.line(f"{path} -> {out}: {image.width}x{image.height} {image.mode}", quiet)
            except BATCH_ERRORS as e:
                batch.failed(path, e)
            batch.bar.update()
        if not quiet or batch.failures:
            skipped = f", {batch.skipped} skipped (their output exists)" if batch.skipped else ""
            batch.say(f"{len(batch.written)} of {len(inputs)} files decompressed into {output_dir}: "
                      f"{total_pixels} pixels, {batch.failures} failed{skipped}", err=False)
    if batch.failures:
        raise SystemExit(1)


def _size(value: str) -> tuple[int, int]:
    """WxH -> (W, H)."""
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise fail(f"--size must be WIDTHxHEIGHT, such as 512x512, not {value!r}") from None
    if not (1 <= w <= 65535 and 1 <= h <= 65535):
        raise fail(f"--size must be 1 to 65535 pixels a side, not {value!r}")
    return w, h


@cli.command(context_settings=CONTEXT)
@click.argument("output", metavar="OUTPUT")
@click.option("--size", default="512x512", show_default=True, metavar="WxH", help="The image's size in pixels.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="The draw: the same seed gives the same indices on any machine.")
@click.option("--stages", type=int, default=None, metavar="S", help="Residual stages to draw (default: all).")
@click.option("--like", "like", default=None, metavar="PHOTO_VQ",
              help="Keep this .vq file's first --keep stages and draw the rest: variations of the photo "
                   "(its size replaces --size).")
@click.option("--keep", type=int, default=1, show_default=True, help="With --like: the file's stages kept.")
@click.option("--format", "fmt", type=click.Choice(sorted(OUTPUT_FORMATS), case_sensitive=False), default=None,
              help="Image format for standard output (default png), or for an OUTPUT whose extension names none.")
@_max_pixels_option()
@click.option("--model", default=None, help="Model name or folder (default: the shipped model, or --like's).")
@_threads_option()
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--quiet", is_flag=True, help="Print nothing on success (no progress bar either).")
@library_errors
def sample(output, size, seed, stages, like, keep, fmt, max_pixels, model, threads, force, quiet):
    """Draw an image from the model's prior: each residual stage in the decoder's order, then decode it. What
    the prior has learned, as VQ-VAE papers show it; time and memory are those of decoding an image this size.

    \b
      vqcodec sample dream.png --size 512x512 --seed 3
      vqcodec sample coarse.png --stages 2 --seed 3         # only the first two stages drawn
      vqcodec sample variation.png --like photo.vq --keep 2 --seed 1
    """
    import vqcodec

    limit = _max_pixels(max_pixels)
    _set_threads(threads)
    width, height = _size(size)
    if like is None and keep != 1:
        raise fail("--keep goes with --like")
    if output != STDIO:
        check_output(Path(output), force)
    else:
        stdout_binary()
    out_format = _output_format(output, fmt)
    data = None if like is None else read_input(like, kind="vq")
    image = _with_tile_progress(quiet, lambda: vqcodec.sample(width, height, seed, stages, data, keep, model,
                                                              max_pixels=limit))
    write_output(output, image_bytes(image, out_format, lambda m: click.echo(m, err=True)), force)
    if not quiet:
        click.echo(f"seed {seed} -> {label(output, output=True)}: {image.width}x{image.height}", err=output == STDIO)


@cli.command(context_settings=CONTEXT)
@click.argument("input", metavar="INPUT_VQ")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@library_errors
def info(input, as_json):
    """Show what a .vq file holds: model, size, quality, bytes, bits per pixel, stages (how many are whole
    in the file: a cut-off file decodes at a lower quality), alpha, metadata (bytes of ICC, EXIF, XMP), and the
    decoders (--decoder) the installed model offers for it."""
    from . import read_decoders, read_info
    from .container import FORMAT_VERSION, decoded_mode, sections
    from .images import unpack_metadata

    data = read_input(input, kind="vq")
    h = read_info(data)
    try:
        metadata = {k: len(v) for k, v in unpack_metadata(sections(data, h, 0).metadata).items()}
    except ValueError:
        metadata = {"corrupt": h.metadata_len}
    fields = {"file": input, "format_version": FORMAT_VERSION, "model": h.model_name, "model_hash": h.model_hash.hex(),
              "width": h.width, "height": h.height, "mode": decoded_mode(h), "quality": h.quality,
              "bytes": len(data), "bpp": round(8 * len(data) / (h.width * h.height), 6),
              "stages": h.stages, "complete_stages": h.complete_stages, "refinement_level": h.refine_level,
              "refinement_complete": h.refine_complete if h.refine_level else None,
              "colour_layer": f"{1 << h.colour_block} px blocks, step {h.colour_step}" if h.colour_block else None,
              "colour_layer_complete": h.colour_complete if h.colour_block else None, "tiles": h.num_tiles,
              "source_depth": h.depth, "alpha": h.alpha_len > 0, "metadata": metadata,
              "decoders": list(read_decoders(h.model_name))}
    if as_json:
        click.echo(json.dumps(fields))
    else:
        fields["metadata"] = ", ".join(f"{k} ({n} bytes)" for k, n in metadata.items()) or "none"
        fields["decoders"] = ", ".join(fields["decoders"]) or f"none (model {h.model_name} is not installed)"
        for k, v in fields.items():
            click.echo(f"{k:>15}: {v}")


@cli.command(context_settings=CONTEXT)
@click.option("--recipe", "recipe_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The recipe: a JSON file with the model and its phases (e.g. models/vqf8-v13/recipe.json).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The run folder: checkpoints (over 15 MiB: split into files NAME.part1ofN ...), the learning "
                   "curve, phases.json and the exported model OUT/NAME. A rerun resumes where it stopped.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Training images (a folder of photos, or of crop packs from `vqcodec pack`) instead of the "
                   "recipe's \"data\".")
@click.option("--phase", default=None, help="Run only this phase of the recipe.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--time-limit", type=float, default=None, metavar="SECONDS",
              help="Stop before SECONDS with a checkpoint and exit 0; the same command resumes.")
@click.option("--copy-checkpoints-to", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Also write the autoencoder's checkpoints into DIR (e.g. $OUT on a device machine).")
@click.option("--slim-checkpoints", is_flag=True,
              help="Leave Adam's state out of the autoencoder's checkpoints (a third of the size, to carry them "
                   "between machines); a resume from one starts Adam afresh.")
@library_errors
def train(recipe_file, out, data, phase, device, time_limit, copy_checkpoints_to, slim_checkpoints):
    """Train a model by its recipe: every phase in order (autoencoder, ecvq, coarse, decoder, prior, export),
    each checkpointed, resumed after an interrupt and skipped once done. The photos named in vqcodec/holdout.txt
    are held out of every phase; the learning curve (OUT/<phase>/curve.jsonl) is measured on them.

    \b
      vqcodec train --recipe models/vqf8-v13/recipe.json --out runs/v13
      vqcodec train --recipe my.json --out runs/my --phase prior
      torchrun --nproc_per_node 2 -m vqcodec.cli train --recipe my.json --out runs/my   # DistributedDataParallel
    """
    from .recipe import Recipe, run_recipe
    from .training_cli import pick_device

    run_recipe(Recipe.load(recipe_file), out, data=data, device=pick_device(device), phase=phase, log=click.echo,
               time_limit=time_limit, copy_to=copy_checkpoints_to, slim=slim_checkpoints)


@cli.command(context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("pack_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size-mb", type=float, default=20, show_default=True, help="The pack's size in MiB.")
@click.option("--crop", type=int, default=256, show_default=True, help="Side of each crop in pixels.")
@click.option("--shard", type=int, default=0, show_default=True,
              help="The pack's number: each has other crops, the images in another order.")
@library_errors
def pack(data_dir, pack_dir, size_mb, crop, shard):
    """Write random crops of DATA_DIR's images into PACK_DIR as JPEG files (quality 95, 4:4:4), SIZE_MB in all:
    training data small enough to carry to another machine. Train on it with `vqcodec train --data PACK_DIR`
    (or a folder of packs)."""
    from .train import make_pack

    make_pack(data_dir, pack_dir, size_mb, shard=shard, crop=crop, log=click.echo)


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
