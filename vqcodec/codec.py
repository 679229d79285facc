"""The codec: VQ-VAE indices, coded with the integer prior into a .vq container.

compress:   image -> prepare (orientation, alpha, metadata, 8-bit RGB or L) -> pad -> encoder + residual VQ,
            tile by tile -> indices (h, w, q) -> for each tile, stage and pass: integer prior tables -> range
            coder -> one stream per (stage, tile) -> .vq
decompress: .vq -> header checks (work bounded by the file's length) -> the same prior evaluations, decoding
            each stream and checking it ends where it should -> indices -> decoder, tile by tile -> crop
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import colour, container
from .autoencoder import VQAutoencoder
from .config import ModelConfig
from .container import FormatError, Header, TruncatedError
from .coding import CoarseAlphabet, IndexCoder, RefinementCoder, timer
from . import DEFAULT_EFFORT, DEFAULT_MAX_PIXELS, EFFORT_BEAMS
from .images import (check_pixels, finish, from_rgb_array, pack_alpha, pack_metadata,
                     pad_to_multiple, prepare, to_rgb_array, unpack_alpha, unpack_metadata)
from .prior import IntegerPrior, PriorNet
from .refine import IntegerRefinement
from .progress import tick

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_MODEL = "vqf8-v13"
DETAIL_CHOICES = ("coded", "sample")   # decompress(detail=): what the file codes, or its missing stages drawn
DEFAULT_DETAIL_STAGES = 10             # detail="sample" fills the file up to this many stages
DECODER_CHOICES = ("fidelity", "realistic")   # decompress(decoder=): the model's decoder, or its realistic one
REALISTIC_FILE = "realistic.safetensors"      # the realistic decoder's weights, beside model.safetensors
TRAINING_BUFFERS = ("embed_sum", "cluster_size")   # the codebooks' EMA state: training only, not exported in 16 bits
FP32_TENSORS = ("codebook", "code_cost")     # stay float32 in a 16-bit export: they choose the indices


class ModelMismatchError(ValueError):
    """The .vq file was made with another model than the one loaded."""


def models_dir() -> Path:
    """Where shipped models live: the installed vqcodec.models package, or models/ of a checkout."""
    try:
        import vqcodec.models as shipped  # installed: models/ is packaged as vqcodec.models
        return Path(shipped.__path__[0])
    except ImportError:
        return Path(__file__).resolve().parents[1] / "models"


def weights_hash(weights: bytes) -> bytes:
    return hashlib.sha256(weights).digest()[:container.MODEL_HASH_BYTES]


class VQCodec:
    def __init__(self, autoencoder: VQAutoencoder, prior: IntegerPrior, weights: bytes, device: str = "cpu",
                 coarse_codes: torch.Tensor | None = None, refinement: IntegerRefinement | None = None):
        """coarse_codes: stage-0 codes in the order the coarse levels take them (a level of size n
        uses the first n); needed when the config has coarse_sizes. refinement: the integer refinement, needed
        when the config has refinement levels (it runs on the CPU)."""
        self.cfg = autoencoder.cfg
        self.device = torch.device(device)
        self.autoencoder = autoencoder.to(self.device).eval()
        self.prior = prior.to(self.device)
        self.coder = IndexCoder(self.prior)
        if bool(self.cfg.refine_levels) != (refinement is not None):
            raise ValueError(f"model {self.cfg.name}: its config and weights disagree on the refinement")
        if refinement is not None and (refinement.dim != self.cfg.total_dim or refinement.levels != self.cfg.refine_levels):
            raise ValueError(f"model {self.cfg.name}: its refinement tensors do not match its config")
        self.refiner = None if refinement is None else RefinementCoder(refinement, prior)
        self.coarse_codes = None if coarse_codes is None else coarse_codes.to(torch.int64)
        needed = max(self.cfg.coarse_sizes, default=0)
        if needed and (self.coarse_codes is None or len(self.coarse_codes) < needed):
            raise ValueError(f"model {self.cfg.name}: its coarse levels need {needed} coarse codes in the weights")
        self.coarse = {n: CoarseAlphabet.build(prior.t["codebooks"][0], self.coarse_codes[:n])
                       for n in self.cfg.coarse_sizes}
        self.model_name = self.cfg.name
        self.model_hash = weights_hash(weights)
        self.last_timings: dict[str, float] = {}

    # --- construction ------------------------------------------------------------------------
    @staticmethod
    def serialize(autoencoder: VQAutoencoder, prior: IntegerPrior, coarse_codes: torch.Tensor | None = None,
                  refinement: IntegerRefinement | None = None, half: bool = False) -> bytes:
        """The weights file. half: the networks' weights in float16 (codebooks and code costs stay float32: they
        choose the indices); training-only buffers (the codebooks' EMA state, the float refinement) left out."""
        def keep(k: str) -> bool:
            return not k.startswith("refine.") and not (half and k.split(".")[-1] in TRAINING_BUFFERS)

        def dtype(k: str):
            return torch.float16 if half and k.split(".")[-1] not in FP32_TENSORS else torch.float32
        tensors = {f"ae.{k}": v.detach().to(dtype(k)).cpu().contiguous()
                   for k, v in autoencoder.state_dict().items() if v.dtype.is_floating_point and keep(k)}
        for k, v in prior.tensors().items():
            small = torch.int8 if k.endswith(".weight") else torch.int32
            tensors[f"prior.{k}"] = v.to(small).cpu().contiguous()
        if refinement is not None:
            for k, v in refinement.tensors().items():
                small = torch.int8 if k.endswith(".weight") else torch.int64
                tensors[f"refine.{k}"] = v.to(small).cpu().contiguous()
        if coarse_codes is not None:
            tensors["coarse.codes"] = coarse_codes.to(torch.int32).cpu().contiguous()
        return save_safetensors(tensors, metadata={"config": json.dumps(autoencoder.cfg.to_dict())})

    def to_bytes(self, half: bool = False) -> bytes:
        """This model's weights file (serialize with its prior, coarse codes and refinement)."""
        return self.serialize(self.autoencoder, self.prior, self.coarse_codes,
                              None if self.refiner is None else self.refiner.refine, half=half)

    @classmethod
    def from_bytes(cls, weights: bytes, config: ModelConfig, device: str = "cpu") -> "VQCodec":
        tensors = load_safetensors(weights)
        ae = VQAutoencoder(config)
        state = ae.state_dict()
        state.update({k[3:]: v for k, v in tensors.items() if k.startswith("ae.")})
        ae.load_state_dict(state)
        for vq in ae.rvq.stages:  # exported codebooks are initialised (bool buffers are not exported)
            vq.initialized.fill_(True)
        prior = IntegerPrior(config, {k[6:]: v for k, v in tensors.items() if k.startswith("prior.")})
        refined = {k[7:]: v for k, v in tensors.items() if k.startswith("refine.")}
        refinement = IntegerRefinement(refined) if refined else None
        return cls(ae, prior, weights, device, tensors.get("coarse.codes"), refinement)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> "VQCodec":
        model_dir = Path(model_dir)
        try:
            config = ModelConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))
            weights = (model_dir / WEIGHTS_FILE).read_bytes()
        except FileNotFoundError as e:
            raise ValueError(f"not a vqcodec model directory: {model_dir} (missing {Path(e.filename).name})") from None
        codec = cls.from_bytes(weights, config, device)
        realistic = model_dir / REALISTIC_FILE
        codec.realistic_path = realistic if realistic.is_file() else None
        return codec

    realistic_path: Path | None = None   # the model folder's realistic decoder, if it has one
    _realistic = None

    @property
    def decoders(self) -> tuple[str, ...]:
        return DECODER_CHOICES if self.realistic_path is not None else DECODER_CHOICES[:1]

    def realistic_head(self):
        """(the realistic decoder's texture head, its config), loaded on first use."""
        if self.realistic_path is None:
            raise ValueError(f"model {self.model_name} has no realistic decoder (it offers: "
                             f"{', '.join(self.decoders)})")
        if self._realistic is None:
            from .realistic import load_head
            head, config = load_head(self.realistic_path, self.cfg.num_stages)
            self._realistic = (head.to(self.device), config)
        return self._realistic

    def _finish_pixels(self, x: torch.Tensor, stages: int, quality: int, decoder: str) -> torch.Tensor:
        """The fidelity decoder's image (B, 3, H, W) of `stages` stages, decoded as `quality` -> what `decoder`
        gives: itself, or the realistic decoder's at the qualities it serves (the fidelity image at others)."""
        if decoder == "fidelity":
            return x
        head, config = self.realistic_head()
        if quality not in config["qualities"] or stages != self.cfg.quality_plan(quality)[0]:
            return x
        with torch.no_grad():
            return head(x, torch.full((x.shape[0],), stages, device=x.device)).clamp(0, 1)

    @classmethod
    def random(cls, config: ModelConfig | None = None, seed: int = 0, device: str = "cpu") -> "VQCodec":
        """A randomly initialised model (for tests): codebooks from k-means on random latents."""
        config = config or ModelConfig(name="tiny-random", channels=(8, 16), latent_dim=4, codebook_size=16,
                                       num_stages=3, prior_hidden=8, transform="conv", stage_gains=False,
                                       postfilter=0, coarse_sizes=(), prior_stage_count=False,
                                       stage0_prior_kernel=0, stage0_prior_passes=0)
        torch.manual_seed(seed)
        ae = VQAutoencoder(config).train()
        with torch.no_grad():
            ae.rvq(torch.randn(1024, config.latent_dim))  # k-means init of every stage
        prior_net = PriorNet(config)
        prior = IntegerPrior.from_float(prior_net, [vq.codebook for vq in ae.rvq.stages])
        coarse = torch.randperm(config.codebook_size)[:max(config.coarse_sizes)] if config.coarse_sizes else None
        refinement = None
        if config.refine_levels:   # a mean-and-scale network that predicts something, calibrated on random latents
            from .refine import IntegerRefinement
            with torch.no_grad():
                ae.refine.net[-1].weight.normal_(0, 0.05)
            zq = ae.rvq.decode(ae.rvq.encode(torch.randn(256, config.latent_dim), config.num_stages))
            refinement = IntegerRefinement.from_float(ae.refine, float(prior_net.input_scale),
                                                      zq.reshape(1, 16, 16, -1).permute(0, 3, 1, 2))
        return cls.from_bytes(cls.serialize(ae.eval(), prior, coarse, refinement), config, device)

    @property
    def qualities(self) -> list[int]:
        return list(range(1, self.cfg.num_qualities + 1))

    def check_quality(self, quality: int) -> int:
        top = self.cfg.num_qualities
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= top:
            raise ValueError(f"quality must be an integer from 1 to {top}, not {quality!r}")
        return int(quality)

    def quality_plan(self, quality: int) -> tuple[int, CoarseAlphabet | None]:
        """quality -> (residual stages coded, the coarse alphabet of stage 0 or None)."""
        stages, coarse_size = self.cfg.quality_plan(quality)
        return stages, None if coarse_size is None else self.coarse[coarse_size]

    # --- images <-> .vq bytes ------------------------------------------------------------------
    def compress(self, image, quality: int, notes: list[str] | None = None, metadata: str = "all",
                 alpha: str = "keep", max_pixels: int | None = DEFAULT_MAX_PIXELS, effort: int = DEFAULT_EFFORT,
                 colour_layer: bool = True) -> bytes:
        """A PIL image, a path or an image file's bytes -> the bytes of a .vq file.

        metadata: all | none | icc | exif | xmp (what is kept); alpha: keep | drop. notes, if given,
        receives what was converted on the way (mode, orientation, depth, frames, alpha). effort: 0 or 1
        (the residual quantizer's beam, EFFORT_BEAMS: 1 = greedy, 4 = a beam search; the same decoder).
        colour_layer: at the VQ qualities, add the coarse colour correction where it pays (vqcodec/colour.py;
        where the index streams take under colour.MAX_BPP, the encoder decodes the image once to decide); False
        never adds one."""
        return self.compress_batch([image], quality, notes, metadata, alpha, max_pixels, effort, colour_layer)[0]

    def compress_to_fit(self, image, max_bytes: int | None = None, max_bpp: float | None = None,
                        notes: list[str] | None = None, **options) -> tuple[int, bytes]:
        """The highest quality whose file takes at most max_bytes bytes, or max_bpp bits per pixel of the image
        (one of the two) -> (quality, file bytes). Never a larger file: a binary search over the qualities,
        which file sizes follow nearly monotonically. ValueError if not even the lowest quality fits.
        options: as for compress (metadata, alpha, max_pixels, effort, colour_layer)."""
        if (max_bytes is None) == (max_bpp is None):
            raise ValueError("give one of max_bytes and max_bpp")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"the target size must be at least 1 byte, not {max_bytes}")
        if max_bpp is not None and not max_bpp > 0:
            raise ValueError(f"the target bpp must be above 0, not {max_bpp:g}")
        levels = sorted(self.qualities)
        tried: dict[int, tuple[bytes, list]] = {}

        def size(i: int) -> int:
            if i not in tried:
                got: list[str] = []
                tried[i] = (self.compress(image, levels[i], notes=got, **options), got)
            return len(tried[i][0])

        size(0)
        header = container.unpack(tried[0][0])
        if max_bytes is not None:
            target, text = max_bytes, f"{max_bytes} bytes"
        else:
            target = int(max_bpp * header.width * header.height / 8)
            text = f"{max_bpp:g} bpp ({target} bytes for {header.width}x{header.height})"
        if size(0) > target:
            raise ValueError(f"no quality fits in {text}: the smallest file (quality {levels[0]}) is {size(0)} bytes")
        lo, hi = 0, len(levels) - 1  # levels[lo] fits; nothing above levels[hi] is known to
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(mid) <= target:
                lo = mid
            else:
                hi = mid - 1
        data, got = tried[lo]
        if notes is not None:
            notes.extend(got)
        return levels[lo], data

    def decompress(self, data: bytes, quality: int | None = None,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS, max_work: float | None = None,
                   detail: str = "coded", seed: int = 0, detail_stages: int | None = None,
                   decoder: str = "fidelity") -> Image.Image:
        """The bytes of a .vq file -> a PIL image (RGB, L, RGBA or LA; ICC / EXIF / XMP in .info).

        quality: decode a lower quality from the same file (its first stages), or None for the file's own.
        max_work: refuse, before decoding, a file whose coded streams ask the prior for more than this many
        index positions per byte (container.work_per_byte; a server's bound on time per byte of input).
        detail: "coded" (what the file codes) or "sample": the residual stages the file does not code, up to
        detail_stages (None: DEFAULT_DETAIL_STAGES), drawn from the prior given the coded ones, with `seed`.
        decoder: "fidelity" (the model's decoder) or "realistic" (its texture head, trained adversarially, where
        the model folder has one; at the qualities it does not serve, the fidelity image)."""
        return self.decompress_batch([data], quality, max_pixels, max_work, detail, seed, detail_stages, decoder)[0]

    def _out_of_memory(self, error: BaseException, what: str) -> None:
        """Allocation failures (MemoryError, torch's RuntimeError) -> one clear ValueError; others pass."""
        if isinstance(error, MemoryError) or "alloc" in str(error).lower():
            raise ValueError(f"not enough memory to {what}") from None

    def compress_batch(self, images, quality: int, notes: list[str] | None = None, metadata: str = "all",
                       alpha: str = "keep", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                       effort: int = DEFAULT_EFFORT, colour_layer: bool = True) -> list[bytes]:
        """Several images. Those of one tile and the same padded size share one network pass (worth it
        on a GPU); larger images are coded tile by tile. last_timings then holds the split of the batch."""
        if not isinstance(effort, int) or not 0 <= effort < len(EFFORT_BEAMS):
            raise ValueError(f"effort must be from 0 to {len(EFFORT_BEAMS) - 1}, not {effort!r}")
        try:
            return self._compress_batch(images, quality, notes, metadata, alpha, max_pixels, EFFORT_BEAMS[effort],
                                        colour_layer)
        except (MemoryError, RuntimeError) as e:
            self._out_of_memory(e, "compress this image")
            raise

    def _compress_batch(self, images, quality, notes, metadata, alpha, max_pixels, beam, colour_layer=True) -> list[bytes]:
        quality = self.check_quality(quality)
        stages, coarse = self.quality_plan(quality)
        level = self.cfg.refine_level(quality)
        first_codes = None if coarse is None else coarse.codes.to(self.device)
        timings: dict[str, float] = {}
        prepared, headers, arrays = [], [], []
        for image in images:
            prep = prepare(image, metadata, alpha, max_pixels)
            if notes is not None:
                notes.extend(prep.notes)
            header = Header(self.model_name, self.model_hash, prep.image.width, prep.image.height, prep.mode,
                            quality, stages, self.cfg.downsampling, TILE, prep.depth, refine_level=level,
                            refine_values=self.cfg.total_dim if level else 0)
            header.validate()
            arr = to_rgb_array(prep.image)                       # (H, W, 3) uint8
            prep.image = None                                    # only the array is needed from here on
            prepared.append(prep)
            headers.append(header)
            # one tile: padded here and batched; larger: padded tile by tile (no second whole-image copy)
            arrays.append(pad_to_multiple(arr, self.cfg.downsampling) if header.num_tiles == 1 else arr)
        indices: list[torch.Tensor] = [None] * len(arrays)  # type: ignore[list-item]
        values: list[torch.Tensor | None] = [None] * len(arrays)  # what the refinement codes, if it does
        with timer(timings, "network_s"):
            single = [i for i, h in enumerate(headers) if h.num_tiles == 1]
            for members in _same_shape_groups([arrays[i].shape for i in single]):
                members = [single[m] for m in members]
                x = _to_input(np.stack([arrays[i] for i in members]), self.device)    # (B, 3, H, W)
                batch_indices, z = self.autoencoder.encode_with_values(x, stages, first_codes, beam=beam)
                for j, i in enumerate(members):                                       # (B, h, w, S), (B, D + R, h, w)
                    indices[i] = batch_indices[j].cpu()
                    if level:
                        values[i] = z[j].float().cpu()
                del z
            for i, h in enumerate(headers):
                if indices[i] is None:
                    indices[i], values[i] = self._encode_tiled(arrays[i], h, stages, first_codes, beam, level > 0)
        files = []
        for n, (prep, h, idx) in enumerate(zip(prepared, headers, indices)):
            streams = self.coder.encode(idx, h.tiles, timings, coarse=coarse)
            if level:
                with timer(timings, "refine_s"):
                    r = self._refine_input(values[n], idx)
                    values[n] = None
                    streams.append(self.refiner.encode(r, idx, level, h.tiles)[0])
            layer = None
            coded_bits = 8 * sum(len(x) for row in streams for x in row)
            if colour_layer and not level and coded_bits < colour.MAX_BPP * h.width * h.height:
                with timer(timings, "colour_s"):
                    layer = self._colour_layer(arrays[n], idx, h)
            colour_stream = b""
            if layer is not None:
                h = dataclasses.replace(h, colour_block=layer.log2_block, colour_step=layer.step,
                                        colour_decays=layer.decays)
                colour_stream = layer.stream
            arrays[n] = None
            meta = pack_metadata(prep.metadata)
            alpha_bytes = b"" if prep.alpha is None else pack_alpha(prep.alpha)
            files.append(container.pack(h, meta, alpha_bytes, streams, colour_stream))
        self.last_timings = timings
        return files

    def _colour_layer(self, arr: np.ndarray, indices: torch.Tensor, header: Header) -> "colour.Layer | None":
        """The colour layer this image gets, or None: the image decoded from its indices as the decoder will,
        against the original (arr: (H', W', 3) uint8, maybe padded), in the file's mode."""
        with torch.no_grad():
            decoded = np.asarray(self._decode_tiled(indices, header, progress="colour layer"))
        original = arr[:header.height, :header.width]
        if header.mode == "L":
            original, decoded = original[..., :1], decoded[..., None]
        return colour.choose(original, decoded)

    def _encode_tiled(self, arr: np.ndarray, header: Header, stages: int, first_codes, beam: int = 1,
                      values: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(H, W, 3) uint8 -> (indices (h, w, stages), and with `values` the encoder's values (D + R, h, w)), on
        the CPU, one tile (with a margin) at a time. Each piece is padded by edge replication as the whole image
        would be. The quantizer's search (beam) works on each latent vector alone, so tiled and whole-image
        coding choose the same indices."""
        h, w = header.grid
        f = self.cfg.downsampling
        out = torch.zeros(h, w, stages, dtype=torch.int16)
        z = torch.zeros(self.cfg.total_dim, h, w) if values else None
        for y0, x0, y1, x1 in header.tiles:
            (a0, b0, a1, b1), (cy, cx) = _with_margin(y0, x0, y1, x1, h, w)
            piece = pad_to_multiple(arr[a0 * f:a1 * f, b0 * f:b1 * f], f)  # only the last row/column of tiles pads
            x = _to_input(piece[None], self.device)
            idx, zt = self.autoencoder.encode_with_values(x, stages, first_codes, beam=beam)  # (1, a1-a0, b1-b0, S)
            out[y0:y1, x0:x1] = idx[0, cy:cy + y1 - y0, cx:cx + x1 - x0].cpu().to(torch.int16)
            if z is not None:
                z[:, y0:y1, x0:x1] = zt[0, :, cy:cy + y1 - y0, cx:cx + x1 - x0].float().cpu()
            tick("encoding", header.num_tiles)
        return out, z

    def _refine_input(self, z: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The encoder's values (D + R, h, w) and their indices (h, w, b) -> the values the refinement codes
        (D + R, h, w) on the CPU: the D quantized values' residual after the b stages, then the R others. In place."""
        h, w, b = indices.shape
        zq = self.autoencoder.rvq.decode(indices.reshape(-1, b).to(self.device).long()).float().cpu()
        d = self.cfg.latent_dim
        z[:d] -= zq.reshape(h, w, d).permute(2, 0, 1)
        return z

    def decompress_batch(self, datas, quality: int | None = None,
                         max_pixels: int | None = DEFAULT_MAX_PIXELS, max_work: float | None = None,
                         detail: str = "coded", seed: int = 0, detail_stages: int | None = None,
                         decoder: str = "fidelity") -> list[Image.Image]:
        """Several .vq files; index grids of one tile and the same shape share one decoder pass."""
        if detail not in DETAIL_CHOICES:
            raise ValueError(f"detail must be one of {', '.join(DETAIL_CHOICES)}, not {detail!r}")
        if decoder not in DECODER_CHOICES:
            raise ValueError(f"decoder must be one of {', '.join(DECODER_CHOICES)}, not {decoder!r}")
        if decoder == "realistic":
            self.realistic_head()
        target = self.detail_target(detail, detail_stages)
        try:
            return self._decompress_batch(datas, quality, max_pixels, max_work, target, seed, decoder)
        except (MemoryError, RuntimeError) as e:
            self._out_of_memory(e, "decode this image")
            raise

    def read_indices(self, data: bytes, quality: int | None = None) -> torch.Tensor:
        """A .vq file's codebook indices, (h, w, stages) int16, as decompress decodes them (the file's stage
        count for the prior, the coarse alphabet of a coarse quality); quality as in decompress."""
        header = self.read_header(data)
        stages, coarse = self.decode_plan(header, quality)
        streams = container.sections(data, header, stages).streams
        return self.coder.decode(streams, *header.grid, header.tiles, coarse=coarse, count=header.stages)

    def detail_target(self, detail: str, detail_stages: int | None) -> int | None:
        """The stage count that detail="sample" fills a file up to (None for detail="coded")."""
        if detail != "sample":
            return None
        target = min(DEFAULT_DETAIL_STAGES, self.cfg.num_stages) if detail_stages is None else detail_stages
        if not isinstance(target, int) or not 1 <= target <= self.cfg.num_stages:
            raise ValueError(f"detail_stages must be from 1 to {self.cfg.num_stages}, not {detail_stages!r}")
        return target

    def sample(self, width: int, height: int, seed: int = 0, stages: int | None = None, like: bytes | None = None,
               keep: int = 1, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
        """An RGB image drawn from the prior, stage by stage in the decoder's order, and decoded: every stage up
        to `stages` (None: all) drawn with `seed`. like: a .vq file whose first `keep` stages are kept (its
        size then replaces width and height): variations of a photo. Deterministic per seed."""
        stages = self.cfg.num_stages if stages is None else stages
        if not isinstance(stages, int) or not 1 <= stages <= self.cfg.num_stages:
            raise ValueError(f"stages must be from 1 to {self.cfg.num_stages}, not {stages!r}")
        given = None
        if like is not None:
            header = self.read_header(like)
            if not 1 <= keep <= min(header.stages, stages):
                raise ValueError(f"keep must be from 1 to {min(header.stages, stages)} (the file codes "
                                 f"{header.stages} stages), not {keep}")
            width, height = header.width, header.height
            check_pixels(width, height, max_pixels, "the image in this .vq file")
            given = self.read_indices(like)[..., :keep]
        header = Header(self.model_name, self.model_hash, width, height, "RGB", 1, stages, self.cfg.downsampling, TILE)
        header.validate()
        check_pixels(width, height, max_pixels, "the image to sample")
        try:
            indices = self.coder.sample(*header.grid, stages, seed, given, header.tiles)
            return self._decode_tiled(indices, header)
        except (MemoryError, RuntimeError) as e:
            self._out_of_memory(e, "sample this image")
            raise

    def _decompress_batch(self, datas, quality, max_pixels, max_work=None, detail_target=None,
                          seed=0, decoder="fidelity") -> list[Image.Image]:
        timings: dict[str, float] = {}
        headers, indices, extras, layers = [], [], [], []
        for data in datas:
            header = self.read_header(data)
            check_pixels(header.width, header.height, max_pixels, "the image in this .vq file")
            stages, coarse = self.decode_plan(header, quality)
            level = self.cfg.refine_level(header.quality if quality is None else quality)
            work = container.work_per_byte(header, stages)
            if max_work is not None and work > max_work:
                raise FormatError(f"this .vq file asks for {work:.1f} index positions per coded byte, over the "
                                  f"limit of {max_work:g} (raise it with --max-work / max_work=)")
            own = quality is None or quality == header.quality
            drawn = detail_target is not None and detail_target > stages    # --detail sample adds stages
            layer = bool(header.colour_block) and own and not drawn
            parts = container.sections(data, header, stages, refinement=bool(level), colour=layer)
            try:
                meta = unpack_metadata(parts.metadata)
            except ValueError as e:
                raise FormatError(f"corrupt .vq file ({e})") from None
            values = None
            if layer:   # cheap: a damaged layer is refused before the prior runs
                try:
                    values = colour.decode(parts.colour, (header.channels, *colour.grid_shape(
                        header.width, header.height, header.colour_block)), header.colour_decays, header.colour_step)
                except ValueError:
                    raise FormatError("corrupt .vq payload (the colour layer does not decode)") from None
            h, w = header.grid
            # the index streams first: damaged ones are refused before the alpha plane is inflated
            idx = self.coder.decode(parts.streams, h, w, header.tiles, timings, coarse=coarse, count=header.stages)
            refined = None
            if level:
                if detail_target is not None:
                    raise ValueError("--detail sample fills in VQ stages; this file codes a refinement level "
                                     "(decode it as it is, or at a VQ quality with --quality)")
                with timer(timings, "refine_s"):
                    refined = self.refiner.decode(parts.refinement, idx, level, header.tiles)
            if detail_target is not None and detail_target > idx.shape[2]:
                with timer(timings, "sample_s"):
                    idx = self.coder.sample(h, w, detail_target, seed, idx, header.tiles)
            indices.append(idx)
            try:
                alpha = None if not parts.alpha else unpack_alpha(parts.alpha, header.width, header.height)
            except ValueError as e:
                raise FormatError(f"corrupt .vq file ({e})") from None
            headers.append(header)
            layers.append(values)
            extras.append((alpha, meta, header.quality if quality is None else quality, refined, level))
        images: list[Image.Image] = [None] * len(headers)  # type: ignore[list-item]
        with timer(timings, "network_s"):
            single = [i for i, h in enumerate(headers) if h.num_tiles == 1 and extras[i][3] is None]
            for members in _same_shape_groups([tuple(indices[i].shape) for i in single]):
                members = [single[m] for m in members]
                batch = torch.stack([indices[i] for i in members]).to(self.device).long()
                x = self.autoencoder.decode_indices(batch)
                if decoder != "fidelity":   # each file at its own quality
                    x = torch.cat([self._finish_pixels(x[j:j + 1], batch.shape[-1], extras[i][2], decoder)
                                   for j, i in enumerate(members)])
                arr = _to_pixels(x)                                                      # (B, H, W, 3)
                for j, i in enumerate(members):
                    images[i] = from_rgb_array(arr[j], headers[i].width, headers[i].height, headers[i].mode)
            for i, h in enumerate(headers):
                if images[i] is None:
                    images[i] = self._decode_tiled(indices[i], h, decoder, extras[i][2], *extras[i][3:])
        for i, (h, values) in enumerate(zip(headers, layers)):
            if values is not None:
                with timer(timings, "colour_s"):
                    images[i] = _with_colour_layer(images[i], values, h)
        self.last_timings = timings
        return [finish(im, alpha, meta) for im, (alpha, meta, *_) in zip(images, extras)]

    def _decode_tiled(self, indices: torch.Tensor, header: Header, decoder: str = "fidelity",
                      quality: int | None = None, refined: torch.Tensor | None = None, level: int = 0,
                      progress: str = "decoding") -> Image.Image:
        """indices (h, w, q) -> the image, one tile (with a margin the decoder's field of view needs) at a time.
        refined: (D + R, h, w), the values of refinement level `level`, or None. progress: what each tile's
        tick says (the encoder's own decode, for the colour layer, says so)."""
        h, w = header.grid
        f = self.cfg.downsampling
        out = Image.new(header.mode, (header.width, header.height))  # pasted into tile by tile: no second copy
        for y0, x0, y1, x1 in header.tiles:
            (a0, b0, a1, b1), (cy, cx) = _with_margin(y0, x0, y1, x1, h, w)
            piece = None if refined is None else refined[None, :, a0:a1, b0:b1].to(self.device)
            x = self.autoencoder.decode_indices(indices[None, a0:a1, b0:b1].to(self.device).long(), piece, level)
            tile = _to_pixels(self._finish_pixels(x, indices.shape[-1], quality, decoder))[0][cy * f:(cy + y1 - y0) * f, cx * f:(cx + x1 - x0) * f]   # (th*f, tw*f, 3)
            py, px = y0 * f, x0 * f
            tile = tile[:header.height - py, :header.width - px]
            out.paste(from_rgb_array(tile, tile.shape[1], tile.shape[0], header.mode), (px, py))
            tick(progress, header.num_tiles)
        return out

    def read_header(self, data: bytes) -> Header:
        """The file's checked header; ModelMismatchError if this model did not make it."""
        header = container.unpack(data)
        if header.model_name != self.model_name or header.model_hash != self.model_hash:
            raise ModelMismatchError(
                f"this file was made with model {header.model_name} (weights {header.model_hash.hex()}); "
                f"the loaded model is {self.model_name} (weights {self.model_hash.hex()})")
        if header.quality > self.cfg.num_qualities:
            raise FormatError(f"corrupt .vq header (quality {header.quality} > {self.cfg.num_qualities})")
        if header.downsampling != self.cfg.downsampling or header.stages != self.cfg.quality_plan(header.quality)[0]:
            raise FormatError("corrupt .vq header (stages or downsampling do not match the model)")
        level = self.cfg.refine_level(header.quality)
        if header.refine_level != level or header.refine_values != (self.cfg.total_dim if level else 0):
            raise FormatError("corrupt .vq header (refinement does not match the model)")
        return header

    def lower_qualities(self, stages: int) -> list[int]:
        """The qualities decodable from a file's first `stages` stages alone: full-alphabet, no refinement."""
        return [q for q in self.qualities if self.cfg.quality_plan(q)[1] is None and not self.cfg.refine_level(q)
                and self.cfg.quality_plan(q)[0] <= stages]

    def decode_plan(self, header: Header, quality: int | None) -> tuple[int, CoarseAlphabet | None]:
        """The stages to decode and stage 0's alphabet, for the file's own quality or a lower one."""
        if quality is None:
            quality = header.quality
            if header.complete_stages < header.stages:
                hint = ""
                if header.complete_stages > 0:
                    lower = self.lower_qualities(header.complete_stages)
                    hint = f"; decode them with quality {max(lower)} or lower" if lower else ""
                raise TruncatedError(f"truncated .vq file ({header.complete_stages} of {header.stages} stages "
                                     f"complete{hint})")
            missing = [part for part, has, whole in (("refinement", header.refine_level, header.refine_complete),
                                                     ("colour layer", header.colour_block, header.colour_complete))
                       if has and not whole]
            if missing:
                lower = [] if self.cfg.quality_plan(header.quality)[1] is not None else [    # coarse: none
                    q for q in self.lower_qualities(header.stages) if q != header.quality]
                hint = f"; decode its stages with quality {max(lower)} or lower" if lower else ""
                raise TruncatedError(f"truncated .vq file (its {missing[0]} is incomplete{hint})")
        quality = self.check_quality(quality)
        if quality > header.quality:
            raise ValueError(f"quality {quality} is above this file's quality {header.quality}")
        if quality != header.quality and self.cfg.refine_level(quality):
            raise ValueError(f"quality {quality} cannot be decoded from a quality-{header.quality} file (it codes "
                             f"another refinement level; the VQ qualities up to {max(self.lower_qualities(header.stages), default=1)} work)")
        stages, coarse_size = self.cfg.quality_plan(quality)
        if stages > header.stages:
            raise ValueError(f"quality {quality} needs {stages} stages; this file codes {header.stages} (the VQ "
                             f"qualities up to {max(self.lower_qualities(header.stages), default=1)} work)")
        if quality != header.quality and (coarse_size is not None or self.cfg.quality_plan(header.quality)[1] is not None):
            low = len(self.cfg.coarse_sizes) + 1
            raise ValueError(f"quality {quality} cannot be decoded from a quality-{header.quality} file "
                             f"(the coarse levels are coded differently; from {low} up works)")
        if stages > header.complete_stages:
            raise TruncatedError(f"truncated .vq file ({header.complete_stages} of {header.stages} stages "
                                 f"complete; quality {quality} needs {stages})")
        return self.quality_plan(quality)


# The tile side (in index positions) new files use: 128 x 128 positions = 1024 x 1024 pixels at f = 8.
TILE = 128
# Index positions added around a tile for the networks: more than the encoder's and decoder's field of view
# (about 6 positions each at f = 8), so a tile's pixels and indices match those of the whole image.
MARGIN = 8


def _with_margin(y0, x0, y1, x1, h, w):
    """A tile's box grown by MARGIN within the grid -> (grown box, where the tile starts inside it)."""
    a0, b0, a1, b1 = max(0, y0 - MARGIN), max(0, x0 - MARGIN), min(h, y1 + MARGIN), min(w, x1 + MARGIN)
    return (a0, b0, a1, b1), (y0 - a0, x0 - b0)


def _with_colour_layer(im: Image.Image, values: np.ndarray, header: Header) -> Image.Image:
    """The decoded image (RGB or L) with the file's colour layer added (exact integer arithmetic)."""
    arr = np.asarray(im)
    gray = arr.ndim == 2
    out = colour.apply(arr[..., None] if gray else arr, values, header.colour_block, header.colour_step)
    return Image.fromarray(out[..., 0] if gray else out, header.mode)


def _to_input(arr: np.ndarray, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(arr, copy=True)).to(device).permute(0, 3, 1, 2).float() / 255


def _to_pixels(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _same_shape_groups(shapes: list[tuple]) -> list[list[int]]:
    """Positions of equal shapes, grouped, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return list(groups.values())


# Models that vqcodec shipped once and no longer does -> the vqcodec version that reads their files.
RETIRED_MODELS = {"vqf8-v1": "0.1.0", "vqf8-v2": "0.1.0", "vqf8-v3": "0.2.0", "vqf8-v4": "0.4.0", "vqf8-v5": "0.5.0", "vqf8-v6": "0.6.0",
                  "vqf8-v7": "0.7.0", "vqf8-v8": "0.8.0", "vqf8-v9": "0.9.0", "vqf8-v10": "0.10.0", "vqf8-v11": "0.11.0", "vqf8-v12": "0.12.0"}


def shipped_model_dir(name: str) -> Path:
    """A model name from a .vq file -> the shipped model's folder. Never a path: a name in a file only ever
    selects a model that ships with (or is installed into) vqcodec."""
    from .container import _NAME_RE
    if not _NAME_RE.fullmatch(name.encode("ascii", "replace")) or name in (".", ".."):
        raise ValueError(f"invalid model name {name!r}")
    shipped = models_dir() / name
    if (shipped / CONFIG_FILE).is_file():
        return shipped
    if name in RETIRED_MODELS:
        raise ValueError(f"this file needs model {name}, which this vqcodec no longer ships; "
                         f"vqcodec {RETIRED_MODELS[name]} decodes it (pip install vqcodec=={RETIRED_MODELS[name]})")
    available = sorted(p.parent.name for p in models_dir().glob(f"*/{CONFIG_FILE}"))
    raise ValueError(f"unknown model {name} (shipped models: {', '.join(available) or 'none'}; "
                     "give another model's folder with --model)")


def resolve_model_dir(model: str | Path | None) -> Path:
    """The user's choice: None -> the default shipped model; a shipped model's name; or a model folder."""
    if model is None:
        return shipped_model_dir(DEFAULT_MODEL)
    path = Path(model)
    if (path / CONFIG_FILE).is_file():
        return path
    if isinstance(model, Path) or any(sep in str(model) for sep in "/\\"):
        raise ValueError(f"not a vqcodec model directory: {model} (missing {CONFIG_FILE})")
    return shipped_model_dir(str(model))


_CACHE: dict[tuple[str, str], VQCodec] = {}


def load_codec(model: str | Path | None = None, device: str = "cpu") -> VQCodec:
    """Load (and cache) a model by name or directory (the user's choice)."""
    return _load(resolve_model_dir(model), device)


def load_codec_for_file(header, device: str = "cpu") -> VQCodec:
    """The shipped model a .vq file names."""
    return _load(shipped_model_dir(header.model_name), device)


def _load(model_dir: Path, device: str) -> VQCodec:
    key = (str(model_dir.resolve()), str(device))
    if key not in _CACHE:
        _CACHE[key] = VQCodec.load(model_dir, device)
    return _CACHE[key]
