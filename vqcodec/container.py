"""The .vq file container (no torch). Byte layout: docs/format.md.

Every field is validated before it is used; any problem raises FormatError with a one-line message.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"VQIM"
FORMAT_VERSION = 1
MODES = {0: "RGB", 1: "L"}
MODE_CODES = {v: k for k, v in MODES.items()}
MAX_SIDE = 1 << 16             # widths and heights are 1..65536
MAX_PIXELS = 1 << 28           # 268 megapixels: bounds every allocation a header can ask for
MODEL_HASH_BYTES = 8
_NAME_RE = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
_FIXED = struct.Struct("<IIBBII")  # width, height, mode, quality, payload length, payload crc32


class FormatError(ValueError):
    """The bytes are not a valid .vq file (corrupt, truncated, foreign or from a newer version)."""


@dataclass(frozen=True)
class Header:
    model_name: str
    model_hash: bytes   # first 8 bytes of SHA-256 of the model's weights file
    width: int
    height: int
    mode: str           # "RGB" or "L"
    quality: int

    def validate(self) -> None:
        if not _NAME_RE.match(self.model_name.encode("ascii", "replace")):
            raise FormatError(f"invalid model name {self.model_name!r}")
        if len(self.model_hash) != MODEL_HASH_BYTES:
            raise FormatError("model hash must be 8 bytes")
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise FormatError(f"image size {self.width}x{self.height} out of range (1..{MAX_SIDE} per side)")
        if self.width * self.height > MAX_PIXELS:
            raise FormatError(f"image of {self.width}x{self.height} pixels is too large")
        if self.mode not in MODE_CODES:
            raise FormatError(f"unsupported image mode {self.mode!r}")
        if not 1 <= self.quality <= 255:
            raise FormatError(f"quality {self.quality} out of range")


def pack(header: Header, payload: bytes) -> bytes:
    """Header + payload -> the bytes of a .vq file."""
    header.validate()
    name = header.model_name.encode("ascii")
    head = (MAGIC + bytes([FORMAT_VERSION, 0, len(name)]) + name + header.model_hash
            + _FIXED.pack(header.width, header.height, MODE_CODES[header.mode], header.quality,
                          len(payload), zlib.crc32(payload)))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def unpack(data: bytes) -> tuple[Header, bytes]:
    """The bytes of a .vq file -> (header, payload). Raises FormatError on anything invalid."""
    data = memoryview(data)
    if len(data) < 4 or bytes(data[:4]) != MAGIC:
        raise FormatError("not a .vq file (bad magic bytes)")
    if len(data) < 7:
        raise FormatError("truncated .vq file (header incomplete)")
    version, flags, name_len = data[4], data[5], data[6]
    if version != FORMAT_VERSION:
        raise FormatError(f"unsupported .vq format version {version} (this vqcodec reads version {FORMAT_VERSION})")
    if flags != 0:
        raise FormatError(f"unsupported .vq flags {flags:#04x}")
    if not 1 <= name_len <= 64:
        raise FormatError("corrupt .vq header (model name length)")
    head_len = 7 + name_len + MODEL_HASH_BYTES + _FIXED.size
    if len(data) < head_len + 4:
        raise FormatError("truncated .vq file (header incomplete)")
    (head_crc,) = struct.unpack_from("<I", data, head_len)
    if zlib.crc32(data[:head_len]) != head_crc:
        raise FormatError("corrupt .vq header (checksum mismatch)")
    name = bytes(data[7:7 + name_len])
    if not _NAME_RE.match(name):
        raise FormatError("corrupt .vq header (model name)")
    model_hash = bytes(data[7 + name_len:7 + name_len + MODEL_HASH_BYTES])
    width, height, mode_code, quality, payload_len, payload_crc = _FIXED.unpack_from(
        data, 7 + name_len + MODEL_HASH_BYTES)
    if mode_code not in MODES:
        raise FormatError(f"corrupt .vq header (unknown mode code {mode_code})")
    header = Header(name.decode("ascii"), model_hash, width, height, MODES[mode_code], quality)
    header.validate()
    payload = data[head_len + 4:]
    if len(payload) < payload_len:
        raise FormatError(f"truncated .vq file ({len(payload)} of {payload_len} payload bytes)")
    if len(payload) > payload_len:
        raise FormatError(f"corrupt .vq file ({len(payload) - payload_len} unexpected bytes after the payload)")
    if payload_len % 4:
        raise FormatError("corrupt .vq payload (length is not a whole number of 32-bit words)")
    if zlib.crc32(payload) != payload_crc:
        raise FormatError("corrupt .vq payload (checksum mismatch)")
    return header, bytes(payload)
