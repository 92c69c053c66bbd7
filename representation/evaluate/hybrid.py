"""Prototype (evaluation only): the user autoencoder plus an item-identity block, the user's
history multi-hot as an extra input and a multinomial reconstruction target (Mult-DAE style).

Averaged item vectors lose which items a user had; this keeps the platform's encoder input,
block masking and normaliser (representation.train) and adds the identity on both ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from representation.evaluate.methods import Context
from representation.model import MLP, AutoencoderConfig, BlockPresence, InputBlock
from representation.train import Corruptor, Normaliser, TrainConfig, masked_mse, split_users

log = logging.getLogger(__name__)
HISTORY_GROUPS = ("all", "180d", "30d", "7d")  # longest first


@dataclass(frozen=True)
class IdentityConfig:
    """The item-identity block of the prototype."""

    item_input: bool = True  # feed the L2-normalised history multi-hot to the encoder
    item_target: bool = True  # reconstruct it: softmax over the vocabulary, multinomial NLL
    item_weight: float = 0.05  # NLL weight beside the per-column feature MSE (~1 per column)
    item_dropout: float = 0.5  # input dropout on the multi-hot (denoising, as in Mult-DAE)
    min_users: int = 2  # vocabulary: items in at least this many users' histories ...
    max_items: int | None = None  # ... and at most this many of them, the most popular
    item_hidden: int = 1  # hidden layers of the item decoder; 0 = linear in z_u


class HybridAutoencoder(nn.Module):
    """Features (NaN = missing) + multi-hot -> z_u -> (features, item logits)."""

    def __init__(
        self,
        cfg: AutoencoderConfig,
        blocks: Sequence[InputBlock],
        n_items: int,
        ident: IdentityConfig,
    ):
        super().__init__()
        self.cfg, self.ident = cfg, ident
        self.presence = BlockPresence(blocks, cfg.input_dim)
        self.feat_in = nn.Linear(cfg.input_dim + len(blocks), cfg.hidden_dim)
        self.item_in = nn.Linear(n_items, cfg.hidden_dim, bias=False) if ident.item_input else None
        self.head = nn.Sequential(
            nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_dim, cfg.latent_dim)
        )
        self.decoder = MLP(cfg.latent_dim, cfg.hidden_dim, cfg.input_dim, cfg.n_hidden, 0.0)
        self.item_out = (
            MLP(cfg.latent_dim, cfg.hidden_dim, n_items, ident.item_hidden, 0.0)
            if ident.item_target
            else None
        )

    def encode(self, x: Tensor, items: Tensor) -> Tensor:
        h = self.feat_in(self.presence(x))  # (batch, hidden)
        if self.item_in is not None:
            v = F.normalize(items, dim=1)  # (batch, n_items)
            h = h + self.item_in(F.dropout(v, self.ident.item_dropout, self.training))
        return self.head(h)  # (batch, latent)

    def forward(self, x: Tensor, items: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        z = self.encode(x, items)
        logits = self.item_out(z) if self.item_out is not None else None  # (batch, n_items)
        return self.decoder(z), logits, z


class HybridEncoder:
    """Inference: raw feature rows + (users, catalog) multi-hot -> z_u."""

    def __init__(self, model: HybridAutoencoder, normaliser: Normaliser, vocab: np.ndarray):
        self.model, self.normaliser, self.vocab = model.eval(), normaliser, vocab

    def items(self, m: sp.csr_matrix) -> Tensor:
        return torch.from_numpy(np.asarray((m[:, self.vocab] > 0).todense(), np.float32))

    @torch.inference_mode()
    def embed(self, x: np.ndarray, items: sp.csr_matrix) -> np.ndarray:
        xs = torch.from_numpy(self.normaliser.transform(x))
        return self.model.encode(xs, self.items(items)).numpy().astype(np.float32)


class IdentityCorruptor(Corruptor):
    """Training's corruption; the multi-hot is hidden with the longest horizon it summarises."""

    def __init__(self, blocks: Sequence[InputBlock], cfg: TrainConfig, seed: int):
        super().__init__(blocks, cfg, seed)
        by_group = {b.group: b.start for b in blocks}
        self.history_col = next((by_group[h] for h in HISTORY_GROUPS if h in by_group), None)

    def hide_items(self, noisy: Tensor, items: Tensor) -> Tensor:
        if self.history_col is None:
            return items
        c = self.history_col
        gone = ~torch.isfinite(noisy[:, c : c + 1])  # (b, 1): that horizon hidden or empty
        return items * (~gone)


