"""CLI workflows: pipes, target sizes, batches, file permissions, output checks, options passed through.

All with a tiny random model (--model points at its exported folder), through click's CliRunner.
"""
from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

import vqcodec


def problems(stderr: str) -> str:
    """A batch's stderr less its one line per file written (printed where stderr is not a terminal)."""
    return "".join(line for line in stderr.splitlines(keepends=True) if " -> " not in line)


@pytest.fixture
def png(tmp_path, photo_like):
    path = tmp_path / "in.png"
    photo_like.save(path)
    return path


@pytest.fixture
def vq(tmp_path, png, tiny_model_dir, run):
    path = tmp_path / "in.vq"
    assert run("compress", png, path, "-q", 2, "--model", tiny_model_dir).exit_code == 0
    return path


@pytest.fixture
def umask():
    """Set a umask for one test (restored afterwards)."""
    before = os.umask(0o022)
    yield os.umask
    os.umask(before)


def mode_bits(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sizes_by_quality(png, model) -> dict[int, int]:
    from vqcodec.codec import load_codec
    codec = load_codec(model)
    return {q: len(codec.compress(str(png), q)) for q in codec.qualities}


# --- issue 9: permissions, directory outputs, missing folders ---------------------------------------
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_ordinary_permissions(run, png, tmp_path, tiny_model_dir, umask, mask, expected):
    umask(mask)
    vq, out = tmp_path / "a.vq", tmp_path / "a.png"
    assert run("compress", png, vq, "-q", 1, "--model", tiny_model_dir).exit_code == 0
    assert run("decompress", vq, out, "--model", tiny_model_dir).exit_code == 0
    assert mode_bits(vq) == expected and mode_bits(out) == expected
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_overwriting_keeps_the_files_permissions(run, png, tmp_path, tiny_model_dir, umask):
    vq = tmp_path / "a.vq"
    assert run("compress", png, vq, "-q", 1, "--model", tiny_model_dir).exit_code == 0
    vq.chmod(0o640)
    assert run("compress", png, vq, "-q", 2, "--model", tiny_model_dir, "--force").exit_code == 0
    assert mode_bits(vq) == 0o640


def test_output_that_is_a_directory(run, png, vq, tmp_path, tiny_model_dir):
    folder = tmp_path / "folder"
    folder.mkdir()
    for args in (("compress", png, folder, "--model", tiny_model_dir),
                 ("compress", png, folder, "--model", tiny_model_dir, "--force"),
                 ("decompress", vq, folder, "--model", tiny_model_dir),
                 ("decompress", vq, folder, "--model", tiny_model_dir, "--format", "png")):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert result.output == f"Error: {folder} is a directory\n"
    assert list(folder.iterdir()) == []


def test_missing_output_folder_is_reported_before_any_work(run, png, vq, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")
    monkeypatch.setattr("vqcodec.codec.load_codec", no_model)
    monkeypatch.setattr(vqcodec, "decompress", no_model)
    missing = tmp_path / "missing"
    for args in (("compress", png, missing / "a.vq"), ("decompress", vq, missing / "a.png")):
        result = run(*args)
        assert result.exit_code == 1
        assert result.output == f"Error: folder {missing} does not exist\n"
    result = run("compress", png, png / "a.vq")
    assert result.exit_code == 1 and result.output == f"Error: {png} is not a folder\n"
    assert not missing.exists()


def test_existing_output_is_reported_before_any_work(run, png, vq, monkeypatch):
    monkeypatch.setattr("vqcodec.codec.load_codec", lambda *a, **k: pytest.fail("model loaded"))
    result = run("compress", png, vq)
    assert result.exit_code == 1 and result.output == f"Error: {vq} already exists (use --force to overwrite)\n"


def test_wrong_number_of_paths(run, png, tmp_path):
    for args, message in ((("compress", png), "give INPUT and OUTPUT"),
                          (("compress", png, png, tmp_path / "x.vq"), "3 paths given: several inputs need -o FOLDER"),
                          (("decompress",), "give INPUT_VQ and OUTPUT")):
        result = run(*args)
        assert result.exit_code == 1 and result.output == f"Error: {message}\n"


# --- pipes ----------------------------------------------------------------------------------------
def test_compress_through_pipes(run, png, tmp_path, tiny_model_dir):
    file_out = tmp_path / "file.vq"
    assert run("compress", png, file_out, "-q", 2, "--model", tiny_model_dir).exit_code == 0
    result = run("compress", "-", "-", "-q", 2, "--model", tiny_model_dir, input=png.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == file_out.read_bytes()  # binary-clean: the file and nothing else
    assert result.stderr.startswith("<stdin> -> <stdout>: 37x29, quality 2, ")
    # stdin to a file, a file to stdout
    result = run("compress", "-", tmp_path / "b.vq", "-q", 2, "--model", tiny_model_dir, input=png.read_bytes())
    assert result.exit_code == 0 and (tmp_path / "b.vq").read_bytes() == file_out.read_bytes()
    assert result.stdout.startswith("<stdin> -> ")
    result = run("compress", png, "-", "-q", 2, "--model", tiny_model_dir, "--quiet")
    assert result.exit_code == 0 and result.stdout_bytes == file_out.read_bytes() and result.stderr == ""


def test_notes_go_to_stderr_when_stdout_carries_the_file(run, tmp_path, photo_like, tiny_model_dir):
    buffer = io.BytesIO()
    photo_like.convert("P").save(buffer, format="PNG")
    result = run("compress", "-", "-", "-q", 1, "--model", tiny_model_dir, input=buffer.getvalue())
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"VQIM")
    assert "Note: " in result.stderr and b"Note" not in result.stdout_bytes


def test_decompress_through_pipes(run, vq, tmp_path, tiny_model_dir):
    file_out = tmp_path / "file.png"
    assert run("decompress", vq, file_out, "--model", tiny_model_dir).exit_code == 0
    expected = np.asarray(Image.open(file_out))
    result = run("decompress", vq, "-", "--model", tiny_model_dir)
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n")  # PNG by default
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.stdout_bytes))), expected)
    assert result.stderr == f"{vq} -> <stdout>: 37x29 RGB\n"
    result = run("decompress", "-", "-", "--format", "jpeg", "--model", tiny_model_dir, input=vq.read_bytes())
    assert result.exit_code == 0 and result.stdout_bytes.startswith(b"\xff\xd8\xff")
    assert Image.open(io.BytesIO(result.stdout_bytes)).size == (37, 29)
    result = run("decompress", "-", tmp_path / "b.png", "--model", tiny_model_dir, input=vq.read_bytes())
    assert result.exit_code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), expected)


