"""The user autoencoder: one standardised input row per user (NaN = missing) -> z_u -> recon.

Sits between the assembled encoder input (Feast service `encoder_input_v2`) and the z_u batches:
`train.py` fits it, `artifact.py` saves it and embeds users with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from userrep import columns as C


@dataclass(frozen=True)
class InputBlock:
    """A named column slice [start, stop) of the encoder input; training masks whole `group`s."""

    name: str  # e.g. "collab_7d"
    start: int
    stop: int
    group: str  # the horizon ("7d", "30d", "180d", "all"), or "stats", "onboarding"

    @property
    def width(self) -> int:
        return self.stop - self.start


def validate_blocks(blocks: Sequence[InputBlock], input_dim: int) -> None:
    """Raise ValueError unless the blocks tile [0, input_dim) in order, without gaps or overlaps."""
    if not blocks:
        raise ValueError("at least one input block is required")
    names = [b.name for b in blocks]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate block names in {names}")
    expected_start = 0
    for block in blocks:
        if block.start != expected_start or block.stop <= block.start:
            raise ValueError(f"block {block.name} [{block.start}, {block.stop}) breaks the tiling")
        expected_start = block.stop
    if expected_start != input_dim:
        raise ValueError(f"blocks cover {expected_start} columns, input_dim is {input_dim}")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of the user autoencoder; saved with every artifact (see artifact.py)."""

    input_dim: int  # width of the assembled input row, all blocks together
    latent_dim: int = 64  # size of z_u: what downstream models and the online store carry
    hidden_dim: int = 256  # hidden width each side: compresses ~600 inputs without a 2nd layer
    n_hidden: int = 1  # hidden layers per side: the inputs are dense averages already
    dropout: float = 0.1  # on the encoder's hidden activations, on top of input corruption

    @classmethod
    def tiny(cls, input_dim: int) -> AutoencoderConfig:
        """A config that trains in a few seconds on CPU: tests and local runs."""
        return cls(input_dim=input_dim, latent_dim=32, hidden_dim=64, dropout=0.0)


class BankDropout(nn.Module):
    """Inverted dropout with masks drawn as random rows of a bank of pre-sampled masks.

    torch's own dropout draws a fresh Bernoulli per element each step, which on CPU costs about
    a tenth of a training step at our sizes; picking (batch,) random bank rows costs a gather.
    The bank is drawn from torch's global RNG at the first training call (seeded by training)
    and is not part of the state_dict; in eval mode this is the identity, as nn.Dropout is.
    """

    def __init__(self, p: float, bank_rows: int = 8192):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p={p} must lie in [0, 1)")
        self.p, self.bank_rows = p, bank_rows
        self._bank: Tensor | None = None  # (bank_rows, width), values 0 or 1 / (1 - p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if self._bank is None or self._bank.shape[1] != x.shape[-1]:
            keep = torch.rand(self.bank_rows, x.shape[-1]) >= self.p
            self._bank = keep.float() / (1.0 - self.p)
        rows = torch.randint(self.bank_rows, (x.shape[0],))  # (batch,)
        return x * self._bank.index_select(0, rows).to(x.dtype)  # (batch, width)


