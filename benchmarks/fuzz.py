"""A seeded fuzzer for .vq decoding: mutate valid files, decode them, and sort every outcome.

    python benchmarks/fuzz.py                                  # 2000 cases, tiny random model, in-process
    python benchmarks/fuzz.py --cases 100000 --memory-limit 1024 --json benchmarks/results/fuzz_100k.json
    python benchmarks/fuzz.py --replay 1234 --write-case bad.vq   # one case again, with its traceback
    python benchmarks/fuzz.py --model default --cases 500      # the shipped model, on Kodak crops
    python benchmarks/fuzz.py --bomb --model default           # time the 44-byte bomb and two minimal claims

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

and most cases then get every checksum recomputed (section CRCs, stage CRCs, header CRC, found with a lenient
parse of the mutated bytes), so that they reach the checks behind the CRCs. A case decodes with
`codec.decompress(data)`, sometimes with a lower `quality=`. Outcomes:

- refused: a ValueError (FormatError, TruncatedError, ModelMismatchError and ImageError are ValueErrors);
- decoded: an image came back (its size must be the header's, its mode RGB, L, RGBA or LA, else BAD);
- BAD: any other exception (MemoryError included), the ValueError("not enough memory to ...") that vqcodec
  makes of an allocation failure (the case needed more memory than there was), a decode over
  --time-limit-per-case, or, with --memory-limit, a worker that died.

Case k of a run with --seed S has the seed S * 10**7 + k; `--replay SEED` runs one case again and prints its
mutations and traceback (give --model and --memory-limit as the run had them). With --memory-limit MB, cases
run in a forked worker process under RLIMIT_AS = MB: the worker's whole address space, torch and the model
included (about 630 MB with the tiny model, 660 MB with the shipped one, before any case). The worker is
reused from case to case and restarted after a crash or a hang.

No mutated file is larger than MAX_CASE_BYTES = 16 KiB, 2.4 times the largest corpus file. Decode time grows
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
import sys
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

from vqcodec import container  # noqa: E402  (no torch)
from vqcodec.container import MAGIC  # noqa: E402

SEED_STRIDE = 10 ** 7            # case k of --seed S: S * SEED_STRIDE + k
FIXED_SIZE = struct.calcsize("<IIBBBBBH")   # width, height, mode, depth, quality, stages, log2 f, tile: 15 bytes
MAX_CASE_BYTES = 16 << 10        # mutations that grow a file stop here: 2.4 x the largest corpus file
KODAK = ROOT / "benchmarks" / "kodak" / "kodim23.png"
# The tiny model of issue 9 (channels 8/16, latent 4, 16 codes, 3 stages) plus two coarse levels, so that
# the coarse alphabets are fuzzed too. Qualities 1..5: stage 0 limited to 4 or 8 codes, then 1, 2, 3 full stages.
TINY_CONFIG = dict(name="tiny-fuzz", channels=(8, 16), latent_dim=4, codebook_size=16, num_stages=3,
                   prior_hidden=8, coarse_sizes=(4, 8))
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
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
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


# (width, height, mode, quality, tile, metadata); qualities are those of the tiny model (1..5). For the
# shipped model (1..12) the quality is scaled: q -> (1, 2, 3, 7, 12)[q - 1].
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
    old_tile = codec_module.TILE
    try:
        for w, h, kind, q, tile, meta in CORPUS_SPECS:
            if top != 5:
                q = min(top, (1, 2, 3, 7, 12)[q - 1])
            codec_module.TILE = tile
            data = codec.compress(_image(rng, w, h, kind, meta, source), q)
            head = container.unpack(data)
            name = (f"{w}x{h}-{kind}-q{q}-tile{tile}-{head.num_tiles}tiles"
                    + ("-meta" if head.metadata_len else "") + ("-alpha" if head.alpha_len else ""))
            files.append(CorpusFile(name, data))
    finally:
        codec_module.TILE = old_tile
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
        for flag in (container.FLAG_METADATA, container.FLAG_ALPHA):
            if flags & flag:
                length, end = _lenient_varint(data, pos)
                lay.sections.append((pos, end - pos, length, end))
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
        for _ in range(stages * lay.ntiles):
            value, end = _lenient_varint(data, pos)
            lay.table.append((pos, end - pos, value))
            pos = end
        lay.crcs_at = pos
        lay.head_crc_at = pos + 4 * stages
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
    stages = lay.fields["stages"]
    for s in range(stages):
        words = sum(v for _, _, v in lay.table[s * lay.ntiles:(s + 1) * lay.ntiles])
        put(lay.crcs_at + 4 * s, zlib.crc32(bytes(out[pos:pos + 4 * words])))
        pos += 4 * words
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
    streams: list                                       # [stage][tile] -> bytes

    @classmethod
    def of(cls, data: bytes) -> "Parts":
        head = container.unpack(data)
        sec = container.sections(data, head, head.complete_stages)
        lay = read_layout(data)
        return cls(data[4], data[5], head.model_name.encode(), data[6], head.model_hash, dict(lay.fields),
                   sec.metadata, sec.alpha, [list(row) for row in sec.streams])

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
        body = b""
        for flag, section in ((container.FLAG_METADATA, self.metadata), (container.FLAG_ALPHA, self.alpha)):
            if self.flags & flag:
                head += varint(len(section)) + struct.pack("<I", zlib.crc32(section))
                body += section
        for row in self.streams:
            for stream in row:
                head += varint(len(stream) // 4)
        for row in self.streams:
            head += struct.pack("<I", zlib.crc32(b"".join(row)))
        head += struct.pack("<I", zlib.crc32(bytes(head)))
        return bytes(head) + body + b"".join(b"".join(row) for row in self.streams)


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
    stages = lay.fields["stages"]
    for s in range(stages):
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
    slots = [(at, size, v) for at, size, v, _ in lay.sections] + lay.table
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
    parts.flags = rng.choice([0, 1, 2, 3, 4, 0x80, 0xFF, parts.flags ^ 1, parts.flags ^ 2])
    if rng.random() < 0.5:
        parts.metadata = parts.metadata or b"\x03\x01\x00\x00\x00x"
        parts.alpha = parts.alpha or b"\x00"
    return parts.build(), f"flags={parts.flags:#x}"


# (function, weight, fix the checksums afterwards with probability)
MUTATIONS = [
    (m_bitflip, 10, 0.6), (m_byteset, 8, 0.6), (m_truncate, 6, 0.3), (m_insert, 4, 0.5), (m_delete, 4, 0.5),
    (m_duplicate, 3, 0.5), (m_append, 2, 0.5), (m_splice, 4, 0.5), (m_foreign, 1, 0.0),
    (m_field, 10, 1.0), (m_name, 3, 1.0), (m_varint, 7, 1.0), (m_payload, 10, 1.0), (m_streams, 7, 1.0),
    (m_reshape, 6, 1.0), (m_claim, 1, 1.0), (m_alpha, 5, 1.0), (m_metadata, 5, 1.0), (m_flags, 3, 1.0),
]


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

    @property
    def description(self) -> str:
        q = "" if self.quality is None else f" quality={self.quality}"
        return f"corpus{self.base}: " + " | ".join(self.steps) + q


def make_case(seed: int, corpus: list[CorpusFile]) -> Case:
    rng = random.Random(seed)
    ctx = Context(corpus)
    base = rng.randrange(len(corpus))
    data = corpus[base].data
    steps = []
    funcs = [m for m, _, _ in MUTATIONS]
    weights = [w for _, w, _ in MUTATIONS]
    fix = {m: p for m, _, p in MUTATIONS}
    n = rng.choices([1, 2, 3], [6, 3, 1])[0]
    tries = 0
    while len(steps) < n and tries < 20:
        tries += 1
        m = rng.choices(funcs, weights)[0]
        try:
            new, what = m(rng, data, ctx)
        except Skip:
            continue
        if len(new) > MAX_CASE_BYTES:
            continue
        if rng.random() < fix[m]:
            new = recrc(new)
            what += "+crc"
        data = new
        steps.append(what)
    quality = None
    if rng.random() < 0.25:
        quality = rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 0, 6, 13])
    return Case(seed, base, data, quality, steps)


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


def run_case(codec, case: Case, time_limit: float) -> dict:
    """Decode one case: {"outcome": refused | decoded | bad, "type", "message", "seconds"}."""
    result = {"seed": case.seed, "mutation": case.description, "bytes": len(case.data)}
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    t = time.perf_counter()
    try:
        image = codec.decompress(case.data, quality=case.quality)
        elapsed = time.perf_counter() - t
        signal.setitimer(signal.ITIMER_REAL, 0)
        head = container.unpack(case.data)
        if image.size != (head.width, head.height) or image.mode not in ("RGB", "L", "RGBA", "LA"):
            result.update(outcome="bad", type="WrongImage",
                          message=f"decoded {image.size} {image.mode}, header {head.width}x{head.height}")
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


def _worker(conn, codec, corpus, time_limit: float, memory_mb: int | None) -> None:
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
        conn.send(measured_case(codec, make_case(seed, corpus), time_limit))


class WorkerPool:
    """One forked worker (the model and corpus inherited), reused; restarted after a crash or a hang."""

    def __init__(self, codec, corpus, time_limit: float, memory_mb: int | None):
        import multiprocessing as mp
        self.mp = mp.get_context("fork")
        self.args = (codec, corpus, time_limit, memory_mb)
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
         progress=None, model: str = "tiny") -> dict:
    """Run `cases` cases; returns the summary (see --json)."""
    import torch
    torch.set_num_threads(1)
    outcomes, types, messages = Counter(), Counter(), Counter()
    by_mutation = defaultdict(Counter)
    bad, slowest = [], []
    pool = WorkerPool(codec, corpus, time_limit, memory_mb) if memory_mb else None
    rss_before = maxrss_mb()
    peak = rss_before if pool is None else 0.0     # with workers: theirs
    growth = None
    start = time.perf_counter()
    total_case_s = 0.0
    try:
        for k in range(cases):
            case_seed = seed * SEED_STRIDE + k
            if pool is None:
                r = measured_case(codec, make_case(case_seed, corpus), time_limit)
            else:
                r = pool.run(case_seed, lambda: make_case(case_seed, corpus).description)
            if "maxrss_mb" in r:
                peak = max(peak, r["maxrss_mb"])
                if r["rss_growth_mb"] > 0 and (growth is None or r["rss_growth_mb"] > growth["grew_mb"]):
                    growth = {"seed": r["seed"], "mutation": r["mutation"], "grew_mb": round(r["rss_growth_mb"], 1),
                              "to_mb": round(r["maxrss_mb"], 1)}
            total_case_s += r["seconds"]
            outcomes[r["outcome"]] += 1
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
    head = MAGIC + bytes([2, 0, 7]) + b"vqf8-v3" + bytes(8) + struct.pack("<IIBBBBBH", 16384, 16384, 0, 8, 3, 1, 3, 128)
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


def last_tile_junk(data: bytes) -> bytes:
    """A valid file with the last tile's stream of its last stage replaced by zeros (CRCs made right): it is
    refused only once the valid tiles before it are entropy-decoded."""
    parts = Parts.of(data)
    last = parts.streams[-1][-1]
    parts.streams[-1][-1] = bytes(len(last))
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


def print_summary(s: dict) -> None:
    print(f"{s['cases']} cases, model {s['model']}, {s['mode']}, seed {s['seed']}: {s['wall_s']} s "
          f"({s['cases_per_s']} cases/s)")
    print("outcomes:", s["outcomes"])
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


def replay(codec, corpus, seed: int, time_limit: float, write: str | None, memory_mb: int | None = None) -> int:
    case = make_case(seed, corpus)
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
    args = ap.parse_args(argv)

    codec = build_codec(args.model)
    if args.bomb:
        bombs = run_bombs(codec)
        if args.json:
            Path(args.json).write_text(json.dumps({"model": args.model, "bombs": bombs, "env": environment()},
                                                  indent=1) + "\n")
        return 0
    corpus = build_corpus(codec, args.model)
    if args.replay is not None:
        return replay(codec, corpus, args.replay, args.time_limit_per_case, args.write_case, args.memory_limit)
    summary = fuzz(codec, corpus, args.cases, args.seed, args.time_limit_per_case, args.memory_limit,
                   args.progress, args.model)
    print_summary(summary)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
