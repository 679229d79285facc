"""A seeded fuzzer for .vq decoding: mutate valid files, decode them, and sort every outcome.

    python benchmarks/fuzz.py                                  # 2000 cases, tiny random model, in-process
    python benchmarks/fuzz.py --cases 100000 --memory-limit 1024 --json benchmarks/results/fuzz_100k.json
    python benchmarks/fuzz.py --replay 1234 --write-case bad.vq   # one case again, with its traceback
    python benchmarks/fuzz.py --model default --cases 500      # the shipped model, on Kodak crops
    python benchmarks/fuzz.py --bomb --model default           # time the 44-byte bomb and two minimal claims
    python benchmarks/fuzz.py --families issue29 --cases 500   # only issue 29's families (or alphalie,exif, ...)
    python benchmarks/fuzz.py --cli                            # the CLI checks: 12 processes, about 25 s
    python benchmarks/fuzz.py --bars --json benchmarks/results/issue29_bars.json   # issue 29's bars, ~20 s

It first makes a small corpus of valid files (fixed: it does not depend on --seed): sizes from 1x1 and odd
sizes to many tiles (vqcodec.codec.TILE is set to 32 or 64 for some), every quality kind (coarse and full stages),
RGB, grayscale, 16-bit sources, transparency (RGBA, LA) and ICC / EXIF / XMP metadata. Every case then takes
one corpus file and applies one to three mutations:

- raw bytes: bit flips, byte changes, truncations, insertions, deletions, duplicated ranges, appended bytes,
  splices of two files, foreign or empty inputs;
- header fields rewritten (width, height, mode, depth, quality, stages, log2 f, tile, version, flags, name
  length, name, model hash, varint lengths: off by one, zero, huge, non-canonical, over-long);
- sections and streams rewritten and the table rebuilt to match: payload bytes, streams swapped between tiles
  and stages, streams grown or shrunk, the image resized (tiles replicated or filled with short streams), a
  large image claimed with the shortest streams the format allows (tile sides up to 512, which the reader must refuse above 128), metadata entries
  (types, lengths, order, truncation), the alpha PNG (corrupt, wrong size or mode, a 65535 x 65535 IHDR, an
  IDAT that inflates to 8 MiB);
- issue 29's families, each one change to a valid file with every CRC right, most with a known outcome:
  alphalie (the alpha PNG lies: fewer rows than its IHDR, the wrong size, not 8-bit grayscale, interlaced, an
  IDAT that inflates past the plane, a cut zlib stream, chunks missing or too long; and valid variants: split
  IDATs, stored blocks, alpha added to a grayscale file), metalie (metadata entries with lengths past the end,
  unknown, out-of-order or duplicated types, empty entries or section), exif (a broken EXIF in a valid
  metadata section: random bytes, TIFF headers with garbage, IFD offsets past the end or looping, bad types and
  counts) and junk (the valid-but-last-tile-junk bomb: the last tile's stream of a valid multi-tile file junk);

and most cases then get every checksum recomputed (section CRCs, stage CRCs, header CRC, found with a lenient
parse of the mutated bytes), so that they reach the checks behind the CRCs. A case decodes with
`codec.decompress(data)`, sometimes with a lower `quality=`. Outcomes:

- refused: a ValueError (FormatError, TruncatedError, ModelMismatchError and ImageError are ValueErrors);
- decoded: an image came back (its size must be the header's, its mode RGB, L, RGBA or LA, else BAD);
- BAD: any other exception (MemoryError included), the ValueError("not enough memory to ...") that vqcodec
  makes of an allocation failure (the case needed more memory than there was), a decode over
  --time-limit-per-case, or, with --memory-limit, a worker that died.

A case of a single mutation from a family that knows its outcome (and no quality=) must have that outcome, else
it is BAD as well: a lie that the spec refuses must raise a FormatError (else "Accepted" or "WrongRefusal"), a
valid variant must decode ("Refused"), an alpha plane that decodes must be the one written ("WrongAlpha"), and a
file whose only damage is its EXIF must decode and then be written as PNG, TIFF, JPEG and WebP by
vqcodec.images.save_image, as the CLI writes it ("SaveError"). The summary counts these cases ("expected").
--families NAME,... draws the mutations from those families only.

--cli runs, instead, a fixed set of checks through the real command (`python -m vqcodec.cli decompress`, a
process each, --jobs at a time): every kind of broken EXIF decoded to png, tiff, jpg and webp (exit 0, nothing
on stderr but "Note:" lines, each output an image of the right size; also a 70,000-byte random and a
70,000-byte valid EXIF, unless --no-big-exif), and special outputs: a FIFO and /dev/null with and without
--force and a symlink to a FIFO (exit 1, exactly one "Error: " line, the FIFO still a FIFO), /dev/stdout
(the image on standard output) and /dev/fd/1 (that, or one Error line).

Case k of a run with --seed S has the seed S * 10**7 + k; `--replay SEED` runs one case again and prints its
mutations and traceback (give --model and --memory-limit as the run had them). With --memory-limit MB, cases
run in a forked worker process under RLIMIT_AS = MB: the worker's whole address space, torch and the model
included (about 630 MB with the tiny model, 660 MB with the shipped one, before any case). The worker is
reused from case to case and restarted after a crash or a hang.

No mutated file is larger than MAX_CASE_BYTES = 16 KiB, 1.7 times the largest corpus file. Decode time grows
with what a file claims, and larger files would mostly measure that.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import io
import json
import platform
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vqcodec import colour, container  # noqa: E402  (no torch)
from vqcodec.container import FORMAT_VERSION, MAGIC  # noqa: E402
from vqcodec.images import pack_alpha  # noqa: E402  (no torch)

SEED_STRIDE = 10 ** 7            # case k of --seed S: S * SEED_STRIDE + k
FIXED_SIZE = struct.calcsize("<IIBBBBBH")   # width, height, mode, depth, quality, stages, log2 f, tile: 15 bytes
MAX_CASE_BYTES = 16 << 10        # mutations that grow a file stop here: 1.7 x the largest corpus file
KODAK = ROOT / "benchmarks" / "kodak" / "kodim23.png"
# The tiny model of issue 9 (channels 8/16, latent 4, 16 codes, 3 stages) plus two coarse levels and two refined
# levels, so that the coarse alphabets and the refinement (format 3) are fuzzed too. Qualities 1..7: stage 0
# limited to 4 or 8 codes, then 1, 2, 3 full stages, then refinement level 1 on 2 stages and level 2 on 3.
TINY_CONFIG = dict(name="tiny-fuzz", channels=(8, 16), latent_dim=4, codebook_size=16, num_stages=3,
                   prior_hidden=8, coarse_sizes=(4, 8), transform="conv", stage_gains=False, postfilter=0,
                   prior_stage_count=False, stage0_prior_kernel=0, stage0_prior_passes=0, refine_levels=2,
                   refine_dim=4, refine_hidden=8, vq_qualities=3, refine_ladder=((1, 2), (2, 3)))
INTERESTING_U32 = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 511, 512, 513, 1023,
                   1024, 1025, 4095, 4096, 11585, 16383, 16384, 32767, 32768, 65534, 65535, 65536, 1 << 20,
                   (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
INTERESTING_U8 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 32, 63, 64, 65, 127, 128, 129, 254, 255]


# --- the model and the corpus --------------------------------------------------------------------------------
def build_codec(model: str = "tiny"):
    import torch
    torch.set_num_threads(1)
    from vqcodec.codec import VQCodec, load_codec
    from vqcodec.config import ModelConfig
    if model == "tiny":
        return VQCodec.random(ModelConfig(**TINY_CONFIG), seed=0)
    return load_codec(None if model == "default" else model)


def _metadata_info(rng: np.random.Generator) -> dict:
    from PIL import ImageCms
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[24:36] = struct.pack(">6H", 2024, 9, 9, 0, 0, 0)   # its creation time: fixed, so the corpus is too
    icc = bytes(icc)
    exif = Image.Exif()
    exif[0x010F] = "vqcodec-fuzz"            # Make
    exif[0x0131] = "fuzz " + "x" * int(rng.integers(1, 40))
    exif[0x0112] = 1                         # orientation: upright
    xmp = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
           b"<rdf:RDF/></x:xmpmeta><?xpacket end=\"w\"?>")
    return {"icc_profile": icc, "exif": exif.tobytes(), "xmp": xmp}


def _image(rng: np.random.Generator, w: int, h: int, kind: str, meta: bool, source: np.ndarray | None):
    if source is not None:
        y, x = int(rng.integers(0, source.shape[0] - h + 1)), int(rng.integers(0, source.shape[1] - w + 1))
        rgb = source[y:y + h, x:x + w]
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([xx * 7 + yy, yy * 5, (xx + yy) * 3], -1) + rng.normal(0, 20, (h, w, 3))
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    # four levels (7 to 247): a plane of 256 random levels deflates to about w * h bytes, and made the
    # 144 x 144 RGBA file 23.5 KB, over MAX_CASE_BYTES, so that only mutations that shrink it were applied to it
    alpha = (rng.integers(0, 256, (h, w), dtype=np.uint8) >> 6) * 80 + 7     # never all opaque (then dropped)
    if kind == "RGB":
        im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    elif kind == "L":
        im = Image.fromarray(np.ascontiguousarray(rgb[..., 1]), "L")
    elif kind == "RGBA":
        im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif kind == "LA":
        im = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    elif kind == "I;16":
        im = Image.fromarray(rgb[..., 2].astype(np.uint16) * 257)   # mode I;16
    else:
        raise ValueError(kind)
    if meta:
        im.info.update(_metadata_info(rng))
    return im


# (width, height, mode, quality, tile, metadata); qualities are those of the tiny model (1..7; 6 and 7 refined).
# For another model the quality is scaled: q -> (1, 2, 3, 7, 12)[q - 1], 6 and 7 -> its top quality.
CORPUS_SPECS = [
    (1, 1, "RGB", 5, 128, False),
    (1, 1, "RGBA", 1, 128, True),
    (2, 3, "L", 3, 128, False),
    (7, 5, "LA", 2, 128, True),
    (37, 29, "RGB", 4, 128, True),
    (37, 29, "RGBA", 5, 128, False),
    (23, 19, "I;16", 3, 128, False),
    (64, 64, "RGB", 2, 32, False),         # exactly one 32 x 32 tile (the tiny model's f is 4)
    (132, 129, "RGB", 3, 32, False),       # 2 x 2 tiles, the right and bottom ones 1 position wide
    (260, 260, "RGB", 4, 32, False),       # 3 x 3 tiles
    (260, 70, "RGB", 1, 32, True),         # 3 x 1 tiles, coarse
    (144, 144, "RGBA", 4, 32, True),       # 2 x 2 tiles, 2 stages, alpha and metadata
    (520, 9, "L", 2, 32, False),           # 5 x 1 tiles
    (9, 400, "RGB", 5, 32, False),         # 1 x 4 tiles, 3 stages
    (300, 200, "L", 3, 64, True),          # 2 x 1 tiles of 64
    (37, 29, "RGB", 6, 128, True),         # refined, one tile
    (132, 129, "RGBA", 7, 32, False),      # refined, 2 x 2 tiles, alpha
]


@dataclass
class CorpusFile:
    name: str
    data: bytes


def build_corpus(codec, model: str = "tiny") -> list[CorpusFile]:
    """The valid files every case starts from: the same for every run of one model (seeded)."""
    import vqcodec.codec as codec_module
    rng = np.random.default_rng(20240909)
    source = np.asarray(Image.open(KODAK).convert("RGB")) if model != "tiny" else None
    top = max(codec.qualities)
    files = []
    old_tile, old_rate = codec_module.TILE, colour.MAX_BPP
    colour.MAX_BPP = float("inf")      # the tiny model's files are large: let the encoder try the layer anyway
    try:
        for w, h, kind, q, tile, meta in CORPUS_SPECS:
            if model != "tiny":
                q = min(top, (1, 2, 3, 7, 12, top, top)[q - 1])
            codec_module.TILE = tile
            data = codec.compress(_image(rng, w, h, kind, meta, source), q)
            head = container.unpack(data)
            name = (f"{w}x{h}-{kind}-q{q}-tile{tile}-{head.num_tiles}tiles"
                    + ("-meta" if head.metadata_len else "") + ("-alpha" if head.alpha_len else ""))
            files.append(CorpusFile(name, data))
    finally:
        codec_module.TILE, colour.MAX_BPP = old_tile, old_rate
    for f in files:  # every corpus file must decode
        im = codec.decompress(f.data)
        head = container.unpack(f.data)
        assert im.size == (head.width, head.height), f.name
    return files


# --- a lenient view of (possibly broken) .vq bytes: where each field and checksum is -----------------------
def _lenient_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = 0
    for i in range(5):
        if pos + i >= len(data):
            raise IndexError
        byte = data[pos + i]
        n |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return n, pos + i + 1
    return n, pos + 5


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass
class Layout:
    name_at: int
    name_len: int
    fixed_at: int                                       # width, height, mode, depth, quality, stages, log2f, tile
    fields: dict
    sections: list = field(default_factory=list)       # (varint offset, varint size, length, crc offset)
    table: list = field(default_factory=list)          # (offset, size, value): stage-major varints
    tile_sizes: list = field(default_factory=list)
    crcs_at: int = 0
    head_crc_at: int = 0
    rows: int = 0                                       # stages, and one more with a refinement
    colour: tuple | None = None                         # the colour layer's (varint offset, size, words, crc offset)

    @property
    def body_at(self) -> int:
        return self.head_crc_at + 4

    @property
    def ntiles(self) -> int:
        return len(self.tile_sizes)


FIELD_FORMAT = [("width", "<I", 0), ("height", "<I", 4), ("mode", "B", 8), ("depth", "B", 9),
                ("quality", "B", 10), ("stages", "B", 11), ("log2f", "B", 12), ("tile", "<H", 13)]


def read_layout(data: bytes) -> Layout | None:
    """Where the header's parts are, read without any validation; None where that cannot be worked out."""
    try:
        if len(data) < 7 + 8 + FIXED_SIZE:
            return None
        flags, n = data[5], data[6]
        fixed_at = 7 + n + 8
        if len(data) < fixed_at + FIXED_SIZE:
            return None
        values = struct.unpack_from("<IIBBBBBH", data, fixed_at)
        fields = dict(zip([f[0] for f in FIELD_FORMAT], values))
        lay = Layout(7, n, fixed_at, fields)
        pos = fixed_at + FIXED_SIZE
        if flags & container.FLAG_REFINE:
            pos += 2                                    # refinement level, values per position
        if flags & container.FLAG_COLOUR:
            pos += 2 + (3 if fields["mode"] == 0 else 1)   # block, step, a decay per channel
        for flag in (container.FLAG_METADATA, container.FLAG_ALPHA):
            if flags & flag:
                length, end = _lenient_varint(data, pos)
                lay.sections.append((pos, end - pos, length, end))
                pos = end + 4
        if flags & container.FLAG_COLOUR:
            length, end = _lenient_varint(data, pos)
            lay.colour = (pos, end - pos, length, end)
            pos = end + 4
        w, h, stages, log2f, tile = (fields[k] for k in ("width", "height", "stages", "log2f", "tile"))
        if not (w and h and tile and log2f <= 6):
            return None
        f = 1 << log2f
        gh, gw = -(-h // f), -(-w // f)
        if max(stages, 1) * -(-gh // tile) * -(-gw // tile) > len(data):
            return None
        lay.tile_sizes = [(min(y + tile, gh) - y) * (min(x + tile, gw) - x)
                          for y in range(0, gh, tile) for x in range(0, gw, tile)]
        lay.rows = stages + (1 if flags & container.FLAG_REFINE else 0)
        for _ in range(lay.rows * lay.ntiles):
            value, end = _lenient_varint(data, pos)
            lay.table.append((pos, end - pos, value))
            pos = end
        lay.crcs_at = pos
        lay.head_crc_at = pos + 4 * lay.rows
        return lay
    except (IndexError, struct.error):
        return None


def recrc(data: bytes) -> bytes:
    """Every checksum recomputed where the (lenient) layout places it: sections, stages, then the header."""
    lay = read_layout(data)
    if lay is None:
        return data
    out = bytearray(data)

    def put(at: int, value: int) -> None:
        if at + 4 <= len(out):
            out[at:at + 4] = struct.pack("<I", value)

    pos = lay.body_at
    for _, _, length, crc_at in lay.sections:
        put(crc_at, zlib.crc32(bytes(out[pos:pos + length])))
        pos += length
    for s in range(lay.rows):
        words = sum(v for _, _, v in lay.table[s * lay.ntiles:(s + 1) * lay.ntiles])
        put(lay.crcs_at + 4 * s, zlib.crc32(bytes(out[pos:pos + 4 * words])))
        pos += 4 * words
    if lay.colour is not None:
        put(lay.colour[3], zlib.crc32(bytes(out[pos:pos + 4 * lay.colour[2]])))
    put(lay.head_crc_at, zlib.crc32(bytes(out[:lay.head_crc_at])))
    return bytes(out)


# --- a structured view of a valid file, rebuilt with any field values ---------------------------------------
@dataclass
class Parts:
    version: int
    flags: int
    name: bytes
    name_len: int
    hash: bytes
    fields: dict
    metadata: bytes
    alpha: bytes
    streams: list                                       # [row][tile] -> bytes: the stages, then the refinement
    refine: bytes = b""                                 # refinement level and values per position (flag bit 2)
    colour_params: bytes = b""                          # colour layer block, step and decays (flag bit 3)
    colour: bytes = b""                                 # its stream

    @classmethod
    def of(cls, data: bytes) -> "Parts":
        head = container.unpack(data)
        whole = head.refine_complete and head.complete_stages == head.stages
        sec = container.sections(data, head, head.complete_stages, refinement=whole)
        lay = read_layout(data)
        refine = bytes([head.refine_level, head.refine_values]) if head.refine_level else b""
        params = bytes([head.colour_block, head.colour_step, *head.colour_decays]) if head.colour_block else b""
        layer = container.sections(data, head, head.stages, colour=True).colour if head.colour_complete else b""
        return cls(data[4], data[5], head.model_name.encode(), data[6], head.model_hash, dict(lay.fields),
                   sec.metadata, sec.alpha, [list(row) for row in sec.streams] + ([sec.refinement] if whole else []),
                   refine, params, layer)

    def grid_tiles(self) -> list[int] | None:
        f = self.fields
        if not (f["width"] and f["height"] and f["tile"] and f["log2f"] <= 6):
            return None
        d = 1 << f["log2f"]
        gh, gw, t = -(-f["height"] // d), -(-f["width"] // d), f["tile"]
        if -(-gh // t) * -(-gw // t) > 1 << 16:
            return None
        return [(min(y + t, gh) - y) * (min(x + t, gw) - x) for y in range(0, gh, t) for x in range(0, gw, t)]

    def build(self) -> bytes:
        f = self.fields
        head = bytearray(MAGIC + bytes([self.version & 255, self.flags & 255, self.name_len & 255]) + self.name
                         + self.hash)
        head += struct.pack("<IIBBBBBH", f["width"] & 0xFFFFFFFF, f["height"] & 0xFFFFFFFF, f["mode"] & 255,
                            f["depth"] & 255, f["quality"] & 255, f["stages"] & 255, f["log2f"] & 255,
                            f["tile"] & 0xFFFF)
        if self.flags & container.FLAG_REFINE:
            head += (self.refine + bytes(2))[:2]
        if self.flags & container.FLAG_COLOUR:
            n = 2 + (3 if f["mode"] == 0 else 1)
            head += (self.colour_params + bytes(n))[:n]
        body = b""
        for flag, section in ((container.FLAG_METADATA, self.metadata), (container.FLAG_ALPHA, self.alpha)):
            if self.flags & flag:
                head += varint(len(section)) + struct.pack("<I", zlib.crc32(section))
                body += section
        if self.flags & container.FLAG_COLOUR:
            head += varint(len(self.colour) // 4) + struct.pack("<I", zlib.crc32(self.colour))
        for row in self.streams:
            for stream in row:
                head += varint(len(stream) // 4)
        for row in self.streams:
            head += struct.pack("<I", zlib.crc32(b"".join(row)))
        head += struct.pack("<I", zlib.crc32(bytes(head)))
        return bytes(head) + body + b"".join(b"".join(row) for row in self.streams) + self.colour


# --- mutations -------------------------------------------------------------------------------------------
class Skip(Exception):
    """This mutation does not apply to these bytes; the case tries another."""


def _pos(rng: random.Random, data: bytes, head_bias: float = 0.5) -> int:
    lay = read_layout(data)
    if lay is not None and rng.random() < head_bias:
        return rng.randrange(min(len(data), lay.body_at))
    return rng.randrange(len(data))


def m_bitflip(rng, data, ctx):
    if not data:
        raise Skip
    out = bytearray(data)
    k = rng.choice([1, 1, 1, 2, 3, 8])
    where = []
    for _ in range(k):
        p = _pos(rng, data)
        b = rng.randrange(8)
        out[p] ^= 1 << b
        where.append(f"{p}.{b}")
    return bytes(out), f"bitflip@{','.join(where)}"


def m_byteset(rng, data, ctx):
    if not data:
        raise Skip
    out = bytearray(data)
    k = rng.choice([1, 1, 2, 4])
    where = []
    for _ in range(k):
        p = _pos(rng, data)
        v = rng.choice(INTERESTING_U8) if rng.random() < 0.6 else rng.randrange(256)
        out[p] = v
        where.append(f"{p}={v}")
    return bytes(out), f"byteset@{','.join(where)}"


def _boundaries(data: bytes) -> list[int]:
    lay = read_layout(data)
    if lay is None:
        return []
    cuts = [lay.fixed_at, lay.crcs_at, lay.head_crc_at, lay.body_at]
    pos = lay.body_at
    for _, _, length, _ in lay.sections:
        pos += length
        cuts.append(pos)
    for s in range(lay.rows):
        for _, _, v in lay.table[s * lay.ntiles:(s + 1) * lay.ntiles]:
            pos += 4 * v
            cuts.append(pos)
    return [c for c in cuts if 0 <= c <= len(data)]


def m_truncate(rng, data, ctx):
    cuts = _boundaries(data)
    if cuts and rng.random() < 0.5:
        n = rng.choice(cuts) + rng.choice([-1, 0, 0, 0, 1])
    else:
        n = rng.randrange(len(data) + 1)
    n = max(0, min(len(data), n))
    return data[:n], f"truncate@{n}"


def _random_bytes(rng, n):
    kind = rng.randrange(3)
    if kind == 0:
        return bytes(n)
    if kind == 1:
        return bytes([0xFF]) * n
    return bytes(rng.randrange(256) for _ in range(n))


def m_insert(rng, data, ctx):
    p = _pos(rng, data) if data else 0
    n = rng.choice([1, 1, 2, 3, 4, 4, 8, 16, 100])
    return data[:p] + _random_bytes(rng, n) + data[p:], f"insert@{p}+{n}"


def m_delete(rng, data, ctx):
    if not data:
        raise Skip
    p = _pos(rng, data)
    n = rng.choice([1, 1, 2, 3, 4, 4, 8, 16])
    return data[:p] + data[p + n:], f"delete@{p}-{n}"


def m_duplicate(rng, data, ctx):
    if not data:
        raise Skip
    a = rng.randrange(len(data))
    n = rng.randint(1, min(64, len(data) - a))
    b = rng.randrange(len(data) + 1)
    return data[:b] + data[a:a + n] + data[b:], f"duplicate[{a}:{a + n}]@{b}"


def m_append(rng, data, ctx):
    n = rng.choice([1, 3, 4, 4, 8, 64])
    return data + _random_bytes(rng, n), f"append+{n}"


def m_splice(rng, data, ctx):
    other_i = rng.randrange(len(ctx.corpus))
    other = ctx.corpus[other_i].data
    i = rng.randrange(len(data) + 1)
    j = rng.randrange(len(other) + 1)
    cuts = _boundaries(data), _boundaries(other)
    if cuts[0] and cuts[1] and rng.random() < 0.5:
        i, j = rng.choice(cuts[0]), rng.choice(cuts[1])
    return data[:i] + other[j:], f"splice[:{i}]+corpus{other_i}[{j}:]"


def m_foreign(rng, data, ctx):
    choices = [b"", MAGIC, MAGIC + b"\x02", MAGIC + bytes([1, 0, 7]) + b"vqf8-v1" + bytes(40),
               b"\x89PNG\r\n\x1a\n" + bytes(30), MAGIC + bytes(200), bytes(rng.randrange(256) for _ in range(64)),
               data[:4] + bytes(rng.randrange(256) for _ in range(rng.randrange(200)))]
    k = rng.randrange(len(choices))
    return choices[k], f"foreign{k}"


def m_field(rng, data, ctx):
    """One fixed header field set to an interesting value."""
    lay = read_layout(data)
    if lay is None:
        raise Skip
    name, fmt, off = rng.choice(FIELD_FORMAT + [("version", "B", -1), ("flags", "B", -2), ("name_len", "B", -3)])
    at = {-1: 4, -2: 5, -3: 6}.get(off, lay.fixed_at + off)
    old = struct.unpack_from(fmt, data, at)[0]
    if fmt == "<I":
        v = rng.choice(INTERESTING_U32 + [old + 1, old - 1, old * 2, old + 8, old - 8, old + 64])
    elif fmt == "<H":
        v = rng.choice(INTERESTING_U32[:24] + [old + 1, old - 1])
    else:
        v = rng.choice(INTERESTING_U8 + [old + 1, old - 1])
    mask = {"<I": 0xFFFFFFFF, "<H": 0xFFFF, "B": 0xFF}[fmt]
    out = bytearray(data)
    struct.pack_into(fmt, out, at, v & mask)
    return bytes(out), f"field:{name}={v & mask}"


NAMES = [b"vqf8-v3", b"tiny-fuzz", b"tiny-fuzz2", b"vqf8-v1", b"vqf8-v2", b"..", b".", b"a/b", b"x\n", b"-x",
         b"A" * 64, b"tiny-fuz", b"\x00" * 9, b"tiny fuzz", b"TINY-FUZZ"]


def m_name(rng, data, ctx):
    parts = ctx.parts(data)
    if parts is None:
        raise Skip
    kind = rng.randrange(3)
    if kind == 0:
        parts.name = rng.choice(NAMES)
        parts.name_len = len(parts.name)
        what = f"name={parts.name!r}"
    elif kind == 1:
        parts.name_len = rng.choice([0, 1, len(parts.name) - 1, len(parts.name) + 1, 64, 65, 255])
        what = f"name_len={parts.name_len}"
    else:
        h = bytearray(parts.hash)
        h[rng.randrange(8)] ^= 1 << rng.randrange(8)
        parts.hash = bytes(h)
        what = "hash-bit"
    return parts.build(), f"name:{what}"


def m_varint(rng, data, ctx):
    """One varint of the table (a section or stream length) rewritten."""
    lay = read_layout(data)
    if lay is None:
        raise Skip
    slots = [(at, size, v) for at, size, v, _ in lay.sections + ([lay.colour] if lay.colour else [])] + lay.table
    if not slots:
        raise Skip
    at, size, v = rng.choice(slots)
    kind = rng.randrange(9)
    if kind == 0:
        new = varint(max(0, v + rng.choice([-2, -1, 1, 2])))
    elif kind == 1:
        new = varint(0)
    elif kind == 2:
        new = varint(v * rng.choice([2, 16, 1000]))
    elif kind == 3:
        new = varint(rng.choice([(1 << 32) - 1, 1 << 31, 16 << 20, (16 << 20) + 1, 1 << 28]))
    elif kind == 4:
        new = varint(v)[:-1] + bytes([varint(v)[-1] | 0x80, 0x00])     # non-canonical: a trailing 0 group
    elif kind == 5:
        new = b"\xff\xff\xff\xff\x0f"                                   # 2**32 - 1 in 5 bytes
    elif kind == 6:
        new = b"\xff\xff\xff\xff\xff\x01"                               # 6 bytes: too long
    elif kind == 7:
        new = b"\x80\x80\x80\x80\x10"                                   # 2**32: out of range
    else:
        new = varint(v) + b"\x00"                                       # one byte too many after it
    return data[:at] + new + data[at + size:], f"varint@{at}:{v}->{new.hex()}"


def m_payload(rng, data, ctx):
    """Bytes inside one stream changed, lengths kept (the recomputed CRCs let it reach the range decoder)."""
    parts = ctx.parts(data)
    if parts is None or not parts.streams:
        raise Skip
    s = rng.randrange(len(parts.streams))
    t = rng.randrange(len(parts.streams[s]))
    stream = bytearray(parts.streams[s][t])
    kind = rng.randrange(5)
    if kind == 0:
        p = rng.randrange(len(stream))
        stream[p] ^= 1 << rng.randrange(8)
    elif kind == 1:
        p = rng.randrange(len(stream) // 4) * 4
        stream[p:p + 4] = _random_bytes(rng, 4)
    elif kind == 2:
        stream[:] = _random_bytes(rng, len(stream))
    elif kind == 3:
        stream[-4:] = _random_bytes(rng, 4)
    else:
        p = rng.randrange(len(stream))
        stream[p] = rng.randrange(256)
    parts.streams[s][t] = bytes(stream)
    return parts.build(), f"payload:s{s}t{t}k{kind}"


def m_streams(rng, data, ctx):
    """Streams swapped, grown, shrunk or replaced, with the table rebuilt to match."""
    parts = ctx.parts(data)
    if parts is None or not parts.streams:
        raise Skip
    S, T = len(parts.streams), len(parts.streams[0])
    s, t = rng.randrange(S), rng.randrange(T)
    kinds = ["grow", "zero"] + (["shrink"] if len(parts.streams[s][t]) > 4 else []) + \
        (["swap-tiles"] if T > 1 else []) + (["swap-stages", "move-stage"] if S > 1 else [])
    kind = rng.choice(kinds)
    if kind == "swap-tiles":
        u = rng.choice([x for x in range(T) if x != t])
        parts.streams[s][t], parts.streams[s][u] = parts.streams[s][u], parts.streams[s][t]
        what = f"swap-tiles s{s} t{t}<->t{u}"
    elif kind == "swap-stages":
        r = rng.choice([x for x in range(S) if x != s])
        parts.streams[s][t], parts.streams[r][t] = parts.streams[r][t], parts.streams[s][t]
        what = f"swap-stages t{t} s{s}<->s{r}"
    elif kind == "grow":
        n = rng.choice([1, 1, 2, 8])
        parts.streams[s][t] += _random_bytes(rng, 4 * n)
        what = f"grow s{s}t{t}+{n}w"
    elif kind == "shrink":
        n = rng.randint(1, len(parts.streams[s][t]) // 4 - 1)
        parts.streams[s][t] = parts.streams[s][t][:-4 * n] if rng.random() < 0.5 else parts.streams[s][t][4 * n:]
        what = f"shrink s{s}t{t}-{n}w"
    elif kind == "zero":
        parts.streams[s][t] = bytes(4 * rng.choice([1, 2, 3]))
        what = f"zero s{s}t{t}"
    else:
        r = rng.choice([x for x in range(S) if x != s])
        parts.streams.insert(r, parts.streams.pop(s))
        what = f"move-stage {s}->{r}"
    return parts.build(), f"streams:{what}"


def m_reshape(rng, data, ctx):
    """Width, height, tile side or stages changed and the table rebuilt for the new grid: streams taken from
    tiles of the same size (replicated), else short filler streams. Capped at MAX_CASE_BYTES."""
    parts = ctx.parts(data)
    if parts is None or not parts.streams:
        raise Skip
    f = parts.fields
    old_sizes = parts.grid_tiles()
    by_size = defaultdict(list)
    for t, size in enumerate(old_sizes):
        by_size[size].append(t)
    what = []
    for key in rng.sample(["width", "height", "tile", "stages"], rng.choice([1, 1, 1, 2, 2, 3])):
        if key in ("width", "height"):
            v = rng.choice([1, 2, 7, 8, 9, 63, 64, 65, 200, 513, 1024, 4096, 11585, 16384, 65535,
                            f[key] * 2, f[key] * 4, f[key] + 1, max(1, f[key] - 1), rng.randrange(1, 3000)])
        elif key == "tile":
            v = rng.choice([8, 8, 9, 16, 64, 128, 512, 513, 7, 0])
        else:
            v = rng.choice([1, 2, 3, 4, 64, 65, 0])
        f[key] = v
        what.append(f"{key}={v}")
    sizes = parts.grid_tiles()
    if sizes is None:
        raise Skip
    S = f["stages"] & 255
    filler = rng.randrange(3)   # 0: minimal zero streams, 1: random bytes, 2: copies of stream 0
    streams, total = [], 0
    for s in range(S):
        row = []
        src = parts.streams[min(s, len(parts.streams) - 1)]
        for size in sizes:
            same = by_size.get(size)
            if same and rng.random() < 0.9:
                stream = src[rng.choice(same)]
            elif filler == 2:
                stream = src[0]
            else:
                n = container.min_stream_words(size) if rng.random() < 0.8 else rng.randint(1, 4)
                stream = bytes(4 * n) if filler == 0 else _random_bytes(rng, 4 * n)
            total += len(stream) + 5
            if total > MAX_CASE_BYTES:
                raise Skip
            row.append(stream)
        streams.append(row)
    parts.streams = streams
    return parts.build(), f"reshape:{','.join(what)}:filler{filler}:{len(sizes)}tiles"


def m_claim(rng, data, ctx):
    """A large image claimed with the least payload the format allows: a big size, a big tile side, and every
    stream exactly min_stream_words long (zeros, random, or the first word repeated). The bomb with a table."""
    parts = ctx.parts(data)
    if parts is None or not parts.streams:
        raise Skip
    f = parts.fields
    f["width"] = rng.choice([1024, 2048, 4096, 4097, 8192, 11585, 16384])
    f["height"] = rng.choice([1024, 2048, 4096, 4097, 8192, 11585, 16384])
    f["tile"] = rng.choice([128, 256, 512, 512])
    sizes = parts.grid_tiles()
    filler = rng.randrange(3)
    streams, total = [], 0
    for _ in parts.streams:
        row = []
        for size in sizes:
            n = container.min_stream_words(size)
            stream = bytes(4 * n) if filler == 0 else _random_bytes(rng, 4 * n) if filler == 1 else \
                parts.streams[0][0][:4] * n
            total += len(stream) + 5
            if total > MAX_CASE_BYTES:
                raise Skip
            row.append(stream)
        streams.append(row)
    parts.streams = streams
    return parts.build(), f"claim:{f['width']}x{f['height']},tile={f['tile']}:filler{filler}:{len(sizes)}tiles"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def m_alpha(rng, data, ctx):
    """The alpha section rewritten (its CRC recomputed by the rebuild)."""
    parts = ctx.parts(data)
    if parts is None:
        raise Skip
    w, h = parts.fields["width"], parts.fields["height"]
    kind = rng.randrange(10)
    if kind in (3, 4, 5, 7, 8) and w * h > 1 << 20:
        raise Skip
    if kind == 0:
        alpha = parts.alpha or b"\x00"
        alpha = bytes([rng.choice([1, 2, 255])]) + alpha[1:]
        what = "method"
    elif kind == 1 and parts.alpha:
        a = bytearray(parts.alpha)
        a[rng.randrange(len(a))] ^= 1 << rng.randrange(8)
        alpha = bytes(a)
        what = "bitflip"
    elif kind == 2 and parts.alpha:
        alpha = parts.alpha[:rng.randrange(len(parts.alpha))]
        what = "truncate"
    elif kind == 3:
        alpha = b"\x00" + _png(np.zeros((max(1, h - 1), w + 1), np.uint8))
        what = "wrong-size"
    elif kind == 4:
        alpha = b"\x00" + _png(np.zeros((h, w, 3), np.uint8))
        what = "rgb"
    elif kind == 5:
        alpha = b"\x00" + _png(np.zeros((h, w), np.uint16))
        what = "16-bit"
    elif kind == 6:
        ihdr = struct.pack(">IIBBBBB", 65535, 65535, 8, 0, 0, 0, 0)
        idat = zlib.compress(bytes(65536), 9)
        alpha = (b"\x00\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                 + _png_chunk(b"IEND", b""))
        what = "65535x65535-ihdr"
    elif kind == 7:
        # the right size, but its IDAT inflates to far more than the image needs
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
        idat = zlib.compress(bytes(8 << 20), 9)
        alpha = (b"\x00\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                 + _png_chunk(b"IEND", b""))
        what = "inflate-bomb"
    elif kind == 8:
        alpha = b"\x00" + _png(np.full((h, w), 7, np.uint8))
        what = "valid-new"
    else:
        alpha = b"\x00" + _random_bytes(rng, rng.randrange(1, 64))
        what = "garbage"
    parts.alpha = alpha
    if rng.random() < 0.9:
        parts.flags |= container.FLAG_ALPHA
    return parts.build(), f"alpha:{what}"


def m_metadata(rng, data, ctx):
    """The metadata section rewritten (its CRC recomputed by the rebuild)."""
    parts = ctx.parts(data)
    if parts is None:
        raise Skip
    entries = []
    pos = 0
    meta = parts.metadata
    while pos + 5 <= len(meta):
        code, length = struct.unpack_from("<BI", meta, pos)
        entries.append([code, meta[pos + 5:pos + 5 + length]])
        pos += 5 + length
    if not entries:
        entries = [[1, b"icc"], [2, b"II*\x00\x08\x00\x00\x00\x00\x00"], [3, b"<x/>"]]
    kind = rng.randrange(8)
    raw_len = None
    if kind == 0:
        rng.shuffle(entries)
        what = "order"
    elif kind == 1:
        e = rng.choice(entries)
        e[0] = rng.choice([0, 4, 255, entries[0][0]])
        what = f"type={e[0]}"
    elif kind == 2:
        entries.append(list(rng.choice(entries)))
        what = "duplicate"
    elif kind == 3:
        rng.choice(entries)[1] = b""
        what = "empty-entry"
    elif kind == 4:
        raw_len = rng.choice([0, 1, 0xFFFFFFFF, 1 << 31, 16 << 20])
        what = f"entry-len={raw_len}"
    elif kind == 5:
        e = rng.choice(entries)
        e[1] = _random_bytes(rng, rng.randrange(1, 200))
        what = "garbage-content"
    elif kind == 6:
        entries = []
        what = "none"
    else:
        what = "truncate"
    out = b""
    for i, (code, body) in enumerate(entries):
        length = raw_len if (raw_len is not None and i == 0) else len(body)
        out += struct.pack("<BI", code & 255, length) + body
    if kind == 7 and out:
        out = out[:rng.randrange(len(out))]
    parts.metadata = out
    if rng.random() < 0.9:
        parts.flags |= container.FLAG_METADATA
    return parts.build(), f"metadata:{what}"


def m_flags(rng, data, ctx):
    """The flags changed, the sections kept or dropped to match (or not)."""
    parts = ctx.parts(data)
    if parts is None:
        raise Skip
    parts.flags = rng.choice([0, 1, 2, 3, 4, 8, 0x80, 0xFF, parts.flags ^ 1, parts.flags ^ 2, parts.flags ^ 8])
    if rng.random() < 0.5:
        parts.metadata = parts.metadata or b"\x03\x01\x00\x00\x00x"
        parts.alpha = parts.alpha or b"\x00"
    return parts.build(), f"flags={parts.flags:#x}"


def m_colour(rng, data, ctx):
    """The colour layer's block, step or a decay set to another value, or bytes of its stream changed (the
    checksums made right, so the case reaches the layer's own checks)."""
    parts = ctx.parts(data)
    if parts is None or not parts.colour_params:
        raise Skip
    kind = rng.randrange(3)
    if kind == 0:
        params = bytearray(parts.colour_params)
        i = rng.randrange(len(params))
        params[i] = rng.choice(INTERESTING_U8 + [params[i] + 1 & 255, params[i] - 1 & 255, 3, 4, 8, 9, 64, 65])
        parts.colour_params = bytes(params)
        what = f"param{i}={params[i]}"
    elif kind == 1 and parts.colour:
        stream = bytearray(parts.colour)
        p = rng.randrange(len(stream))
        stream[p] ^= 1 << rng.randrange(8)
        parts.colour = bytes(stream)
        what = f"stream-bit@{p}"
    else:
        parts.colour = parts.colour[:-4] if len(parts.colour) > 4 and rng.random() < 0.5 else parts.colour + bytes(4)
        what = f"stream-words={len(parts.colour) // 4}"
    return parts.build(), f"colour:{what}"


# --- issue 29's families: lying alpha and metadata sections, broken EXIF, the last-tile-junk bomb -------------
# Each of these starts from a valid file and changes one thing with every CRC made right, so a case reaches
# the check it is aimed at. Where the outcome is known (the spec refuses the lie, or the file is valid but for
# bytes the decoder does not interpret), the function returns it as a third value, and a case made of that one
# mutation (no quality=) must end that way: "refused" (a FormatError), "decoded", or "saved" (decoded, and then
# written as PNG, TIFF, JPEG and WebP by vqcodec.images.save_image without an exception, as the CLI writes it).
# A fourth value, an alpha plane, is what the decoded alpha must equal where the file decodes.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _ihdr(w: int, h: int, depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    return struct.pack(">IIBBBBB", w & 0xFFFFFFFF, h & 0xFFFFFFFF, depth, colour, 0, 0, interlace)


def _scanlines(plane: np.ndarray, filter_byte: int = 0) -> bytes:
    """An (H, W) uint8 plane -> PNG raw data: each row a filter byte (0: none) and its samples."""
    return b"".join(bytes([filter_byte]) + row.tobytes() for row in plane)


def _adam7(plane: np.ndarray) -> bytes:
    """The raw data of an interlaced (Adam7) 8-bit grayscale PNG: seven passes, empty ones left out."""
    out = b""
    for x0, y0, dx, dy in ADAM7:
        sub = plane[y0::dy, x0::dx]
        if sub.size:
            out += _scanlines(sub)
    return out


def _png_file(ihdr: bytes | None, zdata: bytes | None, idats: int = 1, before_idat: bytes = b"",
              after_idat: bytes = b"", iend: bool = True) -> bytes:
    """A PNG from its parts, every chunk CRC right: IHDR, ancillary chunks, the zlib data in `idats` IDAT chunks."""
    out = PNG_SIGNATURE + (_png_chunk(b"IHDR", ihdr) if ihdr is not None else b"") + before_idat
    if zdata is not None:
        step = max(1, -(-len(zdata) // max(1, idats)))
        out += b"".join(_png_chunk(b"IDAT", zdata[i:i + step]) for i in range(0, len(zdata), step)) or \
            _png_chunk(b"IDAT", b"")
    return out + after_idat + (_png_chunk(b"IEND", b"") if iend else b"")


def _alpha_plane(rng: random.Random, w: int, h: int) -> np.ndarray:
    """An alpha plane that deflates well (cases stay under MAX_CASE_BYTES): flat, a ramp, or a checkerboard."""
    yy, xx = np.mgrid[0:h, 0:w]
    kind = rng.randrange(3)
    if kind == 0:
        return np.full((h, w), rng.randrange(256), np.uint8)
    if kind == 1:
        return ((xx * 3 + yy * 5) % 256).astype(np.uint8)
    return (((xx // 4 + yy // 4) % 2) * 255).astype(np.uint8)


# name -> expected outcome of a file whose alpha section is this (None: either, as long as it is clean)
ALPHA_LIES = {
    "short-rows": "refused",        # the IHDR says the header's height, the zlib stream holds fewer rows (issue 29)
    "wrong-height": "refused",      # IHDR and rows agree, on another height than the header's
    "wrong-width": "refused",
    "transposed": "refused",
    "zero-size": "refused",
    "colour": "refused",            # RGB, LA, RGBA, palette, 1/2/4/16-bit grayscale, with rows of that kind
    "interlaced": None,             # a right Adam7 PNG: refusing it or decoding it right are both clean
    "inflate-bomb": "refused",      # the right IHDR, an IDAT that inflates past height * (width + 1)
    "truncated-idat": "refused",    # the zlib stream cut short, the chunk's length and CRC made right
    "idat-past-end": "refused",     # the PNG ends inside an IDAT chunk
    "no-idat": "refused",
    "no-ihdr": "refused",
    "no-iend": "refused",
    "long-ihdr": "refused",         # a 14-byte IHDR
    "bad-filter": "refused",        # a row filter type over 4
    "huge-chunk": "refused",        # an ancillary chunk whose length runs past the end
    "method": "refused",            # an unknown method byte before a valid PNG
    "empty": "refused",             # the method byte alone
    "not-png": "refused",
    "bad-adler": None,              # the zlib checksum wrong
    "chunk-crc": None,              # an IDAT chunk CRC wrong
    "second-zlib": None,            # a second zlib stream in a second IDAT after a whole one
    "ancillary": None,              # a tEXt chunk before the IDAT
    "after-iend": None,             # bytes after IEND
    "split-idat": "decoded",        # valid: the zlib stream across several IDAT chunks
    "stored": "decoded",            # valid: deflate level 0 (stored blocks)
    "on-gray": "decoded",           # valid: an alpha section added to a grayscale file without one (-> LA)
}
PNG_COLOURS = [(2, 8, 3), (4, 8, 2), (6, 8, 4), (3, 8, 1), (0, 16, 1), (0, 1, 1), (0, 2, 1), (0, 4, 1), (2, 16, 3)]


def alpha_lie(kind: str, plane: np.ndarray, rng: random.Random) -> bytes:
    """The alpha section (method byte and PNG) of one of ALPHA_LIES for a header of plane's size."""
    h, w = plane.shape
    raw = _scanlines(plane)
    good = zlib.compress(raw, 9)
    if kind == "short-rows":
        return b"\x00" + _png_file(_ihdr(w, h), zlib.compress(_scanlines(plane[:rng.randrange(h)]), 9))
    if kind == "wrong-height":
        rows = h + 1 if h == 1 or rng.random() < 0.5 else h - 1
        tall = np.vstack([plane, plane])[:rows]
        return b"\x00" + _png_file(_ihdr(w, rows), zlib.compress(_scanlines(tall), 9))
    if kind == "wrong-width" or (kind == "transposed" and w == h):
        cols = w + 1 if w == 1 or rng.random() < 0.5 else w - 1
        wide = np.hstack([plane, plane])[:, :cols]
        return b"\x00" + _png_file(_ihdr(cols, h), zlib.compress(_scanlines(wide), 9))
    if kind == "transposed":
        return b"\x00" + _png_file(_ihdr(h, w), zlib.compress(_scanlines(np.ascontiguousarray(plane.T)), 9))
    if kind == "zero-size":
        return b"\x00" + _png_file(_ihdr(*rng.choice([(0, 0), (0, h), (w, 0)])), zlib.compress(b"", 9))
    if kind == "colour":
        colour, depth, channels = rng.choice(PNG_COLOURS)
        row = bytes(-(-w * channels * depth // 8))
        plte = _png_chunk(b"PLTE", bytes(range(0, 255, 85)) * 3) if colour == 3 else b""
        return b"\x00" + _png_file(_ihdr(w, h, depth, colour), zlib.compress((b"\x00" + row) * h, 9), before_idat=plte)
    if kind == "interlaced":
        return b"\x00" + _png_file(_ihdr(w, h, interlace=1), zlib.compress(_adam7(plane), 9))
    if kind == "inflate-bomb":
        extra = rng.choice([1, w + 1, len(raw), (8 << 20) - len(raw)])
        z = zlib.compressobj(9)
        return b"\x00" + _png_file(_ihdr(w, h), z.compress(raw) + z.compress(bytes(extra)) + z.flush(),
                                   idats=rng.choice([1, 1, 3]))
    if kind == "truncated-idat":
        return b"\x00" + _png_file(_ihdr(w, h), good[:rng.randrange(len(good))])
    if kind == "idat-past-end":
        png = _png_file(_ihdr(w, h), good, iend=False)
        return b"\x00" + png[:rng.randrange(len(png) - len(good) - 4, len(png))]
    if kind == "no-idat":
        return b"\x00" + _png_file(_ihdr(w, h), None)
    if kind == "no-ihdr":
        return b"\x00" + _png_file(None, good)
    if kind == "no-iend":
        return b"\x00" + _png_file(_ihdr(w, h), good, iend=False)
    if kind == "long-ihdr":
        return b"\x00" + _png_file(_ihdr(w, h) + b"\x00", good)
    if kind == "bad-filter":
        rows = bytearray(raw)
        rows[rng.randrange(h) * (w + 1)] = rng.choice([5, 6, 128, 255])
        return b"\x00" + _png_file(_ihdr(w, h), zlib.compress(bytes(rows), 9))
    if kind == "huge-chunk":
        chunk = struct.pack(">I", rng.choice([0xFFFFFFFF, 1 << 31, 1 << 20])) + b"tEXt" + b"k\x00v"
        return b"\x00" + _png_file(_ihdr(w, h), good, before_idat=chunk)
    if kind == "method":
        return bytes([rng.choice([1, 2, 0x89, 255])]) + _png_file(_ihdr(w, h), good)
    if kind == "empty":
        return b"\x00"
    if kind == "not-png":
        return b"\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == "bad-adler":
        return b"\x00" + _png_file(_ihdr(w, h), good[:-1] + bytes([good[-1] ^ 1]))
    if kind == "chunk-crc":
        png = bytearray(_png_file(_ihdr(w, h), good))
        png[-13] ^= 1    # the last byte of the IDAT chunk's CRC (IEND is the last 12 bytes)
        return b"\x00" + bytes(png)
    if kind == "second-zlib":
        return b"\x00" + _png_file(_ihdr(w, h), good, after_idat=_png_chunk(b"IDAT", zlib.compress(raw, 9)))
    if kind == "ancillary":
        return b"\x00" + _png_file(_ihdr(w, h), good, before_idat=_png_chunk(b"tEXt", b"Comment\x00fuzz"))
    if kind == "after-iend":
        return b"\x00" + _png_file(_ihdr(w, h), good) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    if kind == "split-idat":
        return b"\x00" + _png_file(_ihdr(w, h), good, idats=rng.choice([2, 3, 7, len(good)]))
    if kind in ("stored", "on-gray"):
        return b"\x00" + _png_file(_ihdr(w, h), zlib.compress(raw, 0 if kind == "stored" else 9))
    raise ValueError(kind)


def m_alphalie(rng, data, ctx):
    """The alpha section replaced by one that lies about its plane (or by a valid one written differently)."""
    parts = ctx.parts(data)
    if parts is None:
        raise Skip
    w, h = parts.fields["width"], parts.fields["height"]
    if not 0 < w * h <= 1 << 20:
        raise Skip
    kind = rng.choice(sorted(ALPHA_LIES))
    if kind == "on-gray" and (parts.fields["mode"] != 1 or parts.flags & container.FLAG_ALPHA):
        raise Skip
    plane = _alpha_plane(rng, w, h)
    parts.alpha = alpha_lie(kind, plane, rng)
    parts.flags |= container.FLAG_ALPHA
    return parts.build(), f"alphalie:{kind}", ALPHA_LIES[kind], plane


def _meta_entries(meta: bytes) -> list[list]:
    """A valid metadata section -> [[type, bytes], ...] (a lenient parse: what it can read)."""
    entries, pos = [], 0
    while pos + 5 <= len(meta):
        code, length = struct.unpack_from("<BI", meta, pos)
        entries.append([code, meta[pos + 5:pos + 5 + length]])
        pos += 5 + length
    return entries


def _meta_section(entries, lengths: dict | None = None) -> bytes:
    lengths = lengths or {}
    return b"".join(struct.pack("<BI", code & 255, lengths.get(i, len(body)) & 0xFFFFFFFF) + body
                    for i, (code, body) in enumerate(entries))


_VALID_EXIF: bytes | None = None


def valid_exif() -> bytes:
    """A small valid EXIF (Make, Software, orientation 1), as Pillow writes it."""
    global _VALID_EXIF
    if _VALID_EXIF is None:
        exif = Image.Exif()
        exif[0x010F] = "vqcodec-fuzz"
        exif[0x0131] = "fuzz"
        exif[0x0112] = 1
        _VALID_EXIF = exif.tobytes()
    return _VALID_EXIF


SYNTHETIC_METADATA = [[1, b"not an ICC profile: the decoder keeps it as bytes"], [2, b""], [3, b"<x:xmpmeta/>"]]
METADATA_LIES = ["len-past-end", "len-past-end-middle", "unknown-type", "out-of-order", "duplicate",
                 "zero-length", "incomplete-entry", "empty-section", "subset"]


def m_metalie(rng, data, ctx):
    """The metadata section rewritten to break exactly one of its rules (types rising, each at most once, none
    empty, lengths inside the section), the rest valid; "subset" keeps it valid (some entries dropped)."""
    parts = ctx.parts(data)
    if parts is None:
        raise Skip
    entries = _meta_entries(parts.metadata) if parts.flags & container.FLAG_METADATA else []
    if not entries:
        entries = [[c, b or valid_exif()] for c, b in SYNTHETIC_METADATA]
        entries = sorted(rng.sample(entries, rng.randint(1, 3)))
    kind = rng.choice(METADATA_LIES)
    lengths, expect = {}, "refused"
    if kind == "len-past-end":
        lengths[len(entries) - 1] = len(entries[-1][1]) + rng.choice([1, 2, 5, 100, 1 << 20]) \
            if rng.random() < 0.7 else rng.choice([0xFFFFFFFF, 1 << 31, 16 << 20])
    elif kind == "len-past-end-middle":
        i = rng.randrange(len(entries))
        rest = sum(5 + len(b) for _, b in entries[i + 1:])
        lengths[i] = len(entries[i][1]) + rest + rng.choice([1, 3, 4096])
    elif kind == "unknown-type":
        rng.choice(entries)[0] = rng.choice([0, 4, 5, 9, 127, 128, 254, 255])
    elif kind == "out-of-order":
        if len(entries) < 2:
            entries.append([3 if entries[0][0] != 3 else 1, b"<x:xmpmeta/>"])
            entries.sort()
        i = rng.randrange(len(entries) - 1)
        entries[i], entries[i + 1] = entries[i + 1], entries[i]
    elif kind == "duplicate":
        i = rng.randrange(len(entries))
        twin = [entries[i][0], entries[i][1] if rng.random() < 0.5 else b"other bytes"]
        entries.insert(i + 1, twin)
    elif kind == "zero-length":
        rng.choice(entries)[1] = b""
    elif kind == "incomplete-entry":
        entries.append([rng.choice([1, 2, 3, 4]), b""])
        section = _meta_section(entries)[:-rng.randint(1, 4)]
    elif kind == "subset":
        entries = sorted(rng.sample(entries, rng.randint(1, len(entries))))
        expect = "decoded"
    if kind == "empty-section":
        section = b""
    elif kind != "incomplete-entry":
        section = _meta_section(entries, lengths)
    parts.metadata = section
    parts.flags |= container.FLAG_METADATA
    return parts.build(), f"metalie:{kind}", expect, None


EXIF_KINDS = ["random", "garbage", "tiff-garbage", "ifd-past-end", "ifd-loop", "ifd-loop-2", "subifd-loop",
              "gps-loop", "subifd-past-end", "value-past-end", "count-huge", "entries-huge", "bad-type",
              "zero-denominator", "next-past-end", "exif-prefix", "header-only", "valid-flipped", "valid-truncated",
              "orientation"]


def broken_exif(kind: str, rng: random.Random, valid: bytes | None = None) -> bytes:
    """EXIF bytes of one of EXIF_KINDS (never empty): random bytes, or a TIFF structure ("II*\\0" / "MM\\0*")
    with garbage, offsets past the end, loops, bad types and counts, or a valid EXIF damaged."""
    valid = valid or valid_exif()
    bo = rng.choice("<>")
    head = b"II*\x00" if bo == "<" else b"MM\x00*"

    def tiff(offset: int, body: bytes = b"") -> bytes:
        return head + struct.pack(bo + "I", offset & 0xFFFFFFFF) + body

    def ifd(entries, next_offset: int = 0) -> bytes:
        return (struct.pack(bo + "H", len(entries))
                + b"".join(struct.pack(bo + "HHII", *e) for e in entries) + struct.pack(bo + "I", next_offset))

    if kind == "random":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    if kind == "garbage":
        return b"garbage"              # issue 29's 68-byte file
    if kind == "tiff-garbage":
        return head + bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if kind == "ifd-past-end":
        return tiff(rng.choice([9, 100, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
    if kind == "ifd-loop":
        return tiff(8, ifd([(0x0112, 3, 1, 1)], 8))
    if kind == "ifd-loop-2":
        return tiff(8, ifd([(0x0112, 3, 1, 1)], 26) + ifd([(0x010F, 2, 4, 0x41414141)], 8))
    if kind in ("subifd-loop", "gps-loop"):
        return tiff(8, ifd([(0x8769 if kind == "subifd-loop" else 0x8825, 4, 1, 8)]))
    if kind == "subifd-past-end":
        return tiff(8, ifd([(rng.choice([0x8769, 0x8825, 0xA005]), 4, 1, rng.choice([27, 0xFFFF, 0xFFFFFFF0]))]))
    if kind == "value-past-end":
        return tiff(8, ifd([(0x010F, 2, rng.choice([5, 100, 1 << 16]), rng.choice([26, 5000, 0xFFFFFFF0]))]))
    if kind == "count-huge":
        return tiff(8, ifd([(rng.choice([0x010F, 0x0112, 0x011A]), rng.choice([2, 3, 5]), 0xFFFFFFFF, 26)]))
    if kind == "entries-huge":
        return tiff(8, struct.pack(bo + "H", rng.choice([0xFFFF, 1000, 2])) + bytes(rng.randint(0, 14)))
    if kind == "bad-type":
        return tiff(8, ifd([(0x0112, rng.choice([0, 13, 99, 0xFFFF]), 1, 6)]))
    if kind == "zero-denominator":
        return tiff(8, ifd([(0x011A, 5, 1, 38), (0x011B, 10, 1, 46)]) + struct.pack(bo + "IIiI", 72, 0, -1, 0))
    if kind == "next-past-end":
        return tiff(8, ifd([(0x0112, 3, 1, 1)], rng.choice([27, 0x7FFFFFFF, 0xFFFFFFFF])))
    if kind == "exif-prefix":
        return b"Exif\x00\x00" + tiff(rng.choice([8, 0xFFFF]))
    if kind == "header-only":
        return rng.choice([head, head[:2], head[:3], tiff(8)])
    if kind == "valid-flipped":
        out = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "valid-truncated":
        return valid[:rng.randrange(1, len(valid))]
    if kind == "orientation":   # valid, with an orientation vqcodec never writes (the spec says 1)
        exif = Image.Exif()
        exif.load(valid_exif())
        exif[0x0112] = rng.choice([0, 2, 6, 8, 9, 65535])
        return exif.tobytes()
    raise ValueError(kind)


def with_exif(parts: Parts, exif: bytes) -> None:
    """parts' metadata section with its EXIF entry (type 2) replaced or added, the other entries kept."""
    entries = [e for e in _meta_entries(parts.metadata) if e[0] != 2] if parts.flags & container.FLAG_METADATA \
        else []
    parts.metadata = _meta_section(sorted(entries + [[2, exif]]))
    parts.flags |= container.FLAG_METADATA


def m_exif(rng, data, ctx):
    """A broken EXIF inside an otherwise valid metadata section: the file must decode, and save to every format."""
    parts = ctx.parts(data)
    if parts is None:
        raise Skip
    old = dict(_meta_entries(parts.metadata)).get(2) if parts.flags & container.FLAG_METADATA else None
    kind = rng.choice(EXIF_KINDS)
    with_exif(parts, broken_exif(kind, rng, old))
    return parts.build(), f"exif:{kind}", "saved", None


JUNK_FILLS = {"zeros": lambda n: bytes(n), "ones": lambda n: b"\xff" * n,
              "pattern": lambda n: b"\xde\xad\xbe\xef" * (n // 4)}


def m_junk(rng, data, ctx):
    """The valid-but-last-tile-junk bomb: a valid file of several tiles whose last tile's stream (in the last
    stage, or another) is junk of the same length, CRCs made right; refused (FormatError) after the tiles before
    it are decoded."""
    parts = ctx.parts(data)
    if parts is None or not parts.streams or len(parts.streams[0]) < 2:
        raise Skip
    stage = -1 if rng.random() < 0.7 else rng.randrange(len(parts.streams))
    fill = rng.choice(sorted(JUNK_FILLS))
    return last_tile_junk(data, stage, fill), f"junk:stage{stage % len(parts.streams)}:{fill}", "refused", None


# (function, weight, fix the checksums afterwards with probability)
MUTATIONS = [
    (m_bitflip, 10, 0.6), (m_byteset, 8, 0.6), (m_truncate, 6, 0.3), (m_insert, 4, 0.5), (m_delete, 4, 0.5),
    (m_duplicate, 3, 0.5), (m_append, 2, 0.5), (m_splice, 4, 0.5), (m_foreign, 1, 0.0),
    (m_field, 10, 1.0), (m_name, 3, 1.0), (m_varint, 7, 1.0), (m_payload, 10, 1.0), (m_streams, 7, 1.0),
    (m_reshape, 6, 1.0), (m_claim, 1, 1.0), (m_alpha, 5, 1.0), (m_metadata, 5, 1.0), (m_flags, 3, 1.0),
    (m_alphalie, 4, 1.0), (m_metalie, 3, 1.0), (m_exif, 3, 1.0), (m_junk, 2, 1.0), (m_colour, 4, 1.0),
]
# a family's name is its function's without m_ (and the word each of its steps' descriptions begins with)
FAMILIES = {m.__name__[2:]: m for m, _, _ in MUTATIONS}
FAMILY_GROUPS = {"issue29": ["alphalie", "metalie", "exif", "junk"]}


def parse_families(text: str | None) -> list[str] | None:
    """--families NAME,NAME (or a group, issue29) -> the names; None (all families) for None or "all"."""
    if text is None or text == "all":
        return None
    names = []
    for name in filter(None, (x.strip() for x in text.split(","))):
        for n in FAMILY_GROUPS.get(name, [name]):
            if n not in FAMILIES:
                raise ValueError(f"unknown mutation family {n!r} (one of {', '.join(FAMILIES)}, "
                                 f"or {', '.join(FAMILY_GROUPS)})")
            names.append(n)
    return names


class Context:
    def __init__(self, corpus: list[CorpusFile]):
        self.corpus = corpus

    @staticmethod
    def parts(data: bytes) -> Parts | None:
        try:
            return Parts.of(data)
        except (ValueError, AttributeError, TypeError, IndexError, struct.error):
            return None


@dataclass
class Case:
    seed: int
    base: int
    data: bytes
    quality: int | None
    steps: list
    expect: str | None = None          # refused (a FormatError) | decoded | saved | None (either, cleanly)
    alpha: np.ndarray | None = field(default=None, repr=False)   # the alpha plane a decode must give

    @property
    def description(self) -> str:
        q = "" if self.quality is None else f" quality={self.quality}"
        e = "" if self.expect is None else f" (must be {self.expect})"
        return f"corpus{self.base}: " + " | ".join(self.steps) + q + e


def make_case(seed: int, corpus: list[CorpusFile], families: list[str] | None = None) -> Case:
    """Case `seed`: a corpus file and one to three mutations drawn from `families` (None: all, by weight).
    A case of one mutation that knows its outcome, with no quality=, carries that outcome as `expect`."""
    rng = random.Random(seed)
    ctx = Context(corpus)
    base = rng.randrange(len(corpus))
    data = corpus[base].data
    steps, known = [], []
    table = MUTATIONS if families is None else [t for t in MUTATIONS if t[0].__name__[2:] in families]
    funcs = [m for m, _, _ in table]
    weights = [w for _, w, _ in table]
    fix = {m: p for m, _, p in table}
    n = rng.choices([1, 2, 3], [6, 3, 1])[0]
    tries = 0
    while len(steps) < n and tries < 20:
        tries += 1
        m = rng.choices(funcs, weights)[0]
        try:
            new, what, *outcome = m(rng, data, ctx)
        except Skip:
            continue
        if len(new) > MAX_CASE_BYTES:
            continue
        if rng.random() < fix[m]:
            new = recrc(new)
            what += "+crc"
        data = new
        steps.append(what)
        known.append((outcome + [None, None])[:2])
    quality = None
    if rng.random() < 0.25:
        quality = rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 0, 6, 13])
    expect, alpha = known[0] if len(steps) == 1 and quality is None else (None, None)
    return Case(seed, base, data, quality, steps, expect, alpha)


# --- running cases ----------------------------------------------------------------------------------------
class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException, so that no `except Exception` in the library swallows it."""


def _alarm(signum, frame):
    raise CaseTimeout()


def message_prefix(message: str, n: int = 70) -> str:
    """A message with its numbers, quoted values, model names and hex replaced, so that like messages count
    together."""
    line = (message.splitlines() or [""])[0]
    line = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", line)
    line = re.sub(r"\b[0-9a-f]{16}\b", "<hash>", line)
    line = re.sub(r"\bmodel [A-Za-z0-9._-]+ \(weights", "model <name> (weights", line)
    line = re.sub(r"\bflags 0x[0-9a-f]+", "flags <hex>", line)
    line = re.sub(r"\d+", "N", line)
    return line[:n]


SAVE_FORMATS = ("PNG", "TIFF", "JPEG", "WEBP")


def check_decoded(case: Case, image) -> tuple | None:
    """What is wrong with a decode of `case`, as (type, message[, traceback]); None if nothing. The image must
    have the header's size and a mode the codec gives; a case that must be refused must not decode; a decoded
    alpha plane must be the one the case wrote; a case that must save is written in every SAVE_FORMATS."""
    head = container.unpack(case.data)
    if image.size != (head.width, head.height) or image.mode not in ("RGB", "L", "RGBA", "LA"):
        return "WrongImage", f"decoded {image.size} {image.mode}, header {head.width}x{head.height}"
    if case.expect == "refused":
        return "Accepted", f"decoded a file that must be refused ({image.mode} {image.width}x{image.height})"
    if case.alpha is not None:
        if image.mode not in ("RGBA", "LA"):
            return "WrongAlpha", f"decoded {image.mode}: the file's alpha plane is lost"
        got = np.asarray(image.getchannel("A"))
        if got.shape != case.alpha.shape or not np.array_equal(got, case.alpha):
            wrong = int((got != case.alpha).sum()) if got.shape == case.alpha.shape else got.size
            return "WrongAlpha", f"{wrong} of {case.alpha.size} alpha values differ from the file's plane"
    if case.expect == "saved":
        import warnings

        from vqcodec.images import save_image
        for fmt in SAVE_FORMATS:
            try:
                with warnings.catch_warnings():   # the CLI turns warnings into notes; an exception is an Error
                    warnings.simplefilter("ignore")
                    save_image(image, io.BytesIO(), fmt, [])
            except Exception as e:  # noqa: BLE001
                return ("SaveError", f"{fmt}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}",
                        traceback.format_exc(limit=-6))
    return None


def run_case(codec, case: Case, time_limit: float) -> dict:
    """Decode one case: {"outcome": refused | decoded | bad, "type", "message", "seconds"}."""
    result = {"seed": case.seed, "mutation": case.description, "bytes": len(case.data), "expect": case.expect}
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    t = time.perf_counter()
    try:
        image = codec.decompress(case.data, quality=case.quality)
        elapsed = time.perf_counter() - t
        problem = check_decoded(case, image)     # under the alarm still: saving is part of the case
        signal.setitimer(signal.ITIMER_REAL, 0)
        if problem:
            result.update(outcome="bad", type=problem[0], message=problem[1])
            if len(problem) > 2:
                result["traceback"] = problem[2]
        else:
            result.update(outcome="decoded", type="", message="")
    except CaseTimeout:
        elapsed = time.perf_counter() - t
        result.update(outcome="bad", type="Timeout", message=f"over the {time_limit:g} s limit")
    except BaseException as e:  # noqa: BLE001: everything is sorted, nothing escapes
        elapsed = time.perf_counter() - t
        signal.setitimer(signal.ITIMER_REAL, 0)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        message = str(e).splitlines()[0] if str(e) else ""
        ok = isinstance(e, ValueError) and not isinstance(e, MemoryError)
        # vqcodec turns allocation failures into ValueError("not enough memory to ..."): a clean message, but
        # the case went over the memory there is (or --memory-limit), which is what the fuzzer looks for
        out_of_memory = ok and message.startswith("not enough memory")
        kind = "OutOfMemory" if out_of_memory else type(e).__name__
        result.update(outcome="refused" if ok and not out_of_memory else "bad", type=kind, message=message)
        if not ok:
            result["traceback"] = traceback.format_exc(limit=-6)
        elif result["outcome"] == "refused" and case.expect in ("decoded", "saved"):
            result.update(outcome="bad", type="Refused", message=f"a valid file refused: {kind}: {message}")
        elif result["outcome"] == "refused" and case.expect == "refused" and not isinstance(e, container.FormatError):
            result.update(outcome="bad", type="WrongRefusal", message=f"{kind}, not a FormatError: {message}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if result["outcome"] != "bad" and elapsed > time_limit:
        result.update(outcome="bad", type="Slow", message=f"took {elapsed:.2f} s (limit {time_limit:g} s)")
    result["seconds"] = elapsed
    return result


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def measured_case(codec, case: Case, time_limit: float) -> dict:
    """run_case, with the process's peak RSS after it and how much this case raised it."""
    before = maxrss_mb()
    result = run_case(codec, case, time_limit)
    result["maxrss_mb"] = maxrss_mb()
    result["rss_growth_mb"] = result["maxrss_mb"] - before
    return result


def _worker(conn, codec, corpus, time_limit: float, memory_mb: int | None, families=None) -> None:
    if memory_mb:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for f in corpus:   # warm up, so that a case's RSS growth is its own
        codec.decompress(f.data)
    while True:
        try:
            seed = conn.recv()
        except EOFError:
            return
        if seed is None:
            return
        conn.send(measured_case(codec, make_case(seed, corpus, families), time_limit))


class WorkerPool:
    """One forked worker (the model and corpus inherited), reused; restarted after a crash or a hang."""

    def __init__(self, codec, corpus, time_limit: float, memory_mb: int | None, families=None):
        import multiprocessing as mp
        self.mp = mp.get_context("fork")
        self.args = (codec, corpus, time_limit, memory_mb, families)
        self.time_limit = time_limit
        self.proc = None
        self.restarts = 0
        self.children_maxrss_mb = 0.0

    def _start(self):
        parent, child = self.mp.Pipe()
        self.proc = self.mp.Process(target=_worker, args=(child,) + self.args, daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def _stop(self, kill: bool):
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()
        self.proc = None
        self.children_maxrss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    def run(self, seed: int, description) -> dict:
        if self.proc is None:
            self._start()
        self.conn.send(seed)
        t = time.perf_counter()
        if self.conn.poll(self.time_limit + 30):
            try:
                return self.conn.recv()
            except EOFError:
                pass
            self.proc.join(5)
            code = self.proc.exitcode
            what = f"worker died (exit code {code})" if code is None or code >= 0 else \
                f"worker died ({signal.Signals(-code).name})"
            kind = "WorkerDied"
        else:
            what, kind = f"worker hung for {time.perf_counter() - t:.0f} s and was killed", "Hung"
        self._stop(kill=True)
        self.restarts += 1
        return {"seed": seed, "mutation": description(), "outcome": "bad", "type": kind, "message": what,
                "seconds": time.perf_counter() - t}

    def close(self):
        self._stop(kill=False)


# --- a run and its summary --------------------------------------------------------------------------------
def environment() -> dict:
    import PIL
    import torch
    from importlib.metadata import version
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__, "pillow": PIL.__version__, "constriction": version("constriction"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def fuzz(codec, corpus, cases: int, seed: int = 0, time_limit: float = 2.0, memory_mb: int | None = None,
         progress=None, model: str = "tiny", families: list[str] | None = None) -> dict:
    """Run `cases` cases (their mutations drawn from `families`, None: all); returns the summary (see --json)."""
    import torch
    torch.set_num_threads(1)
    outcomes, types, messages = Counter(), Counter(), Counter()
    by_mutation, expected = defaultdict(Counter), defaultdict(Counter)
    bad, slowest = [], []
    pool = WorkerPool(codec, corpus, time_limit, memory_mb, families) if memory_mb else None
    rss_before = maxrss_mb()
    peak = rss_before if pool is None else 0.0     # with workers: theirs
    growth = None
    start = time.perf_counter()
    total_case_s = 0.0
    try:
        for k in range(cases):
            case_seed = seed * SEED_STRIDE + k
            if pool is None:
                r = measured_case(codec, make_case(case_seed, corpus, families), time_limit)
            else:
                r = pool.run(case_seed, lambda: make_case(case_seed, corpus, families).description)
            if "maxrss_mb" in r:
                peak = max(peak, r["maxrss_mb"])
                if r["rss_growth_mb"] > 0 and (growth is None or r["rss_growth_mb"] > growth["grew_mb"]):
                    growth = {"seed": r["seed"], "mutation": r["mutation"], "grew_mb": round(r["rss_growth_mb"], 1),
                              "to_mb": round(r["maxrss_mb"], 1)}
            total_case_s += r["seconds"]
            outcomes[r["outcome"]] += 1
            if r.get("expect"):
                expected[r["expect"]][r["outcome"]] += 1
            if r["type"]:
                types[r["type"]] += 1
                messages[f"{r['type']}: {message_prefix(r['message'])}"] += 1
            for step in r["mutation"].split(": ", 1)[1].split(" | "):
                kind = re.match(r"[a-z]*", step).group() or "none"
                by_mutation[kind][r["outcome"]] += 1
            if r["outcome"] == "bad":
                bad.append({k2: r[k2] for k2 in ("seed", "mutation", "type", "message", "seconds", "traceback")
                            if k2 in r})
            slowest.append({"seconds": round(r["seconds"], 4), "seed": r["seed"], "mutation": r["mutation"],
                            "outcome": r["outcome"], "type": r["type"], "bytes": r.get("bytes")})
            slowest = sorted(slowest, key=lambda x: -x["seconds"])[:5]
            if progress and (k + 1) % progress == 0:
                el = time.perf_counter() - start
                print(f"{k + 1} cases, {el:.0f} s, {dict(outcomes)}", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
    wall = time.perf_counter() - start
    return {
        "cases": cases, "seed": seed, "model": model, "time_limit_s": time_limit, "memory_limit_mb": memory_mb,
        "mode": "forked worker, RLIMIT_AS" if memory_mb else "in-process",
        "wall_s": round(wall, 1), "cases_per_s": round(cases / wall, 1), "decode_s_total": round(total_case_s, 1),
        "outcomes": {k: outcomes.get(k, 0) for k in ("refused", "decoded", "bad")},
        "exception_types": dict(types.most_common()),
        "messages": dict(messages.most_common()),
        "by_mutation": {k: dict(v) for k, v in sorted(by_mutation.items())},
        "families": families or "all",
        # cases whose outcome was known in advance (one mutation of a family that knows it, no quality=)
        "expected": {k: dict(v) for k, v in sorted(expected.items())},
        "slowest": slowest,
        "peak_rss_mb": round(peak, 1),
        "rss_before_cases_mb": round(rss_before, 1),     # this process, after building the corpus
        "largest_rss_growth": growth,
        "worker_restarts": pool.restarts if pool else 0,
        "workers_exit_maxrss_mb": round(pool.children_maxrss_mb, 1) if pool else None,   # incl. warm-up and exit
        "bad": bad,
        "corpus": [{"name": f.name, "bytes": len(f.data)} for f in corpus],
        "env": environment(),
    }


def bomb_44() -> bytes:
    """The "44-byte bomb" of issue 9: a header that claims 16384 x 16384 (one stage, tile 128) with a valid CRC
    and nothing after it: 41 bytes with the 7-letter name vqf8-v3, as in tests/test_format.py."""
    head = MAGIC + bytes([FORMAT_VERSION, 0, 7]) + b"vqf8-v3" + bytes(8) + struct.pack("<IIBBBBBH", 16384, 16384, 0, 8, 3, 1, 3, 128)
    return head + struct.pack("<I", zlib.crc32(head))


def bomb_claim(codec, side: int = 4096, tile: int = 512) -> bytes:
    """A side x side image of one full stage for `codec`'s model, in tiles of `tile` positions, every stream
    exactly min_stream_words long and all zeros, every CRC valid: the least payload the format lets claim it."""
    quality = len(codec.cfg.coarse_sizes) + 1
    parts = Parts.of(codec.compress(Image.new("RGB", (8, 8)), quality))
    parts.fields.update(width=side, height=side, tile=tile)
    parts.streams = [[bytes(4 * container.min_stream_words(n)) for n in parts.grid_tiles()]]
    return parts.build()


def run_bombs(codec) -> list[dict]:
    """Time the bombs in this process: (name, bytes, outcome, seconds, peak RSS before and after; the peak is
    the process's high-water mark, so a bomb shows its own growth only above those before it)."""
    import vqcodec
    out = []
    for name, data, decode in (
            ("the 44-byte bomb: a 16384 x 16384 header, no table, no payload (vqcodec.decompress)", bomb_44(),
             lambda d: vqcodec.decompress(d)),
            (f"minimal claim: 4096 x 4096, tile 128, 1 stage, zero streams ({codec.model_name})",
             bomb_claim(codec, 4096, 128), lambda d: codec.decompress(d)),
            (f"minimal claim: 4096 x 4096, tile 512, 1 stage, zero streams ({codec.model_name})",
             bomb_claim(codec, 4096, 512), lambda d: codec.decompress(d))):
        before = maxrss_mb()
        t = time.perf_counter()
        try:
            decode(data)
            what = "decoded (!)"
        except ValueError as e:
            what = f"{type(e).__name__}: {e}"
        out.append({"bomb": name, "bytes": len(data), "result": what, "seconds": round(time.perf_counter() - t, 6),
                    "maxrss_before_mb": round(before, 1), "maxrss_after_mb": round(maxrss_mb(), 1)})
        print(f"{name}: {len(data)} bytes -> {what} in {out[-1]['seconds'] * 1000:.3f} ms; "
              f"peak RSS {before:.1f} -> {maxrss_mb():.1f} MB", flush=True)
    out += work_per_kb(codec)
    return out


def last_tile_junk(data: bytes, stage: int = -1, fill: str = "zeros") -> bytes:
    """A valid file with the last tile's stream of its last stage (or of `stage`) replaced by junk of the same
    length, zeros by default (JUNK_FILLS; CRCs made right): it is refused only once the valid tiles before it
    are entropy-decoded."""
    parts = Parts.of(data)
    last = parts.streams[stage][-1]
    parts.streams[stage][-1] = JUNK_FILLS[fill](len(last))
    return parts.build()


def work_per_kb(codec, side: int = 2048) -> list[dict]:
    """What decoding costs per KB of input at its worst: flat side x side images (the most index positions per
    coded byte a real file has) at the lowest full-stage quality and the top quality, decoded whole, and the
    same files with the last tile junk (refused after the rest is decoded). Seconds per KB and positions per
    byte (container.work_per_byte, what decompress(max_work=) bounds)."""
    out = []
    flat = Image.new("RGB", (side, side), (118, 140, 96))
    for quality in (len(codec.cfg.coarse_sizes) + 1, max(codec.qualities)):
        data = codec.compress(flat, quality)
        header = container.unpack(data)
        for name, payload in (("valid", data), ("last tile junk", last_tile_junk(data))):
            t = time.perf_counter()
            try:
                codec.decompress(payload, max_pixels=None)
                what = "decoded"
            except ValueError as e:
                what = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            seconds = time.perf_counter() - t
            row = {"bomb": f"flat {side}x{side}, quality {quality}, {name}", "bytes": len(payload), "result": what,
                   "seconds": round(seconds, 3), "seconds_per_kb": round(seconds / (len(payload) / 1024), 4),
                   "positions_per_byte": round(container.work_per_byte(header, header.stages), 2)}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


# --- the command line: broken EXIF to every output format, and special output paths (a process each) ---------
CLI_FORMATS = ("png", "tiff", "jpg", "webp")     # --format names
CLI_EXIF_BASES = ("37x29-RGB", "7x5-LA", "1x1-RGBA", "2x3-L", "144x144-RGBA", "300x200-L")


def export_model_dir(codec, folder: Path) -> Path:
    """`codec`'s model written as a model folder (what `--model DIR` takes), for the CLI runs."""
    from vqcodec.training_cli import export_model
    path = Path(folder) / codec.cfg.name
    if not (path / "model.safetensors").exists():
        export_model(codec.to_bytes(), codec.cfg, {}, path)
    return path


def exif_files(corpus: list[CorpusFile], seed: int = 0, count: int | None = None,
               big: bool = True) -> list[tuple[str, bytes]]:
    """(name, .vq bytes) of valid files whose metadata section holds a broken EXIF: every EXIF_KINDS kind once
    (then random kinds up to `count`), on small corpus files of every mode; with `big`, also an EXIF of 70,000
    random bytes and a valid EXIF of 70,000 bytes (over JPEG's 65,533-byte APP1 segment)."""
    rng = random.Random(seed)
    bases = [f for f in corpus if f.name.startswith(CLI_EXIF_BASES)]
    kinds = list(EXIF_KINDS)
    kinds += [rng.choice(EXIF_KINDS) for _ in range(max(0, (count or len(kinds)) - len(kinds)))]
    out = []
    for i, kind in enumerate(kinds[:count or len(kinds)]):
        base = bases[i % len(bases)]
        parts = Parts.of(base.data)
        with_exif(parts, broken_exif(kind, rng))
        out.append((f"exif{i:02d}-{kind}", parts.build()))
    if big:
        exif = Image.Exif()
        exif[0x010E] = "x" * 70000      # ImageDescription
        big_random = bytes(rng.randrange(256) for _ in range(70000))
        for name, blob in (("big-random", big_random), ("big-valid", exif.tobytes())):
            parts = Parts.of(bases[0].data)
            with_exif(parts, blob)
            out.append((f"exif{len(out):02d}-{name}", parts.build()))
    return out


def _run_cli(args, timeout: float, cwd=None) -> dict:
    """`python -m vqcodec.cli ARGS` in a fresh process: rc, stdout, stderr, seconds (rc None: it hung)."""
    import subprocess
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "vqcodec.cli", *map(str, args)], capture_output=True,
                           timeout=timeout, cwd=cwd or ROOT, env=env, stdin=subprocess.DEVNULL)
        rc, out, err = p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, e.stdout or b"", (e.stderr or b"").decode("utf-8", "replace")
    return {"rc": rc, "stdout": out, "stderr": err, "seconds": time.perf_counter() - t}


def _image_size(data_or_path) -> tuple | str:
    """The size of the image in these bytes or this file, read with Pillow (warnings off), or why not."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
            with Image.open(src) as im:
                im.load()
                return im.size
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


def judge_cli(check: dict, r: dict) -> str | None:
    """What is wrong with one CLI run, or None. check["expect"]:
    - "decoded": exit 0, nothing on stderr but "Note: " lines, each of check["outputs"] (path, size) an image of
      that size (check["stdout"]: a size, the image on standard output, and its status line on stderr);
    - "refused": exit 1, exactly one line on stderr, starting "Error: "; check["keep"]: (path, "fifo" | "char"
      | "symlink") must still be that;
    - "either": one of the two (check["stdout"] then the image if it exits 0)."""
    import stat as stat_module
    if r["rc"] is None:
        return f"hung (over {check.get('timeout', 0):g} s)"
    err = r["stderr"]
    problems = []
    if "Traceback" in err:
        problems.append("a traceback")
    expect = check["expect"]
    if expect == "either":
        expect = "decoded" if r["rc"] == 0 else "refused"
    if expect == "decoded":
        if r["rc"] != 0:
            problems.append(f"exit {r['rc']}, not 0")
        # notes, and where the image goes to standard output, the line saying so ("x.vq -> <stdout>: WxH MODE")
        others = [line for line in err.splitlines() if not line.startswith("Note: ")
                  and not (check.get("stdout") and re.fullmatch(r".* -> <stdout>: \d+x\d+ [A-Z]+", line))]
        if others:
            problems.append(f"stderr has lines other than notes: {others[:3]!r}")
        for path, size in check.get("outputs", []):
            got = _image_size(path) if Path(path).is_file() else "missing"
            if got != size:
                problems.append(f"{Path(path).name}: {got}, not an image of {size}")
        if check.get("stdout"):
            got = _image_size(r["stdout"])
            if got != check["stdout"]:
                problems.append(f"standard output: {got}, not an image of {check['stdout']}")
    else:
        if r["rc"] != 1:
            problems.append(f"exit {r['rc']}, not 1")
        if not (err.count("\n") == 1 and err.endswith("\n") and err.startswith("Error: ")):
            problems.append(f"stderr is not one 'Error: ' line: {err[:300]!r}")
    for path, kind in check.get("keep", []):
        st = os.lstat(path) if os.path.lexists(path) else None
        ok = st is not None and {"fifo": stat_module.S_ISFIFO, "char": stat_module.S_ISCHR,
                                  "symlink": stat_module.S_ISLNK}[kind](st.st_mode)
        if not ok:
            problems.append(f"{path} is no longer a {kind}")
    return "; ".join(problems) or None


def cli_checks(codec, corpus: list[CorpusFile], workdir: Path, model_arg: str | None, seed: int = 0,
               exif_count: int | None = None, big_exif: bool = True, jobs: int = 2, timeout: float = 120.0,
               formats=CLI_FORMATS, select=None) -> list[dict]:
    """The checks that need the real command, each in a fresh process (about 2 s each, most of it importing
    torch): the broken-EXIF files decoded to every format (a batch per format, and one file alone to TIFF),
    and a valid file decoded to special outputs: a FIFO and /dev/null, with and without --force, a symlink to a
    FIFO (refused: one Error line, the FIFO left alone), /dev/stdout (standard output) and /dev/fd/1 (standard
    output or one Error line). select(name), if given, picks the checks to run. Returns the checks with their
    outcome ("problem": None where all was right)."""
    from concurrent.futures import ThreadPoolExecutor
    workdir = Path(workdir)
    model = ["--model", str(model_arg)] if model_arg else []
    checks = []
    folder = workdir / "exif"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, data in exif_files(corpus, seed, exif_count, big_exif):
        (folder / f"{name}.vq").write_bytes(data)
        head = container.unpack(data)
        sizes[name] = (head.width, head.height)
    for fmt in formats:
        out = workdir / f"out-{fmt}"
        ext = OUTPUT_EXTENSIONS[fmt]
        checks.append({"name": f"broken EXIF -> {fmt} ({len(sizes)} files, -o)", "expect": "decoded",
                       "args": ["decompress", *sorted(folder.glob("*.vq")), "-o", out, "--format", fmt, "--quiet",
                                *model],
                       "outputs": [(out / f"{n}{ext}", s) for n, s in sorted(sizes.items())]})
    first = sorted(sizes)[0]
    checks.append({"name": f"broken EXIF -> tif (one file: {first})", "expect": "decoded",
                   "args": ["decompress", folder / f"{first}.vq", workdir / "alone.tif", *model],
                   "outputs": [(workdir / "alone.tif", sizes[first])]})
    valid = next(f for f in corpus if f.name.startswith("37x29-RGB-"))
    src = workdir / "valid.vq"
    src.write_bytes(valid.data)
    size = (container.unpack(valid.data).width, container.unpack(valid.data).height)
    fifo = workdir / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    link = workdir / "link-to-fifo.png"
    if not os.path.lexists(link):
        os.symlink(fifo, link)
    for force in ([], ["--force"]):
        checks.append({"name": f"OUT a FIFO {' '.join(force)}".strip(), "expect": "refused",
                       "args": ["decompress", src, fifo, "--format", "png", *force, *model],
                       "keep": [(fifo, "fifo")]})
        checks.append({"name": f"OUT /dev/null {' '.join(force)}".strip(), "expect": "refused",
                       "args": ["decompress", src, "/dev/null", "--format", "png", *force, *model],
                       "keep": [("/dev/null", "char")]})
    checks.append({"name": "OUT a symlink to a FIFO --force", "expect": "refused",
                   "args": ["decompress", src, link, "--force", *model], "keep": [(link, "symlink"), (fifo, "fifo")]})
    checks.append({"name": "OUT /dev/stdout", "expect": "decoded", "stdout": size,
                   "args": ["decompress", src, "/dev/stdout", *model]})
    checks.append({"name": "OUT /dev/fd/1", "expect": "either", "stdout": size,
                   "args": ["decompress", src, "/dev/fd/1", "--format", "png", *model]})
    checks = [c for c in checks if select is None or select(c["name"])]
    for c in checks:
        c["timeout"] = timeout

    def one(check):
        r = _run_cli(check["args"], timeout)
        check.update(rc=r["rc"], seconds=round(r["seconds"], 2), stderr=r["stderr"][-2000:],
                     problem=judge_cli(check, r))
        return check

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, checks))


OUTPUT_EXTENSIONS = {"png": ".png", "tif": ".tif", "tiff": ".tif", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}


def run_cli_family(codec, corpus, model: str, seed: int = 0, exif_count: int | None = None, big_exif: bool = True,
                   jobs: int = 2, model_dir: Path | None = None) -> dict:
    """--cli: cli_checks in a temporary folder (the tiny model exported into it); the summary."""
    import tempfile
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vqfuzz-cli-") as tmp:
        if model_dir is not None:
            model_arg = str(model_dir)
        elif model == "tiny":
            model_arg = str(export_model_dir(codec, Path(tmp) / "models"))
        else:
            model_arg = None if model == "default" else model
        checks = cli_checks(codec, corpus, Path(tmp), model_arg, seed, exif_count, big_exif, jobs)
    for c in checks:
        c["args"] = [str(a).replace(tmp, "$TMP") for a in c["args"]]
        c["stderr"] = c["stderr"].replace(tmp, "$TMP")
        c["problem"] = c["problem"] and c["problem"].replace(tmp, "$TMP")
        for key in ("outputs", "keep"):
            if key in c:
                c[key] = [[str(p).replace(tmp, "$TMP"), v] for p, v in c[key]]
    failed = [c for c in checks if c["problem"]]
    return {"mode": "cli", "model": model, "seed": seed, "checks": len(checks), "passed": len(checks) - len(failed),
            "failed": len(failed), "wall_s": round(time.perf_counter() - t, 1), "results": checks}


def print_cli_summary(s: dict) -> None:
    print(f"CLI checks, model {s['model']}, seed {s['seed']}: {s['passed']} of {s['checks']} passed "
          f"in {s['wall_s']} s")
    for c in s["results"]:
        print(f"  {'ok  ' if not c['problem'] else 'BAD '} {c['seconds']:6.2f} s  exit {c['rc']}  {c['name']}"
              + (f"\n         {c['problem']}" if c["problem"] else ""))
    print(f"BAD CLI checks: {s['failed']}")


def print_summary(s: dict) -> None:
    print(f"{s['cases']} cases, model {s['model']}, {s['mode']}, seed {s['seed']}: {s['wall_s']} s "
          f"({s['cases_per_s']} cases/s)")
    print("outcomes:", s["outcomes"])
    if s.get("families", "all") != "all":
        print("families:", ", ".join(s["families"]))
    if s.get("expected"):
        print("cases with a known outcome:", "; ".join(f"must be {k}: {v}" for k, v in s["expected"].items()))
    print("exception types:", s["exception_types"])
    print("messages (top 25):")
    for m, n in list(s["messages"].items())[:25]:
        print(f"  {n:7d}  {m}")
    print("slowest:")
    for x in s["slowest"]:
        print(f"  {x['seconds']:.3f} s  seed {x['seed']}  {x['outcome']} {x['type']}  {x['mutation']}")
    print(f"peak RSS: {s['peak_rss_mb']} MB{' (workers)' if s['memory_limit_mb'] else ''} "
          f"(the main process before the cases: {s['rss_before_cases_mb']} MB); "
          f"largest growth: {s['largest_rss_growth']}")
    if s["bad"]:
        print(f"BAD cases ({len(s['bad'])}):")
        for b in s["bad"]:
            print(f"  seed {b['seed']}: {b['type']}: {b['message']}  [{b['mutation']}]")
    else:
        print("BAD cases: 0")


# --- issue 29's bars: hostile inputs through the command, timed and measured (--bars) -----------------------
VQCODEC = [sys.executable, "-m", "vqcodec.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def measure(args: list[str], stdin=None, timeout: float = 120, shell: str | None = None) -> dict:
    """Run `vqcodec ARGS` (or a shell pipeline ending in it) -> rc, seconds, the vqcodec process's peak RSS."""
    t = time.perf_counter()
    if shell:
        # the pipeline's last process is vqcodec; wait4 on the shell sees the largest of its children
        proc = subprocess.Popen(["bash", "-c", shell], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=ENV)
    else:
        proc = subprocess.Popen(VQCODEC + args, stdin=stdin, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                env=ENV)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t
    lines = err.splitlines()
    return {"args": shell or " ".join(["vqcodec", *args]), "rc": proc.returncode, "seconds": round(seconds, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr_lines": len(lines),
            "stderr": lines[-1] if lines else "", "traceback": "Traceback" in err}


def alpha_bomb(codec, width: int = 16384, height: int = 8192) -> bytes:
    """Item 5's bomb: a width x height RGBA header (2^27 pixels), a valid alpha PNG of that size (all opaque),
    and every colour stream zeros of the least length the format allows, every CRC valid."""
    quality = len(codec.cfg.coarse_sizes) + 1
    parts = Parts.of(codec.compress(Image.new("RGBA", (8, 8), (9, 9, 9, 128)), quality))
    parts.fields.update(width=width, height=height, tile=128)
    parts.alpha = pack_alpha(np.full((height, width), 255, np.uint8))   # deflate's ~1000:1 makes it ~130 KB
    tiles = parts.grid_tiles()
    parts.streams = [[bytes(4 * container.min_stream_words(n)) for n in tiles] for _ in parts.streams]
    return parts.build()


def bars_in_process(path: Path, model: str, max_pixels: int | None) -> dict:
    """--one: decode one file in this fresh process; the time and RSS growth of the decode alone."""
    from vqcodec.codec import load_codec
    codec = load_codec(None if model == "default" else model)
    data = path.read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    try:
        image = codec.decompress(data, max_pixels=max_pixels)
        result = f"decoded {image.mode} {image.size[0]}x{image.size[1]}"
    except ValueError as e:
        result = f"{type(e).__name__}: {e}"
    return {"result": result, "seconds": round(time.perf_counter() - t, 3), "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def make_bar_files(tmp: Path, big_rgba: bool) -> None:
    """--make: the files the bars decode, made in a process of their own."""
    codec = build_codec("default")
    (tmp / "small.vq").write_bytes(codec.compress(Image.new("RGB", (16, 16), (40, 90, 200)), 3))
    (tmp / "alpha-bomb.vq").write_bytes(alpha_bomb(codec))
    if big_rgba:
        tiny = export_model_dir(build_codec("tiny"), tmp)
        tiny.rename(tmp / "vqtiny")
        side = 1 << 14   # 16384 x 16384 = 2^28 pixels
        ramp = np.linspace(0, 255, side, dtype=np.float32).astype(np.uint8)
        rgba = np.empty((side, side, 4), np.uint8)
        rgba[..., 0] = ramp[None, :]
        rgba[..., 1] = ramp[:, None]
        rgba[..., 2] = 128
        rgba[..., 3] = ramp[None, ::-1]
        Image.MAX_IMAGE_PIXELS = None
        Image.fromarray(rgba, "RGBA").save(tmp / "big.png", compress_level=1)


def run_bars(big_rgba: bool, json_out: str | None) -> int:
    """--bars: issue 29's "How good" bars, each hostile input in a fresh `vqcodec` process (wall time, peak RSS
    from wait4, stderr), and the alpha bomb also decoded in-process, apart from the 1.5 to 3.5 s of importing
    torch and loading the model that every process pays first. --bars-big adds a 2^28-pixel RGBA image."""
    # This process stays small (no torch, no model): a child's ru_maxrss starts from its parent's RSS at fork.
    rows = []

    def add(bar: str, row: dict, ok: bool) -> None:
        row = {"bar": bar, **row, "pass": bool(ok)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, __file__, "--bars-make", str(tmp)] + ["--bars-big"] * big_rgba, check=True,
                       env=ENV)
        small, bomb, tiny = tmp / "small.vq", tmp / "alpha-bomb.vq", tmp / "vqtiny"
        # a process that only starts, loads the model and decodes a tiny valid file: what every row below pays
        add("baseline: start, load the model, decode 16x16", measure(["decompress", str(small), str(tmp / "s.png")]),
            True)

        zero_bar = lambda r: r["rc"] == 1 and r["stderr_lines"] == 1 and r["seconds"] < 5 and r["peak_rss_mb"] < 1024
        for args in (["decompress", "/dev/zero", str(tmp / "z.png")], ["info", "/dev/zero"],
                     ["decompress", "/dev/urandom", str(tmp / "u.png")]):
            r = measure(args)
            add("/dev/zero or /dev/urandom as input: one line, 5 s, 1 GB", r, zero_bar(r))
        for command in ("decompress - " + str(tmp / "p.png"), "info -", "compress - " + str(tmp / "p.vq")):
            r = measure([], shell=f"cat /dev/zero | {' '.join(VQCODEC)} {command}")
            add("`cat /dev/zero |` into stdin: one line, 5 s, 1 GB", r, zero_bar(r))

        for max_pixels in (0, 1 << 27):
            proc = subprocess.run([sys.executable, __file__, "--bars-one", str(bomb), "default", str(max_pixels)],
                                  capture_output=True, text=True, env=ENV, timeout=300)
            r = {"bytes": bomb.stat().st_size, "max_pixels": max_pixels, **json.loads(proc.stdout.splitlines()[-1]),
                 "warnings": proc.stderr.count("Warning")}
            add("the alpha bomb (2^27-pixel RGBA, valid alpha, junk colour) refused in-process in under 2 s", r,
                r["result"].startswith("FormatError") and r["seconds"] < 2 and not r["warnings"])
        r = measure(["decompress", str(bomb), str(tmp / "b.png"), "--max-pixels", "0"])
        add("the alpha bomb through the command: one line, no warning", {"bytes": bomb.stat().st_size, **r},
            r["rc"] == 1 and r["stderr_lines"] == 1 and not r["traceback"])

        if big_rgba:
            side, png = 1 << 14, tmp / "big.png"
            r = measure(["compress", str(png), str(tmp / "big.vq"), "--model", str(tiny), "--max-pixels", "0",
                         "-q", "3"], timeout=3600)
            add("a 2^28-pixel RGBA image compresses with --max-pixels 0 (tiny model)", r, r["rc"] == 0)
            out = tmp / "big-out.png"
            r = measure(["decompress", str(tmp / "big.vq"), str(out), "--model", str(tiny), "--max-pixels", "0"],
                        timeout=3600)
            ok = r["rc"] == 0
            if ok:
                Image.MAX_IMAGE_PIXELS = None
                with Image.open(out) as im:
                    r["decoded"] = [im.mode, *im.size]
                    ok = im.mode == "RGBA" and im.size == (side, side)
            add("the 2^28-pixel RGBA file decodes with --max-pixels 0 (tiny model)", r, ok)

    summary = {"command": "python benchmarks/fuzz.py --bars" + (" --bars-big" if big_rgba else ""),
               "rows": rows, "passed": sum(r["pass"] for r in rows), "failed": sum(not r["pass"] for r in rows),
               "env": environment()}
    if json_out:
        Path(json_out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if summary["failed"] == 0 else 1




def replay(codec, corpus, seed: int, time_limit: float, write: str | None, memory_mb: int | None = None,
           families: list[str] | None = None) -> int:
    case = make_case(seed, corpus, families)
    if memory_mb:   # as in a worker: this whole process under RLIMIT_AS
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    print(f"seed {seed}: {case.description} ({len(case.data)} bytes)")
    if write:
        Path(write).write_bytes(case.data)
        print(f"wrote {write}")
    r = run_case(codec, case, time_limit)
    print(f"{r['outcome']} in {r['seconds']:.3f} s: {r['type']} {r['message']}")
    if "traceback" in r:
        print(r["traceback"])
    return 1 if r["outcome"] == "bad" else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit-per-case", type=float, default=2.0, metavar="S")
    ap.add_argument("--memory-limit", type=int, default=None, metavar="MB",
                    help="run cases in a forked worker under RLIMIT_AS = MB (its whole address space)")
    ap.add_argument("--model", default="tiny", help="tiny (a random tiny model, default), default (the shipped "
                    "model, on Kodak crops), or a model name or folder")
    ap.add_argument("--json", default=None, metavar="OUT", help="write the summary here")
    ap.add_argument("--replay", type=int, default=None, metavar="SEED", help="run one case again, verbosely")
    ap.add_argument("--write-case", default=None, metavar="PATH", help="with --replay: save the mutated bytes")
    ap.add_argument("--progress", type=int, default=0, metavar="N", help="a line on stderr every N cases")
    ap.add_argument("--bomb", action="store_true", help="time the 44-byte bomb and two minimal-payload claims, "
                    "in this process, and exit")
    ap.add_argument("--families", default=None, metavar="NAME,...",
                    help="draw mutations from these families only (names: " + ", ".join(FAMILIES)
                    + "; issue29 = " + ",".join(FAMILY_GROUPS["issue29"]) + "); default all, by weight. "
                    "Give --replay the --families of its run")
    ap.add_argument("--cli", action="store_true", help="instead of in-process cases, run the fixed CLI checks "
                    "(python -m vqcodec.cli, a process each): broken EXIF to png, tiff, jpg and webp, and special "
                    "output paths (FIFO, /dev/null, a symlink to a FIFO, /dev/stdout, /dev/fd/1)")
    ap.add_argument("--cli-exif", type=int, default=None, metavar="N",
                    help="with --cli: N broken-EXIF files (default: one per kind, %d)" % len(EXIF_KINDS))
    ap.add_argument("--no-big-exif", action="store_true",
                    help="with --cli: leave out the two 70,000-byte EXIFs (over what a JPEG can hold)")
    ap.add_argument("--jobs", type=int, default=2, help="with --cli: processes at a time (default 2)")
    ap.add_argument("--bars", action="store_true", help="measure issue 29's bars through the command (/dev/zero "
                    "and endless stdin, the alpha bomb) instead of fuzzing; with --json")
    ap.add_argument("--bars-big", action="store_true", help="with --bars: also compress and decode a 2^28-pixel "
                    "RGBA image (tiny model; about 2 minutes and 4.3 GB)")
    ap.add_argument("--bars-one", nargs=3, metavar=("FILE", "MODEL", "MAX_PIXELS"), help=argparse.SUPPRESS)
    ap.add_argument("--bars-make", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bars_one:
        print(json.dumps(bars_in_process(Path(args.bars_one[0]), args.bars_one[1], int(args.bars_one[2]) or None)))
        return 0
    if args.bars_make:
        make_bar_files(Path(args.bars_make), args.bars_big)
        return 0
    if args.bars:
        return run_bars(args.bars_big, args.json)
    try:
        families = parse_families(args.families)
    except ValueError as e:
        ap.error(str(e))

    codec = build_codec(args.model)
    if args.bomb:
        bombs = run_bombs(codec)
        if args.json:
            Path(args.json).write_text(json.dumps({"model": args.model, "bombs": bombs, "env": environment()},
                                                  indent=1) + "\n")
        return 0
    corpus = build_corpus(codec, args.model)
    if args.cli:
        summary = run_cli_family(codec, corpus, args.model, args.seed, args.cli_exif, not args.no_big_exif,
                                 args.jobs)
        print_cli_summary(summary)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({**summary, "env": environment()}, indent=1) + "\n")
        return 1 if summary["failed"] else 0
    if args.replay is not None:
        return replay(codec, corpus, args.replay, args.time_limit_per_case, args.write_case, args.memory_limit,
                      families)
    summary = fuzz(codec, corpus, args.cases, args.seed, args.time_limit_per_case, args.memory_limit,
                   args.progress, args.model, families)
    print_summary(summary)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
