"""SASRec baseline (Kang and McAuley 2018, "Self-Attentive Sequential Recommendation"): a causal
transformer over each user's item sequence, trained on next-item prediction.

Item embeddings (scaled by sqrt(d)) plus learned positions, 2 blocks of pre-norm causal
self-attention and a point-wise feed-forward layer, hidden 64, the last MAX_LEN items of a
sequence (left-padded). Each position predicts the next item by a dot product with the shared
item embeddings: a full softmax over the vocabulary when it is small, a sampled softmax against
negatives shared by the batch when it is large. Adam, at most `epochs` epochs and `max_updates`
batches; as in the paper, each user's last item is held out of training, and the mean
reciprocal rank of a random slice of these held-out items (among all items) stops training
early; the best epoch's weights are kept.

The user vector is the last position's hidden state (64-d). Sequences in, vectors out, like
baselines/multvae.py: `fit` on sequences of item indices (0 .. n_items-1) of the training users,
`embed` any users' sequences over the same indices. CPU, seeded: one seed gives one model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SasRecConfig:
    hidden_dim: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50  # the last 50 items of a sequence (the paper's setting for sparse data)
    dropout: float = 0.2
    epochs: int = 200  # at most (the paper's budget); early stopping usually ends sooner
    max_updates: int = 3000  # and at most this many batches: bounds the cost on many users
    patience: int = 10  # epochs without a better validation score before stopping
    batch_size: int = 128
    lr: float = 1e-3
    full_softmax_max: int = 4096  # vocabularies up to this size get the full softmax
    n_negatives: int = 256  # sampled softmax: negatives per batch (shared by its positions)
    val_users_max: int = 2000  # users whose held-out last item scores an epoch (a random slice)


class SasRecNet(nn.Module):
    """Item + position embeddings, causal transformer blocks, a final layer norm."""

    def __init__(self, n_items: int, cfg: SasRecConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.items = nn.Embedding(n_items + 1, d, padding_idx=0)  # index 0: padding
        self.positions = nn.Embedding(cfg.max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.attn_norm = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.n_blocks))
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
            for _ in range(cfg.n_blocks)
        )
        self.ffn_norm = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.n_blocks))
        self.ffn = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(d, d))
            for _ in range(cfg.n_blocks)
        )
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        causal = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)  # True: may not attend

    def forward(self, seq: Tensor) -> Tensor:
        """(batch, max_len) item indices + 1 (0 = padding) -> (batch, max_len, d) states."""
        keep = (seq > 0).unsqueeze(-1).float()  # (batch, len, 1): padding positions zeroed
        x = self.items(seq) * self.cfg.hidden_dim**0.5 + self.positions.weight[None]
        x = self.drop(x) * keep
        for norm, attn, ffn_norm, ffn in zip(
            self.attn_norm, self.attn, self.ffn_norm, self.ffn, strict=True
        ):
            q = norm(x)
            h, _ = attn(q, x, x, attn_mask=self.causal, need_weights=False)
            x = ffn_norm(q + self.drop(h))  # the paper's residuals add to the normed inputs
            x = (x + self.drop(ffn(x))) * keep
        return self.last_norm(x)

    def item_weights(self) -> Tensor:
        """(n_items, d) output embeddings (the input ones, shared), without the padding row."""
        return self.items.weight[1:]


def _windows(sequences: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """(users, max_len) the last max_len items of each sequence, +1, left-padded with 0."""
    out = np.zeros((len(sequences), max_len), np.int64)
    for r, s in enumerate(sequences):
        s = np.asarray(s, np.int64)[-max_len:]
        if len(s):
            out[r, max_len - len(s) :] = s + 1
    return out


class SasRec:
    """Fit on training users' item sequences; embed any users' sequences."""

    def __init__(self, cfg: SasRecConfig | None = None):
        self.cfg = cfg or SasRecConfig()
        self.epochs_run = 0
        self.best_epoch = 0

    def fit(self, sequences: Sequence[np.ndarray], n_items: int, seed: int) -> None:
        """sequences: per training user, item indices in [0, n_items) in time order."""
        cfg = self.cfg
        self.n_items = n_items
        rng = np.random.default_rng(seed)
        seqs = [np.asarray(s, np.int64) for s in sequences if len(s) >= 2]
        # training: every sequence but its last item, each position predicting the next item
        train = [s[:-1] for s in seqs if len(s) >= 3]
        x = _windows([s[:-1] for s in train], cfg.max_len)  # (users, len) inputs
        y = _windows([s[1:] for s in train], cfg.max_len)  # (users, len) targets, 0 = none
        # validation: the held-out last items of a random slice of users, from all before them
        val = np.sort(rng.permutation(len(seqs))[: cfg.val_users_max])
        val_x = _windows([seqs[i][:-1] for i in val], cfg.max_len)
        val_y = np.array([seqs[i][-1] for i in val], np.int64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = SasRecNet(n_items, cfg)
            self._train(torch.from_numpy(x), torch.from_numpy(y), val_x, val_y, rng)
        self.net.eval()

    def _loss(self, states: Tensor, target: Tensor, rng: np.random.Generator) -> Tensor:
        """Cross-entropy of each non-padded position's next item (target + 1; 0 = none)."""
        has = target > 0
        h, t = states[has], target[has] - 1  # (positions, d), (positions,)
        weights = self.net.item_weights()
        if self.n_items <= self.cfg.full_softmax_max:
            return F.cross_entropy(h @ weights.T, t)
        neg = torch.from_numpy(rng.integers(self.n_items, size=self.cfg.n_negatives))
        pos_logit = (h * weights[t]).sum(-1, keepdim=True)  # (positions, 1)
        neg_logit = h @ weights[neg].T  # (positions, negatives)
        neg_logit = neg_logit.masked_fill(neg[None] == t[:, None], float("-inf"))  # hits
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long))

    def _train(
        self,
        x: Tensor,
        y: Tensor,
        val_x: np.ndarray,
        val_y: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        cfg = self.cfg
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        best, best_state, waited = -np.inf, None, 0
        steps = -(-len(x) // cfg.batch_size)
        for epoch in range(min(cfg.epochs, max(1, cfg.max_updates // max(steps, 1)))):
            self.net.train()
            order = torch.from_numpy(rng.permutation(len(x)))
            total = 0.0
            for start in range(0, len(x), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                loss = self._loss(self.net(x[idx]), y[idx], rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.epochs_run = epoch + 1
            if len(val_y) == 0:
                continue
            score = self._mrr(val_x, val_y)
            log.debug("sasrec epoch %d: loss %.3f, val MRR %.4f", epoch + 1, total / len(x), score)
            if score > best:
                best, waited, self.best_epoch = score, 0, epoch + 1
                best_state = copy.deepcopy(self.net.state_dict())
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        log.info(
            "sasrec: %d epochs, best %d (val MRR %.4f)", self.epochs_run, self.best_epoch, best
        )

    @torch.no_grad()
    def _mrr(self, val_x: np.ndarray, val_y: np.ndarray) -> float:
        """Mean reciprocal rank of the validation users' held-out last items among all items
        (ties ranked against it): unlike a hit rate at a cut-off, it does not saturate."""
        scores = self._scores(val_x)  # (users, n_items)
        true = scores[np.arange(len(val_y)), val_y]
        rank = (scores >= true[:, None]).sum(axis=1)  # (users,) >= 1: the item itself counts
        return float((1.0 / rank).mean())

    @torch.no_grad()
    def _scores(self, windows: np.ndarray) -> np.ndarray:
        self.net.eval()
        h = self._last_state(windows)
        return (torch.from_numpy(h) @ self.net.item_weights().T).numpy()

    @torch.no_grad()
    def _last_state(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(windows), 1024):
            w = torch.from_numpy(windows[start : start + 1024])
            out.append(self.net(w)[:, -1].numpy())
        if not out:
            return np.zeros((0, self.cfg.hidden_dim), np.float32)
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def embed(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """(users, 64) float32: the last position's state of each sequence (zeros when empty)."""
        self.net.eval()
        windows = _windows(sequences, self.cfg.max_len)
        h = self._last_state(windows)
        h[(windows == 0).all(axis=1)] = 0.0  # no history: no state
        return h

    @torch.no_grad()
    def next_item_scores(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """(users, n_items) the model's next-item scores after each sequence."""
        return self._scores(_windows(sequences, self.cfg.max_len))
