"""Mult-VAE baseline (Liang et al. 2018, "Variational Autoencoders for Collaborative
Filtering"): a VAE over the binary multi-hot, 600-200, multinomial likelihood, annealed KL.
With `variational=False` it is the paper's Mult-DAE: the same network and input dropout,
no sampling and no KL term.

The user vector is the encoder mean (200-d). Items seen by fewer than two history users are
left out of its vocabulary: they carry no co-occurrence and dominate the output layer's cost.
The input is a dense (users, vocabulary) matrix: a baseline for evaluation-sized data.
Matrix in, vectors out: `userrep evaluate` and `downstream compare` both fit it here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MultVaeConfig:
    hidden_dim: int = 600  # the paper's architecture: [I -> 600 -> 200 -> 600 -> I]
    latent_dim: int = 200
    dropout: float = 0.5  # input dropout (the paper's denoising)
    beta_max: float = 0.2  # the paper's best KL weight, reached by linear annealing
    anneal_fraction: float = 0.8  # share of the updates over which beta grows 0 -> beta_max
    epochs: int = 100  # bounded: the paper runs 200 with validation-based selection
    batch_size: int = 128  # small: ~1-2k users give only a handful of updates per epoch
    lr: float = 1e-3
    min_users: int = 2  # item vocabulary: items in at least this many users' histories
    variational: bool = True  # False: Mult-DAE (z = mu in training too, no KL term)


class MultVaeNet(nn.Module):
    """q(z|x) = N(mu, sigma) from a tanh MLP; p(x|z) = multinomial over items."""

    def __init__(self, n_items: int, cfg: MultVaeConfig):
        super().__init__()
        self.cfg = cfg
        self.enc = nn.Linear(n_items, cfg.hidden_dim)
        self.enc_out = nn.Linear(cfg.hidden_dim, 2 * cfg.latent_dim)
        self.dec = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden_dim), nn.Tanh(), nn.Linear(cfg.hidden_dim, n_items)
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.normalize(x, dim=1)  # (batch, n_items), rows L2-normalised as in the paper
        x = F.dropout(x, self.cfg.dropout, self.training)
        h = torch.tanh(self.enc(x))  # (batch, hidden)
        mu, logvar = self.enc_out(h).chunk(2, dim=1)  # (batch, latent) each
        return mu, logvar

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        sample = self.training and self.cfg.variational
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.dec(z), mu, logvar  # logits (batch, n_items)


def vae_loss(logits: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, beta: float) -> Tensor:
    """Negative multinomial log-likelihood + beta * KL(q(z|x) || N(0, I)), per user."""
    nll = -(F.log_softmax(logits, dim=1) * x).sum(dim=1).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    return nll + beta * kl


class MultVae:
    """Fit on a (users, items) history matrix; embed any rows over the same items."""

    def __init__(self, cfg: MultVaeConfig | None = None):
        self.cfg = cfg or MultVaeConfig()

    def _x(self, m: sp.csr_matrix) -> Tensor:
        m = m[:, self.vocab].tocoo()
        x = torch.zeros(m.shape, dtype=torch.float32)  # (users, vocab)
        x[torch.from_numpy(m.row.astype(np.int64)), torch.from_numpy(m.col.astype(np.int64))] = 1.0
        return x

    def fit(self, hist: sp.csr_matrix, seed: int) -> None:
        """Fit on a (users, items) history matrix (any weights: only > 0 counts)."""
        cfg = self.cfg
        self.vocab = np.flatnonzero(np.asarray((hist > 0).sum(axis=0)).ravel() >= cfg.min_users)
        x = self._x(hist)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = MultVaeNet(len(self.vocab), cfg)
            self._train(x, np.random.default_rng(seed))
        self.net.eval()

    def _train(self, x: Tensor, rng: np.random.Generator) -> None:
        cfg = self.cfg
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        steps_per_epoch = -(-len(x) // cfg.batch_size)
        anneal_steps = max(1, int(cfg.anneal_fraction * cfg.epochs * steps_per_epoch))
        step = 0
        self.net.train()
        for epoch in range(cfg.epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            total = 0.0
            for start in range(0, len(x), cfg.batch_size):
                xb = x.index_select(0, order[start : start + cfg.batch_size])  # (b, vocab)
                logits, mu, logvar = self.net(xb)
                beta = cfg.beta_max * min(1.0, step / anneal_steps) if cfg.variational else 0.0
                loss = vae_loss(logits, xb, mu, logvar, beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                total += loss.item() * len(xb)
            log.debug("mult-vae epoch %d: loss %.3f", epoch + 1, total / len(x))

    @torch.no_grad()
    def embed(self, m: sp.csr_matrix) -> np.ndarray:
        """(users, latent) float32 encoder means of a (users, items) matrix's rows."""
        return self.net.encode(self._x(m))[0].numpy().astype(np.float32)  # (users, latent) = mu
