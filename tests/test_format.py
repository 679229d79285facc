"""The .vq container (format version 3): round trip, golden bytes, and every kind of bad file."""
import struct
import zlib

import pytest

from vqcodec import container
from vqcodec.container import (FORMAT_VERSION, FormatError, Header, TruncatedError, min_stream_words, pack,
                               sections, unpack)

HEADER = Header("vqf8-v3", bytes(range(8)), width=20, height=12, mode="RGB", quality=4, stages=2,
                downsampling=8, tile=32)
# 20 x 12 pixels -> a 2 x 3 grid of positions, one tile; two stages of one stream each
STREAMS = [[bytes(range(4))], [bytes(range(4, 12))]]
META, ALPHA = b"\x01\x03\x00\x00\x00abc", b"\x00alpha"


def build(header=HEADER, meta=b"", alpha=b"", streams=STREAMS):
    return pack(header, meta, alpha, streams)


def test_round_trip_with_every_section():
    data = build(meta=META, alpha=ALPHA)
    h = unpack(data)
    assert (h.width, h.height, h.mode, h.quality, h.stages, h.downsampling, h.tile, h.depth) == (20, 12, "RGB", 4, 2, 8, 32, 8)
    assert h.stream_words == ((1,), (2,)) and h.complete_stages == 2
    parts = sections(data, h, 2)
    assert (parts.metadata, parts.alpha, parts.streams) == (META, ALPHA, STREAMS)


def test_golden_bytes():
    """Pins the header layout of format version 3 (docs/format.md). Change only with a version bump."""
    data = build()
    fixed = struct.pack("<IIBBBBBH", 20, 12, 0, 8, 4, 2, 3, 32)
    head = b"VQIM" + bytes([3, 0, 7]) + b"vqf8-v3" + bytes(range(8)) + fixed
    head += bytes([1, 2]) + struct.pack("<II", zlib.crc32(STREAMS[0][0]), zlib.crc32(STREAMS[1][0]))
    assert data == head + struct.pack("<I", zlib.crc32(head)) + bytes(range(12))
    assert data.hex() == GOLDEN_HEX


GOLDEN_HEX = (
    "5651494d030007767166382d76330001020304050607140000000c0000000008040203200001021386b98b5be37170"
    "7132e57c000102030405060708090a0b"
)


@pytest.mark.parametrize("cut", range(0, 60))
def test_every_truncation_is_refused_or_marks_the_whole_stages(cut):
    data = build()
    try:
        h = unpack(data[:cut])
    except FormatError as e:
        assert isinstance(e, TruncatedError) or "not a .vq file" in str(e)
        return
    # a cut inside the streams: the header is whole, the stages before the cut are usable, no others
    assert h.complete_stages == (2 if cut == len(data) else 1 if cut >= len(data) - 8 else 0)
    with pytest.raises(TruncatedError, match="truncated .vq file"):
        sections(data[:cut], h, 2)


def test_a_file_cut_at_a_stage_boundary_keeps_its_first_stages():
    data = build()
    h = unpack(data[:-8])
    assert h.complete_stages == 1
    assert sections(data[:-8], h, 1).streams == STREAMS[:1]


@pytest.mark.parametrize("coloured", [False, True])
def test_every_single_bit_flip_is_refused(coloured):
    data = pack(COLOURED, META, ALPHA, STREAMS, LAYER) if coloured else build(meta=META, alpha=ALPHA)
    for byte in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[byte] ^= 1 << bit
            with pytest.raises(FormatError):
                h = unpack(bytes(bad))
                sections(bytes(bad), h, h.stages, colour=coloured)   # (a ValueError if the flag were lost)


@pytest.mark.parametrize("data,message", [
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a .vq file"),
    (b"", "not a .vq file"),
    (b"VQIM", "truncated"),
    (b"VQIM" + bytes([FORMAT_VERSION + 1, 0, 7]) + bytes(60), "unsupported .vq format version 4"),
    (b"VQIM" + bytes([2, 0, 7]) + bytes(60), r"format version 2, which vqcodec 0\.13 reads"),
    (b"VQIM" + bytes([1, 0, 7]) + bytes(60), "format version 1, which vqcodec 0.1.x reads"),
    (b"VQIM" + bytes([FORMAT_VERSION, 0x10, 7]) + bytes(60), "unsupported .vq flags"),
])
def test_foreign_old_and_future_files(data, message):
    with pytest.raises(FormatError, match=message):
        unpack(data)


def test_bytes_after_the_last_stage_are_refused():
    with pytest.raises(FormatError, match="unexpected bytes after the last stage"):
        unpack(build() + b"xxxx")


def test_header_fields_are_validated_before_use():
    ok = dict(model_name="vqf8-v3", model_hash=bytes(8), width=5, height=5, mode="RGB", quality=1, stages=1,
              downsampling=8, tile=32)
    for change in ({"width": 0}, {"height": 70000}, {"mode": "CMYK"}, {"model_name": "bad name"},
                   {"model_name": "vqf8-v3\n"}, {"model_name": ".."}, {"model_name": "."}, {"quality": 0},
                   {"stages": 0}, {"downsampling": 3}, {"tile": 16}, {"tile": 256}, {"depth": 12}):
        with pytest.raises(FormatError):
            pack(Header(**{**ok, **change}), b"", b"", [[bytes(4)]])


