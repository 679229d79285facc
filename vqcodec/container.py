"""The .vq file container, format version 3 (no torch). Byte layout: docs/format.md.

A file is a header (fixed fields, then a table of section lengths, then a CRC-32 of the header), followed
by the sections in order: metadata, alpha, then the coded index streams, stage by stage and, within a
stage, tile by tile, then (a refined quality) the refinement's streams, tile by tile, then (if it has one) the
colour layer's stream. Every field is validated before it is used; any problem raises FormatError with a
one-line message. Parsing costs time proportional to the file's length, never to what its header claims.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"VQIM"
FORMAT_VERSION = 3
MODES = {0: "RGB", 1: "L"}
MODE_CODES = {v: k for k, v in MODES.items()}
MAX_SIDE = 65535                 # widths and heights are 1..65535
MAX_PIXELS = 1 << 30             # the format's own ceiling; decoders apply a lower default (max_pixels)
MAX_STAGES = 64
MIN_TILE, MAX_TILE = 32, 128     # tile side in index positions: bounds the work and memory of one tile
MAX_METADATA_BYTES = 16 << 20    # ICC + EXIF + XMP together
MODEL_HASH_BYTES = 8
FLAG_METADATA, FLAG_ALPHA, FLAG_REFINE, FLAG_COLOUR = 0x01, 0x02, 0x04, 0x08
COLOUR_LOG2_BLOCKS = (4, 8)      # the colour layer's block side: 16 .. 256 pixels
COLOUR_MAX_STEP = 64
_NAME_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIXED = struct.Struct("<IIBBBBBH")  # width, height, mode, depth, quality, stages, log2 f, tile side

# Every coded index costs at least MIN_BITS_PER_INDEX bits: the coder caps each probability at
# 1 - 2**-PROB_CAP_BITS (vqcodec/entropy.py). So a stream of n indices needs at least
# n * MIN_BITS_PER_INDEX bits, less the range coder's 64 bits of final state, plus its 16 check bits.
PROB_CAP_BITS = 5
MIN_BITS_PER_INDEX = 0.0457          # < -log2(1 - 2**-5 + 2**-14) = 0.04571: the cap, with constriction's quantisation
STREAM_CHECK_BITS = 16
MAX_BITS_PER_INDEX = 24              # constriction's probabilities are at least 2**-24 (max_stream_words)
# A refined value costs at least REFINE_MIN_BITS: its tables cap each probability at 1 - 2**-12 (vqcodec/refine.py).
REFINE_MIN_BITS_PER_10K = 3          # 0.0003 bits < -log2(1 - 2**-12) = 0.00035, with constriction's quantisation


OLD_VERSIONS = {1: ("0.1.x", "0.2"), 2: ("0.13", "0.14")}   # version -> (the release that reads it, the next)


class FormatError(ValueError):
    """The bytes are not a valid .vq file (corrupt, truncated, foreign or from another version)."""


class TruncatedError(FormatError):
    """The file stops early; `complete_stages` stages are whole (see Header.complete_stages)."""


@dataclass(frozen=True)
class Header:
    model_name: str
    model_hash: bytes            # first 8 bytes of SHA-256 of the model's weights file
    width: int
    height: int
    mode: str                    # "RGB" or "L"
    quality: int
    stages: int                  # residual stages coded
    downsampling: int            # f: one index position per f x f pixels
    tile: int                    # tile side in index positions
    depth: int = 8               # bits per sample of the source image (8 or 16); decoded images are 8-bit
    metadata_len: int = 0
    metadata_crc: int = 0
    alpha_len: int = 0
    alpha_crc: int = 0
    stream_words: tuple = ()     # (stages, tiles) 32-bit word counts, stage-major
    stage_crcs: tuple = ()       # CRC-32 of each stage's bytes (all its tiles)
    header_len: int = 0          # bytes before the first section (filled in by unpack)
    complete_stages: int = -1    # stages wholly present in the file (unpack); -1 = not read from a file
    refine_level: int = 0        # the refinement level coded above the stages (1..255), 0: none
    refine_values: int = 0       # refined values per index position (1..255), 0 without refinement
    refine_complete: bool = False  # the refinement's streams are wholly present (unpack)
    colour_block: int = 0        # log2 of the colour layer's block side (4..8), 0: no colour layer
    colour_step: int = 0         # its step in 8-bit levels (1..64)
    colour_decays: tuple = ()    # its table's decay per channel (1..255): 3 for RGB, 1 for L
    colour_words: int = 0        # its stream's length in 32-bit words
    colour_crc: int = 0
    colour_complete: bool = False  # its stream is wholly present (unpack)

    @property
    def rows(self) -> int:
        """Rows of streams: one per stage, and one for the refinement if there is one."""
        return self.stages + (1 if self.refine_level else 0)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w): index positions."""
        f = self.downsampling
        return -(-self.height // f), -(-self.width // f)

    @property
    def tiles(self) -> list[tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) of each tile in index positions, row-major."""
        h, w = self.grid
        t = self.tile
        return [(y, x, min(y + t, h), min(x + t, w)) for y in range(0, h, t) for x in range(0, w, t)]

    @property
    def channels(self) -> int:
        return 3 if self.mode == "RGB" else 1

    @property
    def colour_values(self) -> int:
        """Symbols in the colour layer's stream: one per block and channel."""
        if not self.colour_block:
            return 0
        b = 1 << self.colour_block
        return -(-self.height // b) * -(-self.width // b) * self.channels

    @property
    def num_tiles(self) -> int:
        h, w = self.grid
        return -(-h // self.tile) * -(-w // self.tile)

    def validate(self) -> None:
        if not _NAME_RE.fullmatch(self.model_name.encode("ascii", "replace")):
            raise FormatError(f"invalid model name {self.model_name!r}")
        if len(self.model_hash) != MODEL_HASH_BYTES:
            raise FormatError("model hash must be 8 bytes")
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise FormatError(f"image size {self.width}x{self.height} out of range (1..{MAX_SIDE} per side)")
        if self.width * self.height > MAX_PIXELS:
            raise FormatError(f"image of {self.width}x{self.height} pixels is larger than the format allows "
                              f"({MAX_PIXELS} pixels)")
        if self.mode not in MODE_CODES:
            raise FormatError(f"unsupported image mode {self.mode!r}")
        if self.depth not in (8, 16):
            raise FormatError(f"source depth {self.depth} is not 8 or 16")
        if not 1 <= self.quality <= 255:
            raise FormatError(f"quality {self.quality} out of range")
        if not 1 <= self.stages <= MAX_STAGES:
            raise FormatError(f"{self.stages} stages out of range (1..{MAX_STAGES})")
        if self.downsampling not in (1, 2, 4, 8, 16, 32, 64):
            raise FormatError(f"downsampling {self.downsampling} is not a power of two up to 64")
        if not MIN_TILE <= self.tile <= MAX_TILE:
            raise FormatError(f"tile side {self.tile} out of range ({MIN_TILE}..{MAX_TILE})")
        if not (0 <= self.refine_level <= 255 and 0 <= self.refine_values <= 255
                and (self.refine_level == 0) == (self.refine_values == 0)):
            raise FormatError(f"refinement level {self.refine_level} with {self.refine_values} values is invalid")
        if self.colour_block:
            lo, hi = COLOUR_LOG2_BLOCKS
            if not (lo <= self.colour_block <= hi and 1 <= self.colour_step <= COLOUR_MAX_STEP
                    and len(self.colour_decays) == self.channels and all(1 <= d <= 255 for d in self.colour_decays)):
                raise FormatError("invalid colour layer (block, step or decays)")


# --- variable-length integers (LEB128, canonical, at most 5 bytes) ------------------------------
def _varint(n: int) -> bytes:
    if not 0 <= n < 1 << 32:
        raise ValueError(f"{n} does not fit a 32-bit varint")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data, pos: int) -> tuple[int, int]:
    n = 0
    for i in range(5):
        if pos + i >= len(data):
            raise TruncatedError("truncated .vq file (header incomplete)")
        byte = data[pos + i]
        n |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise FormatError("corrupt .vq header (non-canonical length)")
            if n >= 1 << 32:
                raise FormatError("corrupt .vq header (length out of range)")
            return n, pos + i + 1
    raise FormatError("corrupt .vq header (length out of range)")


def min_stream_words(indices: int) -> int:
    """The fewest 32-bit words that can hold a stream of this many coded indices (see PROB_CAP_BITS):
    max(1, ceil((0.0457 n + 16 - 64) / 32)), in integers (0.0457 = 457 / 10000), as docs/format.md states."""
    return max(1, -(-(457 * indices + 10000 * (STREAM_CHECK_BITS - 64)) // 320000))


def min_refine_words(values: int) -> int:
    """The fewest 32-bit words that can hold a refinement stream of this many coded values:
    max(1, ceil((0.0003 n + 16 - 64) / 32)), in integers."""
    return max(1, -(-(REFINE_MIN_BITS_PER_10K * values + 10000 * (STREAM_CHECK_BITS - 64)) // 320000))


def max_stream_words(indices: int) -> int:
    """The most 32-bit words a stream of this many coded indices can take: constriction gives every symbol a
    probability of at least 2**-24, so at most 24 bits an index, plus the check symbol's 16 bits and at most
    64 bits of the range coder's final state."""
    return -(-(MAX_BITS_PER_INDEX * indices + STREAM_CHECK_BITS + 64) // 32)


def decoded_mode(header: Header) -> str:
    """The mode a file decodes to: its colour mode, with alpha if it has an alpha section (RGBA, LA)."""
    if header.alpha_len:
        return "RGBA" if header.mode == "RGB" else "LA"
    return header.mode


def work_per_byte(header: Header, stages: int) -> float:
    """Index positions the prior decodes per byte of the first `stages` stages' streams: what decoding costs
    per byte of input. At most about 175 for any valid file (min_stream_words); photos take 1 to 3."""
    h, w = header.grid
    coded = 4 * sum(sum(row) for row in header.stream_words[:stages])
    return h * w * stages / max(1, coded)


def file_length(header: Header) -> int:
    """The length of the whole file a parsed header describes."""
    return (header.header_len + header.metadata_len + header.alpha_len + 4 * sum(map(sum, header.stream_words))
            + 4 * header.colour_words)


def pack(header: Header, metadata: bytes, alpha: bytes, streams: list[list[bytes]], colour: bytes = b"") -> bytes:
    """Header fields + sections -> the bytes of a .vq file. streams[stage][tile]: whole 32-bit words; colour:
    the colour layer's stream (whole words), with the header's colour_block, colour_step and colour_decays."""
    header.validate()
    if bool(colour) != bool(header.colour_block) or len(colour) % 4:
        raise ValueError("a colour layer needs both its header fields and a stream of whole 32-bit words")
    if len(streams) != header.rows or any(len(s) != header.num_tiles for s in streams):
        raise ValueError("streams must be one list of tiles per stage, and one for the refinement")
    if len(metadata) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata of {len(metadata)} bytes is over the {MAX_METADATA_BYTES}-byte limit")
    name = header.model_name.encode("ascii")
    flags = ((FLAG_METADATA if metadata else 0) | (FLAG_ALPHA if alpha else 0)
             | (FLAG_REFINE if header.refine_level else 0) | (FLAG_COLOUR if colour else 0))
    head = bytearray(MAGIC + bytes([FORMAT_VERSION, flags, len(name)]) + name + header.model_hash)
    head += _FIXED.pack(header.width, header.height, MODE_CODES[header.mode], header.depth, header.quality,
                        header.stages, header.downsampling.bit_length() - 1, header.tile)
    if header.refine_level:
        head += bytes([header.refine_level, header.refine_values])
    if colour:
        head += bytes([header.colour_block, header.colour_step, *header.colour_decays])
    for section in (metadata, alpha):
        if section:
            head += _varint(len(section)) + struct.pack("<I", zlib.crc32(section))
    if colour:
        head += _varint(len(colour) // 4) + struct.pack("<I", zlib.crc32(colour))
    for stage in streams:
        for stream in stage:
            if not stream or len(stream) % 4:
                raise ValueError("each stream must be a non-empty whole number of 32-bit words")
            head += _varint(len(stream) // 4)
    for stage in streams:
        head += struct.pack("<I", zlib.crc32(b"".join(stage)))
    head += struct.pack("<I", zlib.crc32(head))
    return bytes(head) + metadata + alpha + b"".join(b"".join(stage) for stage in streams) + colour


def read_bounded(read, chunk: int = 1 << 16) -> bytes:
    """The bytes of one .vq file from read(n) (a file or a pipe), never more than its header allows a valid
    file to hold: the magic is checked after 4 bytes, and once the header is whole, reading stops one byte
    past the length it declares (a longer input is then refused by unpack). Raises FormatError early."""
    buf = bytearray()

    def more(n: int) -> bool:
        got = read(n)
        buf.extend(got or b"")
        return bool(got)

    while len(buf) < 4 and more(4 - len(buf)):
        pass
    if bytes(buf[:4]) != MAGIC[:len(buf)] or len(buf) < 4:
        raise FormatError("not a .vq file (bad magic bytes)")
    total = None
    while total is None:
        try:
            total = file_length(_parse(memoryview(bytes(buf))))
        except TruncatedError as e:
            if "header incomplete" not in str(e):
                raise
            if not more(max(chunk, len(buf))):
                raise
    while len(buf) <= total and more(min(max(chunk, len(buf)), total + 1 - len(buf))):
        pass
    return bytes(buf[:total + 1])  # one byte past a valid file's end is enough to refuse it


def unpack(data: bytes) -> Header:
    """Parse and check the header of a .vq file. Raises FormatError on anything invalid, TruncatedError if the
    file stops inside its header. A file that stops inside its streams parses: `complete_stages` says how many
    stages are whole, and `sections` refuses to hand out more. The payload checks that need the sections
    themselves (CRCs) are done by `sections`.
    """
    return _parse(memoryview(data))


def _parse(data: memoryview) -> Header:
    if len(data) < 4 or bytes(data[:4]) != MAGIC:
        raise FormatError("not a .vq file (bad magic bytes)")
    if len(data) < 7:
        raise TruncatedError("truncated .vq file (header incomplete)")
    version, flags, name_len = data[4], data[5], data[6]
    if version != FORMAT_VERSION:
        if version in OLD_VERSIONS:
            release, below = OLD_VERSIONS[version]
            raise FormatError(f"this .vq file is format version {version}, which vqcodec {release} reads "
                              f"(this vqcodec reads version {FORMAT_VERSION}): pip install 'vqcodec<{below}'")
        raise FormatError(f"unsupported .vq format version {version} (this vqcodec reads version {FORMAT_VERSION})")
    if flags & ~(FLAG_METADATA | FLAG_ALPHA | FLAG_REFINE | FLAG_COLOUR):
        raise FormatError(f"unsupported .vq flags {flags:#04x}")
    if not 1 <= name_len <= 64:
        raise FormatError("corrupt .vq header (model name length)")
    pos = 7 + name_len + MODEL_HASH_BYTES + _FIXED.size
    if len(data) < pos:
        raise TruncatedError("truncated .vq file (header incomplete)")
    name = bytes(data[7:7 + name_len])
    if not _NAME_RE.fullmatch(name):
        raise FormatError("corrupt .vq header (model name)")
    model_hash = bytes(data[7 + name_len:7 + name_len + MODEL_HASH_BYTES])
    width, height, mode_code, depth, quality, stages, log2f, tile = _FIXED.unpack_from(
        data, 7 + name_len + MODEL_HASH_BYTES)
    if mode_code not in MODES:
        raise FormatError(f"corrupt .vq header (unknown mode code {mode_code})")
    if log2f > 6:
        raise FormatError("corrupt .vq header (downsampling)")
    fields = dict(model_name=name.decode("ascii"), model_hash=model_hash, width=width, height=height,
                  mode=MODES[mode_code], depth=depth, quality=quality, stages=stages, downsampling=1 << log2f,
                  tile=tile)
    if flags & FLAG_REFINE:
        if len(data) < pos + 2:
            raise TruncatedError("truncated .vq file (header incomplete)")
        fields.update(refine_level=data[pos], refine_values=data[pos + 1])
        if not fields["refine_level"] or not fields["refine_values"]:
            raise FormatError("corrupt .vq header (refinement level or values)")
        pos += 2
    if flags & FLAG_COLOUR:
        channels = 3 if fields["mode"] == "RGB" else 1
        if len(data) < pos + 2 + channels:
            raise TruncatedError("truncated .vq file (header incomplete)")
        fields.update(colour_block=data[pos], colour_step=data[pos + 1],
                      colour_decays=tuple(data[pos + 2:pos + 2 + channels]))
        if not fields["colour_block"]:
            raise FormatError("corrupt .vq header (colour layer)")
        pos += 2 + channels
    try:
        Header(**fields).validate()
    except FormatError as e:
        raise FormatError(f"corrupt .vq header ({e})") from None
    sections = []
    for flag in (FLAG_METADATA, FLAG_ALPHA):
        if flags & flag:
            length, pos = _read_varint(data, pos)
            if len(data) < pos + 4:
                raise TruncatedError("truncated .vq file (header incomplete)")
            if length == 0 or (flag == FLAG_METADATA and length > MAX_METADATA_BYTES):
                raise FormatError("corrupt .vq header (section length)")
            sections.append((length, struct.unpack_from("<I", data, pos)[0]))
            pos += 4
        else:
            sections.append((0, 0))
    probe = Header(**fields)
    colour = (0, 0)
    if flags & FLAG_COLOUR:
        n, pos = _read_varint(data, pos)
        if len(data) < pos + 4:
            raise TruncatedError("truncated .vq file (header incomplete)")
        values = probe.colour_values
        if not min_stream_words(values) <= n <= max_stream_words(values):
            raise FormatError(f"corrupt .vq file (a stream of {n} words cannot hold {values} colour values)")
        colour = (n, struct.unpack_from("<I", data, pos)[0])
        pos += 4
    n_tiles = probe.num_tiles
    # The table alone must fit in what is left of the file: a header cannot make this loop longer than the file.
    rows = probe.rows
    if len(data) - pos < rows * n_tiles:
        raise TruncatedError("truncated .vq file (header incomplete)")
    tile_sizes = [(y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in probe.tiles]
    words = []
    for r in range(rows):
        row = []
        for size in tile_sizes:
            n, pos = _read_varint(data, pos)
            if r < stages and not min_stream_words(size) <= n <= max_stream_words(size):
                raise FormatError(f"corrupt .vq file (a stream of {n} words cannot hold {size} indices)")
            values = size * probe.refine_values
            if r == stages and not min_refine_words(values) <= n <= max_stream_words(values):
                raise FormatError(f"corrupt .vq file (a stream of {n} words cannot hold {values} refined values)")
            row.append(n)
        words.append(tuple(row))
    if len(data) < pos + 4 * rows + 4:
        raise TruncatedError("truncated .vq file (header incomplete)")
    stage_crcs = struct.unpack_from(f"<{rows}I", data, pos)
    pos += 4 * rows
    (head_crc,) = struct.unpack_from("<I", data, pos)
    if zlib.crc32(data[:pos]) != head_crc:
        raise FormatError("corrupt .vq header (checksum mismatch)")
    pos += 4
    # How much of the file is there: sections, then whole stages.
    end = pos + sections[0][0] + sections[1][0]
    complete = 0
    for row in words:
        if len(data) < end + 4 * sum(row):
            break
        end += 4 * sum(row)
        complete += 1
    colour_complete = complete == rows and len(data) >= end + 4 * colour[0]
    if colour_complete:
        end += 4 * colour[0]
    if colour_complete and len(data) > end:
        raise FormatError(f"corrupt .vq file ({len(data) - end} unexpected bytes after the last stage)")
    return Header(**fields, metadata_len=sections[0][0], metadata_crc=sections[0][1], alpha_len=sections[1][0],
                  alpha_crc=sections[1][1], stream_words=tuple(words), stage_crcs=stage_crcs, header_len=pos,
                  complete_stages=min(complete, stages), refine_complete=complete > stages,
                  colour_words=colour[0], colour_crc=colour[1], colour_complete=colour_complete and colour[0] > 0)


@dataclass
class Sections:
    metadata: bytes
    alpha: bytes
    streams: list = field(default_factory=list)  # [stage][tile] -> bytes, for the stages asked for
    refinement: list = field(default_factory=list)  # [tile] -> bytes, if asked for
    colour: bytes = b""                             # the colour layer's stream, if asked for


def sections(data: bytes, header: Header, stages: int, refinement: bool = False, colour: bool = False) -> Sections:
    """The checked sections of a parsed file: metadata, alpha, the streams of the first `stages` stages, and
    with refinement=True the refinement's (the file must have one and all its stages), with colour=True the
    colour layer's stream (likewise).

    Raises TruncatedError if those stages are not all in the file, FormatError if a CRC does not match.
    """
    if stages > header.complete_stages or header.complete_stages < 0:
        have = max(header.complete_stages, 0)
        raise TruncatedError(f"truncated .vq file ({have} of {header.stages} stages complete)")
    if refinement and (not header.refine_level or stages != header.stages):
        raise ValueError("the refinement is read with all of the file's stages, from a file that has one")
    if refinement and not header.refine_complete:
        raise TruncatedError(f"truncated .vq file (the refinement of its {header.stages} stages is incomplete)")
    data = memoryview(data)
    pos = header.header_len
    parts = []
    for length, crc, what in ((header.metadata_len, header.metadata_crc, "metadata"),
                              (header.alpha_len, header.alpha_crc, "alpha")):
        part = bytes(data[pos:pos + length])
        if zlib.crc32(part) != crc:
            raise FormatError(f"corrupt .vq {what} (checksum mismatch)")
        parts.append(part)
        pos += length
    streams = []
    for s in range(stages):
        row = []
        for n in header.stream_words[s]:
            row.append(bytes(data[pos:pos + 4 * n]))
            pos += 4 * n
        if zlib.crc32(b"".join(row)) != header.stage_crcs[s]:
            raise FormatError(f"corrupt .vq payload (stage {s + 1} checksum mismatch)")
        streams.append(row)
    refined = []
    if refinement:
        pos = header.header_len + header.metadata_len + header.alpha_len + 4 * sum(map(sum, header.stream_words[:-1]))
        for n in header.stream_words[-1]:
            refined.append(bytes(data[pos:pos + 4 * n]))
            pos += 4 * n
        if zlib.crc32(b"".join(refined)) != header.stage_crcs[-1]:
            raise FormatError("corrupt .vq payload (refinement checksum mismatch)")
    layer = b""
    if colour:
        if not header.colour_block or stages != header.stages:
            raise ValueError("the colour layer is read with all of the file's stages, from a file that has one")
        if not header.colour_complete:
            raise TruncatedError("truncated .vq file (its colour layer is incomplete)")
        start = file_length(header) - 4 * header.colour_words
        layer = bytes(data[start:start + 4 * header.colour_words])
        if zlib.crc32(layer) != header.colour_crc:
            raise FormatError("corrupt .vq payload (colour layer checksum mismatch)")
    return Sections(parts[0], parts[1], streams, refined, layer)
