"""Residual vector quantizer with EMA codebooks, k-means init and dead-code restart.

The codebook state lives in buffers; each trick is a small named method. Distances are in fp32.
Each code may carry an encoder-side cost (`code_cost`, entropy-constrained VQ): the encoder picks the code
of least squared distance + cost, so a code that is cheap to send wins where it is nearly as close.
The decoder never reads it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def distributed() -> bool:
    """Whether this process is one rank of several (torchrun): codebook statistics are then shared."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of t over every rank (t itself when training in one process)."""
    if distributed():
        dist.all_reduce(t)
    return t


def from_rank0(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's t on every rank (in place): a choice made at random stays the same on every rank."""
    if distributed():
        dist.broadcast(t, 0)
    return t


class VectorQuantizer(nn.Module):
    """One codebook of K vectors of size D, trained by exponential moving averages."""

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, eps: float = 1e-5,
                 dead_threshold: float = 1.0):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.eps, self.dead_threshold = decay, eps, dead_threshold
        self.register_buffer("codebook", torch.randn(codebook_size, dim) * 0.01)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("code_cost", torch.zeros(codebook_size))  # lambda x code length; 0 = nearest code

    def code_term(self, cb: torch.Tensor) -> torch.Tensor:
        """(K, D) codebook -> (K,) the per-code part of the encoder's cost: |c|^2 + code_cost (fp32)."""
        return cb.pow(2).sum(1) + self.code_cost.float()

    def nearest(self, z: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """z: (N, D) -> indices (N,) of the nearest codebook vectors (fp32 distances, plus code_cost).

        allowed: (M,) codebook indices to choose from (a coarse level); None = the whole codebook.
        """
        z = z.float()
        term = self.code_term(self.codebook.float())
        cb = self.codebook.float() if allowed is None else self.codebook.float()[allowed]
        term = term if allowed is None else term[allowed]
        dist = (z.pow(2).sum(1, keepdim=True) - 2 * z @ cb.t() + term[None])
        nearest = dist.argmin(1)
        return nearest if allowed is None else allowed[nearest]

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook)

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iters: int = 10) -> None:
        """Initialise the codebook by k-means on the first batch."""
        z = z.float()
        cb = from_rank0(z[torch.randint(0, z.shape[0], (self.codebook_size,), device=z.device)].clone())
        for _ in range(iters):
            idx = ((z.pow(2).sum(1, keepdim=True) - 2 * z @ cb.t() + cb.pow(2).sum(1)[None])).argmin(1)
            counts = all_sum(torch.bincount(idx, minlength=self.codebook_size).float())
            sums = all_sum(torch.zeros_like(cb).index_add_(0, idx, z))
            filled = counts > 0
            cb[filled] = sums[filled] / counts[filled, None]
        self.codebook.copy_(cb)
        self.embed_sum.copy_(cb)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        z = z.float()
        onehot_counts = all_sum(torch.bincount(indices, minlength=self.codebook_size).float())
        sums = all_sum(torch.zeros_like(self.embed_sum).index_add_(0, indices, z))
        self.cluster_size.mul_(self.decay).add_(onehot_counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> int:
        """Replace codes whose EMA usage fell below the threshold by random inputs of this batch."""
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            z = z.float()
            pick = from_rank0(z[torch.randint(0, z.shape[0], (n_dead,), device=z.device)].contiguous())
            self.codebook[dead] = pick
            self.embed_sum[dead] = pick
            self.cluster_size[dead] = 1.0
        return n_dead

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (N, D) -> (quantized (N, D), indices (N,)). Updates the codebook when training."""
        if self.training and not bool(self.initialized):
            self.kmeans_init(z.detach())
        indices = self.nearest(z.detach())
        if self.training:
            self.ema_update(z.detach(), indices)
        return self.lookup(indices), indices


class ResidualVQ(nn.Module):
    """S stages; stage s quantizes what stages < s left over. Quality q = the first q stages."""

    def __init__(self, num_stages: int, codebook_size: int, dim: int):
        super().__init__()
        self.stages = nn.ModuleList(VectorQuantizer(codebook_size, dim) for _ in range(num_stages))

    def forward(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """z: (N, D) -> (per-stage quantized vectors [S x (N, D)], indices (N, S)). In fp32 under autocast too:
        distances, k-means and EMA statistics never run in bf16."""
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z.float())

    def _forward(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        residual = z
        quantized, indices = [], []
        for vq in self.stages:
            q, idx = vq(residual)
            residual = residual - q.detach()
            quantized.append(q)
            indices.append(idx)
        return quantized, torch.stack(indices, 1)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> int:
        residual, restarted = z.float(), 0
        for vq in self.stages:
            restarted += vq.restart_dead_codes(residual)
            residual = residual - vq.lookup(vq.nearest(residual))
        return restarted

    def encode(self, z: torch.Tensor, num_stages: int, first_codes: torch.Tensor | None = None,
               beam: int = 1) -> torch.Tensor:
        """z: (N, D) -> indices (N, num_stages), no codebook update.

        first_codes: (M,) the only codes stage 0 may use (a coarse quality level); None = all.
        beam: 1 = greedy, the nearest code at each stage; more = beam_search.
        """
        if beam > 1:
            return self.beam_search(z, num_stages, beam, first_codes)
        residual, out = z.float(), []
        for s, vq in enumerate(self.stages[:num_stages]):
            idx = vq.nearest(residual, first_codes if s == 0 else None)
            residual = residual - vq.lookup(idx)
            out.append(idx)
        return torch.stack(out, 1)

    @torch.no_grad()
    def beam_search(self, z: torch.Tensor, num_stages: int, beam: int, first_codes: torch.Tensor | None = None,
                    chunk: int = 4096) -> torch.Tensor:
        """Keep the `beam` paths of lowest squared error plus code costs so far, from stage to stage; return
        each vector's best path.
        z: (N, D) -> (N, num_stages). Distances in fp32; `chunk` vectors at a time bound the memory."""
        out = []
        for part in z.float().split(chunk):
            n = part.shape[0]
            residual = part[:, None]                                            # (n, B, D), B = 1 at first
            paths = part.new_zeros(n, 1, 0, dtype=torch.long)
            spent = part.new_zeros(n, 1)                                        # (n, B) code costs so far
            for s, vq in enumerate(self.stages[:num_stages]):
                cb = vq.codebook.float()                                        # (K, D)
                b, d = residual.shape[1], residual.shape[2]
                dist = torch.addmm(vq.code_term(cb)[None], residual.reshape(n * b, d), cb.t(), alpha=-2)
                dist = dist.view(n, b, -1).add_(residual.pow(2).sum(2, keepdim=True) + spent[..., None])  # (n, B, K)
                if s == 0 and first_codes is not None:
                    barred = torch.ones(cb.shape[0], dtype=torch.bool, device=cb.device)
                    barred[first_codes] = False
                    dist[:, :, barred] = float("inf")
                k = dist.shape[2]
                width = min(beam, int(dist[0].isfinite().sum()))
                best, flat = dist.reshape(n, -1).topk(width, dim=1, largest=False)  # (n, width), ascending
                parent, code = flat // k, flat % k
                spent = spent.gather(1, parent) + vq.code_cost.float()[code]
                residual = residual.gather(1, parent[..., None].expand(-1, -1, residual.shape[2])) - cb[code]
                paths = torch.cat([paths.gather(1, parent[..., None].expand(-1, -1, s)), code[..., None]], 2)
            out.append(paths[:, 0])                                             # the lowest final score
        return torch.cat(out)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (N, q) -> sum of the first q stages' vectors (N, D)."""
        out = 0
        for s in range(indices.shape[1]):
            out = out + self.stages[s].lookup(indices[:, s])
        return out