def test_a_model_name_ending_in_a_newline_is_refused():
    """Regression (issue 9, item 3): the old pattern ended in `$`, which let a trailing newline through."""
    good = build()
    bad = bytearray(good)
    bad[7:14] = b"vqf8-v\n"
    with pytest.raises(FormatError, match="model name"):
        unpack(bytes(bad))


def _recrc(data: bytearray, header_len: int) -> bytes:
    data[header_len - 4:header_len] = struct.pack("<I", zlib.crc32(bytes(data[:header_len - 4])))
    return bytes(data)


def test_the_44_byte_bomb_is_refused_at_once():
    """Regression (issue 9, item 1): a valid header claiming 16384 x 16384 with no payload."""
    head = (b"VQIM" + bytes([FORMAT_VERSION, 0, 7]) + b"vqf8-v3" + bytes(8)
            + struct.pack("<IIBBBBBH", 16384, 16384, 0, 8, 3, 1, 3, 128))
    data = head + struct.pack("<I", zlib.crc32(head))
    with pytest.raises(TruncatedError, match="header incomplete"):
        unpack(data)


def test_a_stream_too_short_for_its_tile_is_refused_before_decoding():
    """Every coded index costs at least MIN_BITS_PER_INDEX bits, so a big tile needs a long stream."""
    header = Header("vqf8-v3", bytes(8), width=1024, height=1024, mode="RGB", quality=3, stages=1,
                    downsampling=8, tile=128)
    need = min_stream_words(128 * 128)
    assert need > 1
    ok = pack(header, b"", b"", [[bytes(4 * need)]])
    assert unpack(ok).stream_words == ((need,),)
    with pytest.raises(ValueError):
        pack(header, b"", b"", [[b""]])
    with pytest.raises(FormatError, match="cannot hold"):
        unpack(pack(header, b"", b"", [[bytes(4 * (need - 1))]]))


# A colour layer (flag bit 3): block 2^6, step 4, one decay per channel; its stream is the file's last bytes.
COLOURED = Header("vqf8-v3", bytes(range(8)), width=20, height=12, mode="RGB", quality=4, stages=2,
                  downsampling=8, tile=32, colour_block=6, colour_step=4, colour_decays=(100, 90, 80))
LAYER = bytes(range(100, 108))          # two words: 1 block x 3 channels needs at least 1


def test_golden_bytes_with_a_colour_layer():
    data = pack(COLOURED, b"", b"", STREAMS, LAYER)
    fixed = struct.pack("<IIBBBBBH", 20, 12, 0, 8, 4, 2, 3, 32)
    head = b"VQIM" + bytes([3, 8, 7]) + b"vqf8-v3" + bytes(range(8)) + fixed + bytes([6, 4, 100, 90, 80])
    head += bytes([2]) + struct.pack("<I", zlib.crc32(LAYER))
    head += bytes([1, 2]) + struct.pack("<II", zlib.crc32(STREAMS[0][0]), zlib.crc32(STREAMS[1][0]))
    assert data == head + struct.pack("<I", zlib.crc32(head)) + bytes(range(12)) + LAYER
    h = unpack(data)
    assert (h.colour_block, h.colour_step, h.colour_decays, h.colour_words, h.colour_complete) == (6, 4, (100, 90, 80), 2, True)
    assert h.colour_values == 3 and sections(data, h, 2, colour=True).colour == LAYER
    assert sections(data, h, 1).streams == STREAMS[:1]          # a lower quality reads its stages alone


def test_a_cut_colour_layer_keeps_the_stages():
    data = pack(COLOURED, b"", b"", STREAMS, LAYER)
    for cut in (4, 8):
        h = unpack(data[:-cut])
        assert h.complete_stages == 2 and not h.colour_complete
        assert sections(data[:-cut], h, 2).streams == STREAMS
        with pytest.raises(TruncatedError, match="its colour layer is incomplete"):
            sections(data[:-cut], h, 2, colour=True)
    with pytest.raises(FormatError, match="unexpected bytes"):
        unpack(data + b"\0")


@pytest.mark.parametrize("field,value,message", [
    ("colour_block", 3, "invalid colour layer"), ("colour_block", 9, "invalid colour layer"),
    ("colour_step", 0, "invalid colour layer"), ("colour_step", 65, "invalid colour layer"),
    ("colour_decays", (1, 2), "invalid colour layer"), ("colour_decays", (0, 2, 3), "invalid colour layer"),
])
def test_colour_layer_fields_are_checked(field, value, message):
    import dataclasses
    with pytest.raises(FormatError, match=message):
        pack(dataclasses.replace(COLOURED, **{field: value}), b"", b"", STREAMS, LAYER)


def test_a_colour_stream_too_short_for_its_blocks_is_refused_before_decoding():
    """A 4096 x 4096 image at 16-pixel blocks: 196,608 colour values need more than the one word it claims."""
    big = Header("vqf8-v3", bytes(range(8)), width=4096, height=4096, mode="RGB", quality=4, stages=1,
                 downsampling=8, tile=128, colour_block=4, colour_step=4, colour_decays=(1, 1, 1))
    streams = [[bytes(4 * container.min_stream_words(128 * 128))] * 16]
    data = pack(big, b"", b"", streams, bytes(4))
    with pytest.raises(FormatError, match="a stream of 1 words cannot hold 196608 colour values"):
        unpack(data)