def test_pipe_errors_are_one_line(run, png, tiny_model_dir):
    result = run("compress", "-", "-", "-q", 1, "--model", tiny_model_dir, input=b"not an image")
    assert result.exit_code == 1 and result.stdout_bytes == b""
    assert result.stderr == "Error: cannot read the input as an image (UnidentifiedImageError)\n"
    result = run("decompress", "-", "-", "--model", tiny_model_dir, input=png.read_bytes())
    assert result.exit_code == 1 and result.stdout_bytes == b""
    assert result.stderr == "Error: not a .vq file (bad magic bytes)\n"


def test_binary_output_to_a_terminal_is_refused(run, png, tiny_model_dir, monkeypatch):
    import click
    real = click.get_binary_stream

    def tty_stdout(name):
        stream = real(name)
        if name == "stdout":
            stream.isatty = lambda: True
        return stream
    monkeypatch.setattr(click, "get_binary_stream", tty_stdout)
    result = run("compress", png, "-", "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert result.output == ("Error: refusing to write binary data to a terminal "
                             "(redirect standard output, or name an output file)\n")


def test_decompress_format_and_extension(run, vq, tmp_path, tiny_model_dir):
    result = run("decompress", vq, tmp_path / "a.png", "--format", "jpeg", "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert result.output == f"Error: --format jpeg does not match the extension of {tmp_path / 'a.png'}\n"
    result = run("decompress", vq, tmp_path / "a.img", "--format", "bmp", "--model", tiny_model_dir)
    assert result.exit_code == 0 and Image.open(tmp_path / "a.img").format == "BMP"


# --- target size ----------------------------------------------------------------------------------
def test_target_size_picks_the_highest_quality_that_fits(run, png, tmp_path, tiny_model_dir):
    sizes = sizes_by_quality(png, tiny_model_dir)
    assert [sizes[q] for q in sorted(sizes)] == sorted(sizes.values()), sizes  # monotone for this model
    for q in sizes:
        for target in (sizes[q], sizes[q] + 1):
            out = tmp_path / f"t{q}-{target}.vq"
            result = run("compress", png, out, "--target-size", target, "--model", tiny_model_dir)
            assert result.exit_code == 0, result.output
            best = max(k for k, v in sizes.items() if v <= target)
            assert out.stat().st_size == sizes[best] <= target
            assert vqcodec.read_info(out.read_bytes()).quality == best
            assert (f"{png}: quality {best}, the highest that fits in {target} bytes ({sizes[best]} bytes)\n"
                    in result.stderr)
            assert result.stdout.startswith(f"{png} -> {out}: 37x29, quality {best}, ")


def test_target_bpp(run, png, tmp_path, tiny_model_dir):
    sizes = sizes_by_quality(png, tiny_model_dir)
    bpp = 8 * sizes[2] / (37 * 29)
    out = tmp_path / "b.vq"
    result = run("compress", png, out, "--target-bpp", bpp + 1e-6, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert vqcodec.read_info(out.read_bytes()).quality == 2 and 8 * out.stat().st_size / (37 * 29) <= bpp + 1e-6


def test_target_that_nothing_fits(run, png, tmp_path, tiny_model_dir):
    smallest = sizes_by_quality(png, tiny_model_dir)[1]
    out = tmp_path / "x.vq"
    result = run("compress", png, out, "--target-size", smallest - 1, "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert result.output == (f"Error: no quality fits in {smallest - 1} bytes: the smallest file (quality 1) "
                             f"is {smallest} bytes\n")
    result = run("compress", png, out, "--target-bpp", 0.001, "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert result.output == (f"Error: no quality fits in 0.001 bpp (0 bytes for 37x29): the smallest file "
                             f"(quality 1) is {smallest} bytes\n")
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (("-q", 3, "--target-size", 100), "-q/--quality cannot be used with --target-size"),
    (("-q", 3, "--target-bpp", 0.5), "-q/--quality cannot be used with --target-bpp"),
    (("--target-size", 100, "--target-bpp", 0.5), "--target-bpp and --target-size cannot be used together"),
    (("--target-size", 0), "--target-size must be at least 1 byte, not 0"),
    (("--target-bpp", -1), "--target-bpp must be above 0, not -1"),
])
def test_target_option_errors(run, png, tmp_path, tiny_model_dir, args, message):
    result = run("compress", png, tmp_path / "x.vq", "--model", tiny_model_dir, *args)
    assert result.exit_code == 1 and result.output == f"Error: {message}\n"
    assert not (tmp_path / "x.vq").exists()


