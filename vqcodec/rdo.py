"""Rate-constrained choice of the residual-VQ indices (entropy-constrained VQ, as in NVTC).

The plain encoder takes the nearest code at every stage and position. Here each index is chosen by

    || residual - codebook[k] ||^2  +  lam * bits(k)

where bits(k) = -log2 p(k) under the exact integer prior (capped, as the coder will code it), in the order
the decoder decodes: stage by stage, and within a stage pass by pass, so every table is the one the decoder
will see. It is an encoder choice only: the file format and the decoder are unchanged, and lam = 0 gives the
nearest codes. The prior runs once per (stage, pass), as when coding.
"""
from __future__ import annotations

import numpy as np
import torch

from .coding import IndexCoder
from .entropy import cap_probabilities


@torch.no_grad()
def rdo_indices(coder: IndexCoder, codebooks: list[torch.Tensor], z: torch.Tensor, stages: int, lam: float,
                stats: dict | None = None) -> torch.Tensor:
    """z: (h, w, D) float latents of one tile -> indices (h, w, stages) int64.

    codebooks: the float codebooks of the residual stages, (K, D) each. stats, if given, accumulates the
    ideal code length of the chosen indices ("ideal_bits")."""
    prior = coder.prior
    h, w, _ = z.shape
    masks, known = coder._schedule(h, w)
    residual = z.float().clone()                                              # (h, w, D)
    prev = torch.zeros(prior.cfg.latent_dim, h, w, dtype=torch.int64, device=coder.device)
    out = torch.zeros(h, w, stages, dtype=torch.int64, device=coder.device)
    for s in range(stages):
        cb = codebooks[s].float()                                             # (K, D)
        cb_sq = cb.pow(2).sum(1)                                              # (K,)
        current = torch.zeros(h, w, dtype=torch.int64, device=coder.device)
        for p in range(masks.shape[0]):
            freqs = cap_probabilities(coder._tables(s, prev, prior.input_vectors(s, current), known[p], masks[p]))
            bits = np.log2(freqs.sum(1, keepdims=True)) - np.log2(freqs)     # (N, K) code lengths
            r = residual[masks[p]]                                            # (N, D)
            dist = r.pow(2).sum(1, keepdim=True) - 2 * r @ cb.t() + cb_sq[None]
            cost = dist + lam * torch.from_numpy(bits).to(dist.device, dist.dtype)
            choice = cost.argmin(1)
            current[masks[p]] = choice
            if stats is not None:
                stats["ideal_bits"] = stats.get("ideal_bits", 0.0) + float(bits[np.arange(len(bits)), choice.cpu().numpy()].sum())
        out[..., s] = current
        residual -= cb[current]
        prev = prev + prior.input_vectors(s, current)
    return out