class MLP(nn.Module):
    """(Linear -> GELU -> Dropout) x n_hidden, then a plain Linear to out_dim."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_hidden: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_hidden):
            # Dropout even at p=0 (an identity): state_dict keys must not depend on it
            linear = nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim)
            layers += [linear, nn.GELU(), BankDropout(dropout)]
        layers.append(nn.Linear(hidden_dim if n_hidden > 0 else in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (batch, out_dim)


class BlockPresence(nn.Module):
    """Zero-fills missing (non-finite) entries, appends one 0/1 "block has data" flag per block.

    Zero after standardisation means "average", so without the flags the encoder could not tell
    a user with no 180d history from one whose 180d history is exactly average.
    """

    membership: Tensor  # (input_dim, n_blocks) 0/1, a buffer

    def __init__(self, blocks: Sequence[InputBlock], input_dim: int):
        super().__init__()
        validate_blocks(blocks, input_dim)
        membership = torch.zeros(input_dim, len(blocks))  # (input_dim, n_blocks)
        for j, block in enumerate(blocks):
            membership[block.start : block.stop, j] = 1.0
        # derived from the blocks in config.json, so not part of the saved state_dict
        self.register_buffer("membership", membership, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        values = x.nan_to_num(0.0, posinf=0.0, neginf=0.0)  # (batch, input_dim)
        present = (observed_mask(x) @ self.membership).clamp(max=1.0)  # (batch, n_blocks)
        return torch.cat([values, present], dim=1)  # (batch, input_dim + n_blocks)


def observed_mask(x: Tensor) -> Tensor:
    """1.0 where x is finite, 0.0 where it is NaN or +-inf (missing).

    Float arithmetic (finite * 0 = 0, non-finite * 0 = NaN): on CPU several times faster than
    building a bool mask and converting it, which matters at ~100 batches per second.
    """
    return (x * 0.0 + 1.0).nan_to_num_(0.0)  # (batch, input_dim)


class UserAutoencoder(nn.Module):
    """Denoising autoencoder over the multi-horizon, multi-modality user input.

    Input rows are standardised features with NaN where a value is missing (a horizon without
    events, no onboarding answers, or a block hidden by training's masking); any non-finite
    value counts as missing. z_u is the plain linear output of the encoder, not L2-normalised:
    downstream GBDTs split on raw coordinates, the norm carries how much (and how typical)
    evidence a user has, and similarity search can normalise at query time.
    """

    def __init__(self, config: AutoencoderConfig, blocks: Sequence[InputBlock]):
        super().__init__()
        self.config = config
        self.blocks = tuple(blocks)
        c = config
        self.presence = BlockPresence(self.blocks, c.input_dim)
        enc_in = c.input_dim + len(self.blocks)
        self.encoder = MLP(enc_in, c.hidden_dim, c.latent_dim, c.n_hidden, c.dropout)
        # no dropout in the decoder: it is thrown away after training, and the targets are clean
        self.decoder = MLP(c.latent_dim, c.hidden_dim, c.input_dim, c.n_hidden, dropout=0.0)

    def encode(self, x: Tensor) -> Tensor:
        """Standardised rows (NaN = missing) -> z_u."""
        h = self.presence(x)  # (batch, input_dim + n_blocks)
        return self.encoder(h)  # (batch, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (reconstruction of the standardised input, z_u)."""
        z = self.encode(x)  # (batch, latent_dim)
        recon = self.decoder(z)  # (batch, input_dim)
        return recon, z


# input blocks an ablation can drop: a horizon, a modality, the onboarding or the stats group,
# or the level and polarity of feedback (the liked / disliked means and the level scalars)
ABLATION_SWITCHES = (
    "7d",
    "30d",
    "180d",
    "all",
    "collab",
    "content",
    "onboarding",
    "stats",
    "feedback",
)
_FEEDBACK_BLOCKS = frozenset(
    [C.liked_feature(m) for m in C.MODALITIES]
    + [C.disliked_feature(m) for m in C.MODALITIES]
    + [C.LEVEL_MEAN, C.LEVEL_STD, C.DISLIKED_SHARE]
)


def _matches(block: InputBlock, switch: str) -> bool:
    if switch == "feedback":
        return block.name in _FEEDBACK_BLOCKS
    return (
        block.group == switch
        or block.name.startswith(f"{switch}_")
        or block.name == f"onboard_{switch}"
    )


def ablate(
    blocks: Sequence[InputBlock], switches: Sequence[str]
) -> tuple[np.ndarray, list[InputBlock]]:
    """(kept column positions, re-tiled blocks) with every block named by a switch dropped."""
    unknown = sorted(set(switches) - set(ABLATION_SWITCHES))
    if unknown:
        raise ValueError(f"unknown ablation {unknown}: choose from {', '.join(ABLATION_SWITCHES)}")
    kept = [b for b in blocks if not any(_matches(b, s) for s in switches)]
    if not kept:
        raise ValueError(f"ablating {list(switches)} leaves no input")
    cols = np.concatenate([np.arange(b.start, b.stop) for b in kept])
    out, start = [], 0
    for b in kept:
        out.append(InputBlock(b.name, start, start + b.width, b.group))
        start += b.width
    return cols, out