def test_target_through_a_pipe(run, png, tiny_model_dir):
    sizes = sizes_by_quality(png, tiny_model_dir)
    result = run("compress", "-", "-", "--target-size", sizes[2], "--model", tiny_model_dir, input=png.read_bytes())
    assert result.exit_code == 0 and len(result.stdout_bytes) == sizes[2]
    assert result.stderr.startswith(f"<stdin>: quality 2, the highest that fits in {sizes[2]} bytes")


# --- batches --------------------------------------------------------------------------------------
@pytest.fixture
def batch_inputs(tmp_path, photo_like):
    photo_like.save(tmp_path / "a.png")
    photo_like.convert("L").save(tmp_path / "b.jpg")
    folder = tmp_path / "more"
    folder.mkdir()
    photo_like.transpose(Image.Transpose.ROTATE_90).save(folder / "c.tif")
    (folder / "bad.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not an image, not picked up")
    return [tmp_path / "a.png", tmp_path / "b.jpg", folder]


def test_batch_compress_and_decompress(run, batch_inputs, tmp_path, tiny_model_dir, monkeypatch):
    from vqcodec import codec as codec_module
    loads = []
    real_load = codec_module.VQCodec.load
    monkeypatch.setattr(codec_module.VQCodec, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    codec_module._CACHE.clear()
    out = tmp_path / "out" / "vq"
    result = run("compress", *batch_inputs, "-o", out, "-q", 2, "--model", tiny_model_dir)
    assert result.exit_code == 1  # bad.png failed
    bad = tmp_path / "more" / "bad.png"
    assert problems(result.stderr) == f"Error: {bad}: cannot read the input as an image (UnidentifiedImageError)\n"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.vq", "b.vq", "c.vq"]
    sizes = [(out / n).stat().st_size for n in names]
    bpps = [8 * s / (37 * 29) for s in sizes]
    assert result.stdout == (f"3 of 4 files compressed into {out}: {sum(sizes)} bytes, "
                             f"mean {sum(bpps) / 3:.4f} bpp, 1 failed\n")
    assert len(loads) == 1  # the model was loaded once
    infos = {n: vqcodec.read_info((out / n).read_bytes()) for n in names}
    assert infos["b.vq"].mode == "L" and (infos["c.vq"].width, infos["c.vq"].height) == (29, 37)
    assert all(i.quality == 2 for i in infos.values())
    assert (out / "a.vq").read_bytes() == run("compress", tmp_path / "a.png", "-", "-q", 2, "--model",
                                              tiny_model_dir).stdout_bytes

    # again: nothing is overwritten without --force
    before = {n: (out / n).read_bytes() for n in names}
    result = run("compress", tmp_path / "a.png", tmp_path / "b.jpg", "-o", out, "-q", 1, "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert problems(result.stderr) == "".join(f"Error: {tmp_path / s}: {out / d} already exists (use --force to overwrite)\n"
                                    for s, d in (("a.png", "a.vq"), ("b.jpg", "b.vq")))
    assert result.stdout == f"0 of 2 files compressed into {out}: 0 bytes, mean - bpp, 2 failed\n"
    assert {n: (out / n).read_bytes() for n in names} == before
    result = run("compress", tmp_path / "a.png", "-o", out, "-q", 1, "--model", tiny_model_dir, "--force", "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert vqcodec.read_info((out / "a.vq").read_bytes()).quality == 1

    # decompress a folder of .vq files and a file, as JPEG
    images = tmp_path / "images"
    result = run("decompress", out, "-o", images, "--format", "jpeg", "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in images.iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert Image.open(images / "c.jpg").size == (29, 37) and Image.open(images / "b.jpg").mode == "L"
    assert result.stdout == f"3 of 3 files decompressed into {images}: {3 * 37 * 29} pixels, 0 failed\n"
    result = run("decompress", out / "a.vq", tmp_path / "b.jpg", out / "c.vq", "-o", tmp_path / "png",
                 "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert problems(result.stderr) == f"Error: {tmp_path / 'b.jpg'}: not a .vq file (bad magic bytes)\n"
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["a.png", "c.png"]
    assert result.stdout == f"2 of 3 files decompressed into {tmp_path / 'png'}: {2 * 37 * 29} pixels, 1 failed\n"


def test_batch_name_clashes_and_empty_folders(run, tmp_path, photo_like, tiny_model_dir):
    photo_like.save(tmp_path / "x.png")
    photo_like.save(tmp_path / "x.bmp")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    result = run("compress", tmp_path / "x.png", tmp_path / "x.bmp", empty, "-o", out, "-q", 1,
                 "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert problems(result.stderr) == (f"Error: {tmp_path / 'x.bmp'}: {out / 'x.vq'} is already the output of "
                             f"{tmp_path / 'x.png'}\nError: {empty}: no images in this folder\n")
    assert [p.name for p in out.iterdir()] == ["x.vq"]


def test_batch_errors_before_any_work(run, png, tmp_path, tiny_model_dir):
    result = run("compress", png, "-", "-o", tmp_path / "o", "--model", tiny_model_dir)
    assert result.exit_code == 1 and result.output == "Error: standard input (-) cannot be used with -o\n"
    result = run("compress", "-o", tmp_path / "o", "--model", tiny_model_dir)
    assert result.exit_code == 1 and result.output == "Error: no input given\n"
    result = run("compress", png, "-o", png, "--model", tiny_model_dir)
    assert result.exit_code == 1 and result.output == f"Error: {png} is not a folder\n"
    result = run("compress", png, "-o", tmp_path / "o", "-q", 9, "--model", tiny_model_dir)
    assert result.exit_code == 1 and result.output == "Error: quality must be an integer from 1 to 3, not 9\n"


def test_batch_with_a_target(run, batch_inputs, tmp_path, tiny_model_dir):
    sizes = sizes_by_quality(batch_inputs[0], tiny_model_dir)
    out = tmp_path / "t"
    result = run("compress", batch_inputs[0], "-o", out, "--target-size", sizes[2], "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert vqcodec.read_info((out / "a.vq").read_bytes()).quality == 2
    assert f"{batch_inputs[0]}: quality 2, the highest that fits" in result.stderr


# --- options passed through to the library -----------------------------------------------------------
def test_metadata_and_alpha_options(run, tmp_path, photo_like, tiny_model_dir):
    from PIL import PngImagePlugin
    rgba = photo_like.convert("RGBA")
    alpha = np.full((29, 37), 255, np.uint8)
    alpha[:, :10] = 0
    rgba.putalpha(Image.fromarray(alpha))
    info = PngImagePlugin.PngInfo()
    exif = Image.Exif()
    exif[0x010E] = "a description"
    src = tmp_path / "rgba.png"
    rgba.save(src, pnginfo=info, exif=exif.tobytes())
    runs = {}
    for name, args in (("keep", ()), ("drop", ("--alpha", "drop", "--metadata", "none"))):
        out = tmp_path / f"{name}.vq"
        result = run("compress", src, out, "-q", 2, "--model", tiny_model_dir, *args)
        assert result.exit_code == 0, result.output
        runs[name] = result
        back = tmp_path / f"{name}.png"
        assert run("decompress", out, back, "--model", tiny_model_dir).exit_code == 0
        decoded = Image.open(back)
        assert decoded.mode == ("RGBA" if name == "keep" else "RGB")
        assert (decoded.getexif().get(0x010E) == "a description") == (name == "keep")
    assert (tmp_path / "drop.vq").stat().st_size < (tmp_path / "keep.vq").stat().st_size
    assert "Note: " in runs["drop"].stderr  # the library says that the alpha channel was dropped


def test_decompress_lower_quality_and_max_pixels(run, png, tmp_path, tiny_model_dir):
    top = tmp_path / "top.vq"
    assert run("compress", png, top, "-q", 3, "--model", tiny_model_dir).exit_code == 0
    low = tmp_path / "low.vq"
    assert run("compress", png, low, "-q", 1, "--model", tiny_model_dir).exit_code == 0
    from vqcodec.codec import load_codec
    codec = load_codec(tiny_model_dir)
    lowest_progressive = min(q for q in codec.qualities if codec.cfg.quality_plan(q)[1] is None)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    result = run("decompress", top, a, "-q", lowest_progressive, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    expected = codec.decompress(top.read_bytes(), quality=lowest_progressive)
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(expected))
    assert run("decompress", top, b, "--model", tiny_model_dir).exit_code == 0
    assert run("decompress", low, tmp_path / "c.png", "-q", 3, "--model", tiny_model_dir).output.startswith(
        "Error: quality 3 is above this file's quality 1")
    result = run("decompress", top, tmp_path / "d.png", "--max-pixels", 1000, "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert result.output == ("Error: the image in this .vq file is 37x29 = 1073 pixels, over the limit of 1000 "
                             "(raise it with --max-pixels / max_pixels=)\n")
    assert run("decompress", top, tmp_path / "d.png", "--max-pixels", 1073, "--model", tiny_model_dir).exit_code == 0
    assert run("decompress", top, tmp_path / "e.png", "--max-pixels", 0, "--model", tiny_model_dir).exit_code == 0
    result = run("compress", png, tmp_path / "f.vq", "-q", 1, "--max-pixels", 1000, "--model", tiny_model_dir)
    assert result.exit_code == 1 and "over the limit of 1000" in result.output


def test_help_documents_every_option(run):
    for command, options in (("compress", ["--target-bpp", "--target-size", "--output-dir", "--metadata",
                                           "--alpha", "--max-pixels", "--force", "--quiet"]),
                             ("decompress", ["--format", "--quality", "--max-pixels", "--output-dir", "--force"])):
        text = run(command, "--help").output
        for option in options:
            assert option in text, (command, option)
        assert '"-"' in text and "-o out/" in text


def test_info_shows_stages_alpha_and_metadata(run, tmp_path, photo_like, tiny_model_dir):
    import json
    rgba = photo_like.convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x010E] = "a description"
    src = tmp_path / "a.png"
    rgba.save(src, exif=exif.tobytes())
    vq = tmp_path / "a.vq"
    assert run("compress", src, vq, "-q", 3, "--model", tiny_model_dir).exit_code == 0
    fields = json.loads(run("info", vq, "--json").output)
    assert fields["format_version"] == 3 and fields["mode"] == "RGBA" and fields["alpha"] is True
    assert fields["stages"] == fields["complete_stages"] == 3 and fields["tiles"] == 1
    assert set(fields["metadata"]) == {"exif"} and fields["metadata"]["exif"] > 0
    text = run("info", vq).output
    assert "          alpha: True\n" in text and f"       metadata: exif ({fields['metadata']['exif']} bytes)\n" in text


def test_a_cut_off_file_decodes_at_a_lower_quality(run, png, tmp_path, tiny_model_dir):
    import json
    vq = tmp_path / "a.vq"
    assert run("compress", png, vq, "-q", 3, "--model", tiny_model_dir).exit_code == 0
    header = vqcodec.read_info(vq.read_bytes())
    cut = vq.read_bytes()[:len(vq.read_bytes()) - 4 * sum(header.stream_words[-1])]  # the last stage gone
    fields = json.loads(run("info", "-", "--json", input=cut).output)
    assert (fields["stages"], fields["complete_stages"]) == (header.stages, header.stages - 1)
    result = run("decompress", "-", "-", "--model", tiny_model_dir, input=cut)
    assert result.exit_code == 1 and result.stderr.startswith("Error: truncated .vq file")
    result = run("decompress", "-", "-", "-q", 2, "--model", tiny_model_dir, input=cut)
    assert result.exit_code == 0, result.stderr
    full = run("decompress", vq, "-", "-q", 2, "--model", tiny_model_dir)
    assert result.stdout_bytes == full.stdout_bytes


def test_a_closed_pipe_is_one_line(run, png, tiny_model_dir, monkeypatch):
    import click
    real = click.get_binary_stream

    class Closed(io.BytesIO):
        def write(self, data):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(click, "get_binary_stream", lambda name: Closed() if name == "stdout" else real(name))
    result = run("compress", png, "-", "-q", 1, "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert result.stderr == "Error: standard output was closed before all was written\n"