def _loss(model: HybridAutoencoder, corrupt: IdentityCorruptor, x: Tensor, items: Tensor) -> Tensor:
    noisy = corrupt(x)  # (b, input_dim), hidden groups non-finite
    recon, logits, _ = model(noisy, corrupt.hide_items(noisy, items))
    loss = masked_mse(recon, x)
    if logits is not None:
        nll = -(F.log_softmax(logits, dim=1) * items).sum(dim=1).mean()
        loss = loss + model.ident.item_weight * nll
    return loss


def _epoch(model, opt, corrupt, x: Tensor, items: Tensor, rows: np.ndarray, bs: int, rng) -> float:
    model.train()
    order = torch.from_numpy(rows[rng.permutation(len(rows))])
    total = 0.0
    for start in range(0, len(order), bs):
        idx = order[start : start + bs]
        loss = _loss(model, corrupt, x.index_select(0, idx), items.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(order)


@torch.no_grad()
def _val(model, blocks, cfg: TrainConfig, x: Tensor, items: Tensor, rows: np.ndarray) -> float:
    model.eval()
    corrupt = IdentityCorruptor(blocks, cfg, cfg.seed + 2)
    idx = torch.from_numpy(rows)
    return _loss(model, corrupt, x.index_select(0, idx), items.index_select(0, idx)).item()


def train_hybrid(
    x: np.ndarray,
    blocks: Sequence[InputBlock],
    cfg: AutoencoderConfig,
    tcfg: TrainConfig,
    ctx: Context,
    events: pd.DataFrame,
    ident: IdentityConfig | None = None,
) -> HybridEncoder:
    """Fit like train.train_autoencoder (same normaliser, corruption, early stopping)."""
    ident = ident or IdentityConfig()
    hist = ctx.matrix(ctx.split.user_ids, events, binary=True)
    counts = np.asarray(hist.sum(axis=0)).ravel()
    vocab = np.argsort(-counts, kind="stable")[: ident.max_items or len(counts)]
    vocab = np.sort(vocab[counts[vocab] >= ident.min_users])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tcfg.seed)
        rng = np.random.default_rng(tcfg.seed)
        train_rows, val_rows = split_users(len(x), tcfg.val_fraction, rng)
        normaliser = Normaliser.fit(x, train_rows)
        xs = torch.from_numpy(normaliser.transform(x))  # (users, input_dim)
        model = HybridAutoencoder(cfg, blocks, len(vocab), ident)
        enc = HybridEncoder(model, normaliser, vocab)
        items = enc.items(hist)  # (users, vocab)
        _fit(model, blocks, tcfg, xs, items, train_rows, val_rows, rng)
    model.eval()
    return enc


def _fit(model, blocks, tcfg: TrainConfig, xs, items, train_rows, val_rows, rng) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    corrupt = IdentityCorruptor(blocks, tcfg, tcfg.seed + 1)
    best, best_epoch, best_state, t0 = float("inf"), 0, None, time.perf_counter()
    for epoch in range(1, tcfg.epochs + 1):
        train = _epoch(model, opt, corrupt, xs, items, train_rows, tcfg.batch_size, rng)
        val = _val(model, blocks, tcfg, xs, items, val_rows)
        log.debug("hybrid epoch %d: train %.4f val %.4f", epoch, train, val)
        if val < best * (1 - tcfg.min_delta):
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= tcfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    log.info(
        "hybrid: best epoch %d of %d, val %.4f, %.1fs",
        best_epoch,
        epoch,
        best,
        time.perf_counter() - t0,
    )
