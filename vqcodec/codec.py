"""The codec: VQ-VAE indices, coded with the integer prior into a .vq container.

compress:   image -> pad -> encoder + residual VQ -> indices (h, w, q)
            -> for each stage, for each pass: integer prior tables -> range coder -> payload -> .vq
decompress: .vq -> header checks -> same prior evaluations, decoding each pass -> indices -> decoder -> crop
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import container
from .autoencoder import VQAutoencoder
from .config import ModelConfig
from .container import FormatError, Header
from .coding import CoarseAlphabet, IndexCoder, timer
from .images import from_rgb_array, open_image, pad_to_multiple, to_codec_mode, to_rgb_array
from .prior import IntegerPrior, PriorNet

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_MODEL = "vqf8-v3"


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
                 coarse_codes: torch.Tensor | None = None):
        """coarse_codes: stage-0 codes in the order the coarse levels take them (a level of size n
        uses the first n); needed when the config has coarse_sizes."""
        self.cfg = autoencoder.cfg
        self.device = torch.device(device)
        self.autoencoder = autoencoder.to(self.device).eval()
        self.prior = prior.to(self.device)
        self.coder = IndexCoder(self.prior)
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
    def serialize(autoencoder: VQAutoencoder, prior: IntegerPrior, coarse_codes: torch.Tensor | None = None) -> bytes:
        tensors = {f"ae.{k}": v.detach().float().cpu().contiguous()
                   for k, v in autoencoder.state_dict().items() if v.dtype.is_floating_point}
        for k, v in prior.tensors().items():
            small = torch.int8 if k.endswith(".weight") else torch.int32
            tensors[f"prior.{k}"] = v.to(small).cpu().contiguous()
        if coarse_codes is not None:
            tensors["coarse.codes"] = coarse_codes.to(torch.int32).cpu().contiguous()
        return save_safetensors(tensors, metadata={"config": json.dumps(autoencoder.cfg.to_dict())})

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
        return cls(ae, prior, weights, device, tensors.get("coarse.codes"))

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> "VQCodec":
        model_dir = Path(model_dir)
        try:
            config = ModelConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))
            weights = (model_dir / WEIGHTS_FILE).read_bytes()
        except FileNotFoundError as e:
            raise ValueError(f"not a vqcodec model directory: {model_dir} (missing {Path(e.filename).name})") from None
        return cls.from_bytes(weights, config, device)

    @classmethod
    def random(cls, config: ModelConfig | None = None, seed: int = 0, device: str = "cpu") -> "VQCodec":
        """A randomly initialised model (for tests): codebooks from k-means on random latents."""
        config = config or ModelConfig(name="tiny-random", channels=(8, 16), latent_dim=4, codebook_size=16,
                                       num_stages=3, prior_hidden=8)
        torch.manual_seed(seed)
        ae = VQAutoencoder(config).train()
        with torch.no_grad():
            ae.rvq(torch.randn(1024, config.latent_dim))  # k-means init of every stage
        prior_net = PriorNet(config)
        prior = IntegerPrior.from_float(prior_net, [vq.codebook for vq in ae.rvq.stages])
        coarse = torch.randperm(config.codebook_size)[:max(config.coarse_sizes)] if config.coarse_sizes else None
        return cls.from_bytes(cls.serialize(ae.eval(), prior, coarse), config, device)

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
    def compress(self, image, quality: int, notes: list[str] | None = None) -> bytes:
        """A PIL image or path -> the bytes of a .vq file."""
        return self.compress_batch([image], quality, notes)[0]

    def decompress(self, data: bytes) -> Image.Image:
        """The bytes of a .vq file -> a PIL image."""
        return self.decompress_batch([data])[0]

    def compress_batch(self, images, quality: int, notes: list[str] | None = None) -> list[bytes]:
        """Several images; those of the same padded size share one network pass (worth it on a GPU).

        last_timings then holds the split of the whole batch.
        """
        quality = self.check_quality(quality)
        stages, coarse = self.quality_plan(quality)
        first_codes = None if coarse is None else coarse.codes.to(self.device)
        timings: dict[str, float] = {}
        headers, arrays = [], []
        for image in images:
            im, mode, conversion_notes = to_codec_mode(open_image(image))
            if notes is not None:
                notes.extend(conversion_notes)
            header = Header(self.model_name, self.model_hash, im.width, im.height, mode, quality)
            header.validate()
            headers.append(header)
            arrays.append(pad_to_multiple(to_rgb_array(im), self.cfg.downsampling))
        indices: list[torch.Tensor] = [None] * len(arrays)  # type: ignore[list-item]
        with timer(timings, "network_s"):
            for members in _same_shape_groups([a.shape for a in arrays]):
                x = torch.from_numpy(np.stack([arrays[i] for i in members])).to(self.device)
                x = x.permute(0, 3, 1, 2).float() / 255                          # (B, 3, H, W)
                batch_indices = self.autoencoder.encode_indices(x, stages, first_codes)  # (B, h, w, stages)
                for j, i in enumerate(members):
                    indices[i] = batch_indices[j]
        files = [container.pack(h, self.coder.encode(idx, timings, coarse=coarse)) for h, idx in zip(headers, indices)]
        self.last_timings = timings
        return files

    def decompress_batch(self, datas) -> list[Image.Image]:
        """Several .vq files; index grids of the same shape share one decoder pass."""
        timings: dict[str, float] = {}
        f = self.cfg.downsampling
        headers, indices = [], []
        for data in datas:
            header, payload = self.read_header(data)
            h, w = -(-header.height // f), -(-header.width // f)
            headers.append(header)
            stages, coarse = self.quality_plan(header.quality)
            indices.append(self.coder.decode(payload, h, w, stages, timings, coarse=coarse))
        images: list[Image.Image] = [None] * len(headers)  # type: ignore[list-item]
        with timer(timings, "network_s"):
            for members in _same_shape_groups([tuple(i.shape) for i in indices]):
                x = self.autoencoder.decode_indices(torch.stack([indices[i] for i in members]))
                arr = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
                for j, i in enumerate(members):
                    images[i] = from_rgb_array(arr[j], headers[i].width, headers[i].height, headers[i].mode)
        self.last_timings = timings
        return images

    def read_header(self, data: bytes) -> tuple[Header, bytes]:
        header, payload = container.unpack(data)
        if header.model_name != self.model_name or header.model_hash != self.model_hash:
            raise ModelMismatchError(
                f"this file was made with model {header.model_name} (weights {header.model_hash.hex()}); "
                f"the loaded model is {self.model_name} (weights {self.model_hash.hex()})")
        if header.quality > self.cfg.num_qualities:
            raise FormatError(f"corrupt .vq header (quality {header.quality} > {self.cfg.num_qualities})")
        return header, payload


def _same_shape_groups(shapes: list[tuple]) -> list[list[int]]:
    """Positions of equal shapes, grouped, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return list(groups.values())


def resolve_model_dir(model: str | Path | None) -> Path:
    """None -> the default shipped model; a shipped model's name; or a path to a model directory."""
    if model is None:
        model = DEFAULT_MODEL
    path = Path(model)
    if (path / CONFIG_FILE).exists():
        return path
    shipped = models_dir() / str(model)
    if (shipped / CONFIG_FILE).exists():
        return shipped
    available = sorted(p.parent.name for p in models_dir().glob(f"*/{CONFIG_FILE}"))
    raise ValueError(f"unknown model {model!s} (shipped models: {', '.join(available) or 'none'})")


_CACHE: dict[tuple[str, str], VQCodec] = {}


def load_codec(model: str | Path | None = None, device: str = "cpu") -> VQCodec:
    """Load (and cache) a model by name or directory."""
    model_dir = resolve_model_dir(model)
    key = (str(model_dir.resolve()), str(device))
    if key not in _CACHE:
        _CACHE[key] = VQCodec.load(model_dir, device)
    return _CACHE[key]
