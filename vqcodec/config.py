"""Model configuration: one dataclass, stored in every checkpoint and exported model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vq-f8-rvq10"
    channels: tuple[int, ...] = (64, 128, 192)  # encoder widths at 1/2, 1/4, 1/8 resolution
    latent_dim: int = 32                        # D: size of each latent / codebook vector
    codebook_size: int = 512                    # K: entries per residual stage
    num_stages: int = 10                        # S: residual VQ stages; quality q uses the first q
    prior_hidden: int = 64                      # width of each stage's integer prior network
    prior_passes: int = 4                       # spatial decoding passes per stage (2x2 schedule)

    @property
    def downsampling(self) -> int:
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)
