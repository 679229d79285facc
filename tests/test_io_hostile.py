"""Issue 29's hostile inputs and special paths, each built in the test: one `Error:` line or a note, never a
traceback, nothing that is not a regular file replaced, no unbounded read."""
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from vqcodec import container
from vqcodec.images import pack_alpha, unpack_alpha

# A 1x1 vqf8-v13 image whose EXIF entry is the bytes "garbage" (found by an outside fuzzer).
EXIF_GARBAGE = bytes.fromhex(
    "5651494d030108767166382d7631332c0ea3f317bd81890100000001000000000803010380000c60a6207f014b7876bfcf0015f3"
    "0207000000676172626167659d2d178c")


def vqcodec(*args, input=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "vqcodec.cli", *map(str, args)], input=input, capture_output=True,
                          timeout=timeout)


def test_a_damaged_exif_gives_a_note_not_a_traceback(run, tmp_path):
    src = tmp_path / "f.vq"
    src.write_bytes(EXIF_GARBAGE)
    for name in ("out.tif", "out.png"):
        result = run("decompress", src, tmp_path / name)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and "Warning" not in result.output
        assert Image.open(tmp_path / name).size == (1, 1)
    assert "Note: the file's EXIF is damaged: TIFF cannot hold it, left out" in run(
        "decompress", src, tmp_path / "again.tif").output


def test_special_outputs_are_never_replaced(files, run, tmp_path):
    png, vq, model = files
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args in (("decompress", vq, fifo, "--force"), ("compress", png, fifo, "--model", model, "--force")):
        result = run(*args)
        assert result.exit_code == 1
        assert result.output == f"Error: {str(fifo)!r} is not a regular file (give - for standard output)\n"
        assert fifo.exists() and not fifo.is_file()
    result = run("decompress", vq, "/dev/null", "--force")
    assert result.exit_code == 1 and "is not a regular file" in result.output
    assert not os.path.isfile("/dev/null")


def test_dev_stdout_is_standard_output(files):
    png, vq, model = files
    result = vqcodec("decompress", vq, "/dev/stdout", "--model", model)
    assert result.returncode == 0, result.stderr
    assert Image.open(io.BytesIO(result.stdout)).size == Image.open(png).size


def test_the_input_and_the_output_cannot_be_the_same_file(files, run):
    png, vq, model = files
    before = png.read_bytes()
    result = run("compress", png, png, "--force", "--model", model)
    assert result.exit_code == 1 and result.output == f"Error: INPUT and OUTPUT are the same file: {str(png)!r}\n"
    assert png.read_bytes() == before


@pytest.mark.parametrize("args", [("decompress", "/dev/zero", "out.png"), ("info", "/dev/urandom")])
def test_devices_as_input_are_refused_at_once(args, tmp_path):
    result = vqcodec(*args, timeout=20)
    assert result.returncode == 1 and result.stderr.decode().count("\n") == 1
    assert b"is not a regular file" in result.stderr


@pytest.mark.parametrize("command", [["decompress", "-", "out.png"], ["info", "-"], ["compress", "-", "out.vq"]])
def test_an_endless_stream_of_zeros_on_standard_input_is_refused(command, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "vqcodec.cli", *command], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    zeros = b"\0" * (1 << 20)
    try:
        for _ in range(64):   # at most 64 MiB: the command must have stopped reading long before
            proc.stdin.write(zeros)
    except BrokenPipeError:
        pass
    proc.stdin.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 1
    assert err.startswith("Error: ") and err.count("\n") == 1, err


def test_a_valid_header_followed_by_endless_bytes_is_read_only_as_far_as_the_header_allows(files):
    png, vq, model = files
    data = vq.read_bytes()
    stream = io.BytesIO(data + b"\x55" * (1 << 24))
    with pytest.raises(container.FormatError, match="unexpected bytes"):
        container.read_bounded(stream.read)
    assert stream.tell() <= len(data) + (1 << 17)
    assert container.read_bounded(io.BytesIO(data).read) == data


