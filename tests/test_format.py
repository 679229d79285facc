"""The .vq container: round trip, golden bytes, and every kind of bad file."""
import struct
import zlib

import pytest

from vqcodec.container import FORMAT_VERSION, FormatError, Header, pack, unpack

HEADER = Header("vqf8-v1", bytes(range(8)), width=768, height=512, mode="RGB", quality=4)
PAYLOAD = bytes(range(12))
GOLDEN_FILE_HEX = "5651494d010007767166382d76310001020304050607"  # magic, version, flags, name length, name, hash


def test_round_trip():
    header, payload = unpack(pack(HEADER, PAYLOAD))
    assert header == HEADER and payload == PAYLOAD


def test_golden_bytes():
    """Pins the header layout of format version 1 (docs/format.md). Change only with a version bump."""
    data = pack(HEADER, PAYLOAD)
    name = b"vqf8-v1"
    fixed = struct.pack("<IIBBII", 768, 512, 0, 4, 12, zlib.crc32(PAYLOAD))
    head = b"VQIM" + bytes([1, 0, 7]) + name + bytes(range(8)) + fixed
    assert data == head + struct.pack("<I", zlib.crc32(head)) + PAYLOAD
    assert data[:22].hex() == GOLDEN_FILE_HEX
    assert len(data) - len(PAYLOAD) == 44  # header size for a 7-character model name


@pytest.mark.parametrize("cut", range(0, 56))
def test_every_truncation_is_refused(cut):
    data = pack(HEADER, PAYLOAD)
    with pytest.raises(FormatError, match="truncated|not a .vq file|corrupt"):
        unpack(data[:cut])


def test_every_single_bit_flip_is_refused():
    data = pack(HEADER, PAYLOAD)
    for byte in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[byte] ^= 1 << bit
            with pytest.raises(FormatError):
                unpack(bytes(bad))


@pytest.mark.parametrize("data,message", [
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a .vq file"),
    (b"", "not a .vq file"),
    (b"VQIM", "truncated"),
    (b"VQIM" + bytes([FORMAT_VERSION + 1, 0, 7]) + bytes(60), "unsupported .vq format version 2"),
    (pack(HEADER, PAYLOAD) + b"x", "unexpected bytes after the payload"),
])
def test_foreign_and_future_files(data, message):
    with pytest.raises(FormatError, match=message):
        unpack(data)


def test_header_fields_are_validated_before_use():
    for bad in (Header("vqf8-v1", bytes(8), 0, 5, "RGB", 1), Header("vqf8-v1", bytes(8), 5, 70000, "RGB", 1),
                Header("vqf8-v1", bytes(8), 5, 5, "CMYK", 1), Header("bad name", bytes(8), 5, 5, "RGB", 1),
                Header("vqf8-v1", bytes(8), 5, 5, "RGB", 0)):
        with pytest.raises(FormatError):
            pack(bad, b"")


def test_huge_dimensions_with_valid_checksums_are_refused():
    """A crafted header (checksums right) must not make the reader allocate 65536 x 65536 pixels."""
    name = b"vqf8-v1"
    fixed = struct.pack("<IIBBII", 65536, 65536, 0, 1, 0, zlib.crc32(b""))
    head = b"VQIM" + bytes([1, 0, 7]) + name + bytes(8) + fixed
    with pytest.raises(FormatError, match="too large"):
        unpack(head + struct.pack("<I", zlib.crc32(head)))
