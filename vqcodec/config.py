"""Model configuration: one dataclass, stored in every checkpoint and exported model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """A model's architecture. The defaults are the shipped model's (vqf8-v13), without refinement."""
    name: str = "vqf8-custom"
    channels: tuple[int, ...] = (64, 128, 192)  # encoder widths at 1/2, 1/4, 1/8 resolution
    latent_dim: int = 32                        # D: size of each latent / codebook vector
    codebook_size: int = 512                    # K: entries per residual stage
    num_stages: int = 10                        # S: residual VQ stages
    prior_hidden: int = 64                      # width of each stage's integer prior network
    prior_passes: int = 4                       # spatial decoding passes per stage: 4 = the 2x2 schedule, 6 = a
                                                # 4x4 lattice first, then the 2x2 schedule (prior.pass_masks)
    prior_kernel: int = 3                       # the prior's spatial context: k x k positions (3 or 5)
    stage0_prior_kernel: int = 5                # stage 0's own window and schedule (stage 0 carries the most
    stage0_prior_passes: int = 6                # predictable bits); 0: as prior_kernel / prior_passes
    prior_stage_count: bool = True              # the prior also sees how many stages the file codes (the header's
                                                # stages): a bias per (stage, count) on its first layer and logits
    coarse_sizes: tuple[int, ...] = (32, 128)   # extra lowest levels: stage 0 limited to its first n coarse codes
    transform: str = "klt-hybrid"               # "conv", or "klt-hybrid": a linear block transform (KLT at
                                                # init) plus the conv networks as branches that start at zero
    stage_gains: bool = True                    # the decoder conditioned on the number of decoded stages
                                                # (autoencoder.StageGains)
    postfilter: int = 16                        # width of a full-resolution residual filter after the decoder
                                                # (autoencoder.PostFilter); 0: none
    refine_levels: int = 0                      # scalar refinement levels above the VQ stages (refine.py); 0: none
    refine_dim: int = 0                         # R: latent values per position beside the D quantized ones, coded
                                                # only by the refinement levels (the KLT's next R at init)
    refine_hidden: int = 64                     # width of the refinement's mean-and-scale network
    vq_qualities: int = 0                       # the VQ-only qualities above the coarse ones: 1..vq_qualities stages
                                                # (0: all S)
    refine_ladder: tuple[tuple[int, int], ...] = ()  # the qualities above those: (refinement level k, VQ stages b)

    def __post_init__(self):
        if self.transform not in ("conv", "klt-hybrid"):
            raise ValueError(f"transform must be conv or klt-hybrid, not {self.transform!r}")
        if self.prior_passes not in (1, 2, 4, 6):
            raise ValueError(f"prior_passes must be 1, 2, 4 or 6, not {self.prior_passes}")
        if self.prior_kernel not in (3, 5):
            raise ValueError(f"prior_kernel must be 3 or 5, not {self.prior_kernel}")
        if self.stage0_prior_passes not in (0, 1, 2, 4, 6):
            raise ValueError(f"stage0_prior_passes must be 0, 1, 2, 4 or 6, not {self.stage0_prior_passes}")
        if self.stage0_prior_kernel not in (0, 3, 5):
            raise ValueError(f"stage0_prior_kernel must be 0, 3 or 5, not {self.stage0_prior_kernel}")
        if not 0 <= self.postfilter <= 64:
            raise ValueError(f"postfilter must be from 0 to 64, not {self.postfilter}")
        if not 0 <= self.refine_levels <= 32:
            raise ValueError(f"refine_levels must be from 0 to 32, not {self.refine_levels}")
        if (self.refine_levels > 0) != (self.refine_dim > 0):
            raise ValueError("refine_levels and refine_dim go together: both 0, or both above 0")
        if not 2 <= self.codebook_size <= 1 << 15:
            raise ValueError(f"codebook_size must be from 2 to {1 << 15}")
        if not 0 <= self.vq_qualities <= self.num_stages:
            raise ValueError(f"vq_qualities must be from 0 to {self.num_stages}, not {self.vq_qualities}")
        for k, b in self.refine_ladder:
            if not (1 <= k <= self.refine_levels and 1 <= b <= self.num_stages):
                raise ValueError(f"refine_ladder entry ({k}, {b}) is not a refinement level on 1 to "
                                 f"{self.num_stages} stages of this model")
        sizes = self.coarse_sizes
        if any(not 2 <= n < self.codebook_size for n in sizes) or list(sizes) != sorted(set(sizes)):
            raise ValueError(f"coarse_sizes must rise strictly, each from 2 to {self.codebook_size - 1}: {sizes}")

    def stage_prior(self, stage: int) -> tuple[int, int]:
        """(window k, passes) of the prior of one residual stage."""
        if stage == 0:
            return self.stage0_prior_kernel or self.prior_kernel, self.stage0_prior_passes or self.prior_passes
        return self.prior_kernel, self.prior_passes

    @property
    def prior_kernels(self) -> list[int]:
        return [self.stage_prior(t)[0] for t in range(self.num_stages)]

    @property
    def num_qualities(self) -> int:
        return len(self.coarse_sizes) + (self.vq_qualities or self.num_stages) + len(self.refine_ladder)

    def refine_level(self, quality: int) -> int:
        """Quality -> the refinement level it codes above its VQ stages (0: none)."""
        top = len(self.coarse_sizes) + (self.vq_qualities or self.num_stages)
        return self.refine_ladder[quality - top - 1][0] if quality > top else 0

    def quality_plan(self, quality: int) -> tuple[int, int | None]:
        """Quality 1..num_qualities -> (residual stages coded, coarse alphabet size of stage 0 or None).

        The lowest len(coarse_sizes) levels code stage 0 alone with a reduced alphabet; the others
        code the first (quality - len(coarse_sizes)) stages in full, up to vq_qualities stages; above those, each
        refine_ladder entry (k, b) codes b stages and refinement level k (refine_level).
        """
        if not 1 <= quality <= self.num_qualities:
            raise ValueError(f"quality must be from 1 to {self.num_qualities}, not {quality}")
        if quality <= len(self.coarse_sizes):
            return 1, self.coarse_sizes[quality - 1]
        top = len(self.coarse_sizes) + (self.vq_qualities or self.num_stages)
        if quality > top:
            return self.refine_ladder[quality - top - 1][1], None
        return quality - len(self.coarse_sizes), None

    @property
    def total_dim(self) -> int:
        """The encoder's output values per position: D quantized, then R refined."""
        return self.latent_dim + self.refine_dim

    @property
    def decoder_levels(self) -> int:
        """Entries of the decoder's per-level gains: 1..S stages, then one per (refinement level k, VQ stages b
        under it): decoder_level(k, b)."""
        return self.num_stages + self.refine_levels * self.num_stages

    def decoder_level(self, level, base):
        """Refinement level k (1..L) on b VQ stages (1..S) -> its entry of the decoder's gains (1-based)."""
        return self.num_stages + (level - 1) * self.num_stages + base

    @property
    def downsampling(self) -> int:
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, partial: bool = False) -> "ModelConfig":
        """A config file or checkpoint's dict, which must name every field (a default may change between
        releases, so a file never leans on one). partial=True (a recipe's "model"): missing fields take the
        defaults, the shipped architecture."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        missing = known - set(d) - {"name", "refine_levels", "refine_dim", "refine_hidden", "vq_qualities",
                                    "refine_ladder"}
        if missing and not partial:
            raise ValueError(f"model config lacks {sorted(missing)}: a config file names every field")
        d = dict(d)
        for key in ("channels", "coarse_sizes"):
            if key in d:
                d[key] = tuple(int(c) for c in d[key])
        if "refine_ladder" in d:
            d["refine_ladder"] = tuple((int(k), int(b)) for k, b in d["refine_ladder"])
        return cls(**d)