def test_min_stream_words_is_the_documented_formula_at_every_count():
    for n in range(1, 16385):
        bits_num = 457 * n + 10000 * (16 - 64)       # 10000 x (0.0457 n + 16 - 64)
        words = max(1, -(-bits_num // 320000))       # ceil(bits / 32)
        assert container.min_stream_words(n) == words, n
        assert container.min_stream_words(n) <= container.max_stream_words(n)
    assert container.min_stream_words(1751) == 2    # the code once truncated the bits first, and said 1


def short_alpha_png(plane, claimed_rows):
    """A PNG of `plane` whose IHDR claims `claimed_rows` rows (the CRC made right)."""
    buf = io.BytesIO()
    Image.fromarray(plane, "L").save(buf, "PNG")
    png = bytearray(buf.getvalue())
    png[20:24] = struct.pack(">I", claimed_rows)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes([0]) + bytes(png)


def test_a_short_alpha_png_is_refused():
    plane = (np.arange(48 * 40) % 251).astype(np.uint8).reshape(48, 40)
    assert (unpack_alpha(pack_alpha(plane), 40, 48) == plane).all()
    with pytest.raises(ValueError, match="wrong number of rows"):
        unpack_alpha(short_alpha_png(plane[:24], 48), 40, 48)


def test_a_large_alpha_plane_decodes_past_pillows_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # as if the plane were over Pillow's 179 MP
    plane = np.full((100, 120), 9, np.uint8)
    assert (unpack_alpha(pack_alpha(plane), 120, 100) == plane).all()
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_junk_colour_streams_are_refused_before_the_alpha_plane_is_inflated(tiny_codec, monkeypatch):
    rgba = Image.new("RGBA", (64, 64), (10, 200, 30, 128))
    data = bytearray(tiny_codec.compress(rgba, quality=2))
    header = container.unpack(bytes(data))
    first_stream = header.header_len + header.metadata_len + header.alpha_len
    data[first_stream] ^= 0xFF
    calls = []
    import vqcodec.codec as codec_module

    monkeypatch.setattr(codec_module, "unpack_alpha", lambda *a: calls.append(a))
    with pytest.raises(container.FormatError):
        tiny_codec.decompress(bytes(data))
    assert calls == []


def test_a_name_with_a_newline_gives_one_line(run, tmp_path):
    result = run("decompress", tmp_path / "no\nsuch.vq", tmp_path / "out.png")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output == f"Error: no such file: {str(tmp_path) + '/no' + chr(10) + 'such.vq'!r}\n"


def test_xmp_is_kept_in_png_and_tiff(tiny_codec, tmp_path, run, tiny_model_dir):
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">vqcodec test</x:xmpmeta>'
    src = tmp_path / "x.jpg"
    Image.new("RGB", (32, 32), (90, 120, 60)).save(src, xmp=xmp)
    vq = tmp_path / "x.vq"
    result = run("compress", src, vq, "-q", 2, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    for ext in ("png", "tif", "jpg", "webp"):
        out = tmp_path / f"back.{ext}"
        result = run("decompress", vq, out, "--model", tiny_model_dir)
        assert result.exit_code == 0, result.output
        with Image.open(out) as im:
            assert im.info.get("xmp") == xmp, ext


def test_alpha_composited_for_jpeg_is_noted(tiny_codec, tmp_path, run, tiny_model_dir):
    src = tmp_path / "a.png"
    Image.new("RGBA", (32, 32), (90, 120, 60, 100)).save(src)
    vq = tmp_path / "a.vq"
    result = run("compress", src, vq, "-q", 2, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    result = run("decompress", vq, tmp_path / "a.jpg", "--model", tiny_model_dir)
    assert result.exit_code == 0
    assert "Note: JPEG holds no alpha: the RGBA image is composited on white" in result.output


# --- what new users trip on ----------------------------------------------------------------------

def test_dash_o_with_one_file_and_a_vq_name_writes_that_file(files, run, tmp_path):
    png, vq, model = files
    result = run("compress", png, "-o", tmp_path / "out.vq", "-q", 2, "--model", model)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.vq").is_file()
    result = run("decompress", tmp_path / "out.vq", "-o", tmp_path / "back.png", "--model", model)
    assert result.exit_code == 0 and (tmp_path / "back.png").is_file(), result.output


def test_an_output_without_the_vq_extension_is_noted(files, run, tmp_path):
    png, vq, model = files
    result = run("compress", png, tmp_path / "out.bin", "-q", 2, "--model", model)
    assert result.exit_code == 0 and f"Note: the output {str(tmp_path / 'out.bin')!r} does not end in .vq" in result.output


def test_skip_existing_reruns_a_batch(files, run, tmp_path):
    png, vq, model = files
    out = tmp_path / "batch"
    assert run("compress", png, "-o", out, "-q", 2, "--model", model).exit_code == 0
    again = run("compress", png, "-o", out, "-q", 2, "--model", model)
    assert again.exit_code == 1 and "already exists" in again.output
    skip = run("compress", png, "-o", out, "-q", 2, "--model", model, "--skip-existing")
    assert skip.exit_code == 0 and "0 of 1 files compressed" in skip.output and "1 skipped" in skip.output


def test_a_batch_prints_a_line_per_file_into_a_log(files, run, tmp_path):
    png, vq, model = files
    result = run("compress", png, "-o", tmp_path / "b", "-q", 2, "--model", model)
    assert f"{png} -> {tmp_path / 'b' / 'in.vq'}: " in result.stderr


def test_threads_sets_torch_threads(files, run, tmp_path, monkeypatch):
    import torch

    png, vq, model = files
    before = torch.get_num_threads()
    try:
        assert run("decompress", vq, tmp_path / "t.png", "--threads", 1, "--model", model).exit_code == 0
        assert torch.get_num_threads() == 1
        assert run("decompress", vq, tmp_path / "t2.png", "--threads", 0, "--model", model).exit_code == 2
    finally:
        torch.set_num_threads(before)
    from vqcodec.progress import default_threads

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    assert default_threads() == 1


def test_palette_with_transparency_is_noted(tiny_codec):
    im = Image.new("P", (32, 32), 0)
    im.info["transparency"] = 0
    notes = []
    tiny_codec.compress(im, quality=2, notes=notes)
    assert "converted P with transparency to RGBA (it decodes as RGBA)" in notes


def test_tile_progress_ticks_once_per_tile(tiny_codec):
    from vqcodec import progress

    seen = []
    image = Image.new("RGB", (600, 300), (30, 90, 150))
    with progress.listening(lambda what, total: seen.append((what, total))):
        data = tiny_codec.compress(image, quality=2)
        tiny_codec.decompress(data)
    header = container.unpack(data)
    assert header.num_tiles > 1
    for what in ("encoding", "entropy coding", "entropy decoding", "decoding"):
        assert seen.count((what, header.num_tiles)) == header.num_tiles, what


def test_max_work_refuses_files_that_ask_for_too_much_per_byte_before_decoding(tiny_codec, run, tmp_path,
                                                                               tiny_model_dir, monkeypatch):
    data = tiny_codec.compress(Image.new("RGB", (256, 256), (40, 90, 200)), quality=2)
    header = container.unpack(data)
    work = container.work_per_byte(header, header.stages)
    assert work > 1
    tiny_codec.decompress(data, max_work=work + 0.01)
    calls = []
    monkeypatch.setattr(tiny_codec.coder, "decode", lambda *a, **k: calls.append(a))
    with pytest.raises(container.FormatError, match="index positions per coded byte"):
        tiny_codec.decompress(data, max_work=work / 2)
    assert calls == []
    path = tmp_path / "flat.vq"
    path.write_bytes(data)
    result = run("decompress", path, tmp_path / "o.png", "--model", tiny_model_dir, "--max-work", work / 2)
    assert result.exit_code == 1 and "over the limit" in result.output and result.output.count("\n") == 1


def test_the_target_size_search_is_in_the_library(tiny_model_dir, photo_like):
    import vqcodec

    sizes = {q: len(vqcodec.compress(photo_like, q, model=tiny_model_dir)) for q in (1, 2, 3)}
    data = vqcodec.compress_to_size(photo_like, target_size=sizes[2], model=tiny_model_dir)
    assert len(data) <= sizes[2] and vqcodec.read_info(data).quality == max(q for q, n in sizes.items() if n <= sizes[2])
    with pytest.raises(ValueError, match="no quality fits"):
        vqcodec.compress_to_size(photo_like, target_size=10, model=tiny_model_dir)


@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "JPEG", "WEBP"])
def test_a_decoded_image_is_never_rotated_by_an_orientation_in_its_exif(fmt, tmp_path):
    """A .vq file stores upright pixels and orientation 1; one crafted with another orientation must not make
    viewers rotate the decoded image: the written EXIF says 1, with a note."""
    import io

    from vqcodec.images import save_image

    exif = Image.Exif()
    exif[0x0112] = 6
    im = Image.new("RGB", (37, 29), (10, 20, 30))
    im.info["exif"] = exif.tobytes()
    notes, buf = [], io.BytesIO()
    save_image(im, buf, fmt, notes)
    back = Image.open(io.BytesIO(buf.getvalue()))
    assert back.size == (37, 29) and back.getexif().get(0x0112, 1) == 1
    assert notes == ["the file's EXIF orientation 6 was set to 1 (the image is upright)"]
