"""Batch alignment: keep a retrained batch's z_u space compatible with its parent's.

Two methods, alone or together. "bct": backward-compatible training (Shen et al. 2020): the
parent's z_u of anchor users (in both snapshots; the parent's encoder on the NEW inputs, so
drift is kept) enter the new batch's training loss (train.CompatTerm). "procrustes": after
training, an orthogonal map fitted on the same anchors, saved beside the new artifact
(align.npz, plain arrays, no pickles); load_encoder_dir applies it, so batch embedding,
embed-user and the NRT worker all agree. The record (parent, method, residual, variance
explained) goes into RepresentationBatch.alignment.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from representation import batches
from representation.artifact import UserEncoder
from representation.features import snapshot_name
from representation.train import Anchors
from userrep import columns as C
from userrep.db import session_scope
from userrep.settings import Settings

if TYPE_CHECKING:
    from representation.trainset import SnapshotInputs

log = logging.getLogger(__name__)

ALIGN_FILE = "align.npz"  # beside model.pt; its sha256 goes into RepresentationBatch.alignment
METHOD = "procrustes"
BCT = "bct"
METHODS = (METHOD, BCT, f"{BCT}+{METHOD}")
# `userrep train`'s default, measured by bench/bench_align_study.py (docs/alignment.md:
# synthetic with planted drift, 4,000 users, 3 seeds x 3 retrains; drop = GBDT_0 on batch 0's
# re-embedding - GBDT_0 on batch k, mean / worst): unaligned 0.18 / 0.20 at drift 0.25,
# procrustes 0.014 / 0.028 (residual 0.59: independently trained spaces are not a rotation
# apart), bct and bct+procrustes at most 0.006 at drifts 0.15 to 0.5 (BCT weight 0.3); bct
# alone is ~0.001 lower on the mean drop. Kept: bct+procrustes, because the map (one d x d SVD)
# is the safety net for a batch whose training did not pull far enough: on the 12-epoch test
# workspace BCT leaves a raw residual of 0.83, which the map takes to 0.26.
DEFAULT_METHOD = f"{BCT}+{METHOD}"
MAX_FIT_USERS = 200_000  # a d x d fit is stable long before this; caps memory at ~1M users


@dataclass(frozen=True)
class AlignmentMap:
    """z_parent ~= scale * (z - mean_src) @ rotation + mean_dst, rotation orthogonal (d, d)."""

    rotation: np.ndarray  # (d, d) float64, R^T R = I
    scale: float  # global scale; 1.0 when fitted without scale
    mean_src: np.ndarray  # (d,) mean of the new batch's raw z_u on the fit users
    mean_dst: np.ndarray  # (d,) mean of the parent's z_u on the fit users

    def apply(self, z: np.ndarray) -> np.ndarray:
        """(n, d) raw z_u of the new batch -> (n, d) float32 in the parent's space."""
        out = self.scale * (np.asarray(z, np.float64) - self.mean_src) @ self.rotation
        return (out + self.mean_dst).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        """(n, d) aligned z_u -> (n, d) float32 raw z_u (what the batch would give unaligned)."""
        out = (np.asarray(z, np.float64) - self.mean_dst) @ self.rotation.T / self.scale
        return (out + self.mean_src).astype(np.float32)

    def save(self, directory: Path) -> str:
        """Write align.npz into an artifact directory; return its sha256."""
        path = Path(directory) / ALIGN_FILE
        with path.open("wb") as fh:
            np.savez(
                fh,
                rotation=self.rotation,
                scale=np.float64(self.scale),
                mean_src=self.mean_src,
                mean_dst=self.mean_dst,
            )
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @classmethod
    def load(cls, directory: Path) -> AlignmentMap | None:
        """The map stored in an artifact directory, or None when the batch is unaligned."""
        path = Path(directory) / ALIGN_FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as f:
            return cls(f["rotation"], float(f["scale"]), f["mean_src"], f["mean_dst"])


def fit_procrustes(
    z_src: np.ndarray, z_dst: np.ndarray, with_scale: bool = True
) -> tuple[AlignmentMap, dict[str, float]]:
    """argmin_R ||s (Z_src - mu_src) R - (Z_dst - mu_dst)||_F over orthogonal R, via one SVD.

    Returns the map and its fit: residual = ||aligned - Z_dst||_F / ||Z_dst - mu_dst||_F and
    variance_explained = 1 - residual^2 (1 for an exact rotation, ~0 for unrelated rows).
    """
    src, dst = np.asarray(z_src, np.float64), np.asarray(z_dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2:
        raise ValueError(f"need two (n, d) matrices of one shape, got {src.shape} / {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)  # (d,)
    a, b = src - mu_s, dst - mu_d  # (n, d) centred
    u, sigma, vt = np.linalg.svd(a.T @ b)  # (d, d) cross-covariance
    rotation = u @ vt  # (d, d)
    aa, bb = float(np.einsum("ij,ij->", a, a)), float(np.einsum("ij,ij->", b, b))
    scale = float(sigma.sum() / max(aa, 1e-300)) if with_scale else 1.0
    amap = AlignmentMap(rotation, scale, mu_s, mu_d)
    # ||s a R - b||^2 = s^2 ||a||^2 - 2 s tr(sigma) + ||b||^2: no (n, d) product needed
    sq = max(scale**2 * aa - 2 * scale * float(sigma.sum()) + bb, 0.0)
    residual = float(np.sqrt(sq / max(bb, 1e-300)))
    return amap, {"residual": residual, "variance_explained": 1.0 - residual**2}


def identity_fit(z_src: np.ndarray, z_dst: np.ndarray) -> dict[str, float]:
    """fit_procrustes's figures for no map at all: ||Z_src - Z_dst||_F / ||Z_dst - mu_dst||_F."""
    src, dst = np.asarray(z_src, np.float64), np.asarray(z_dst, np.float64)
    bb = float(np.square(dst - dst.mean(axis=0)).sum())
    residual = float(np.sqrt(np.square(src - dst).sum() / max(bb, 1e-300)))
    return {"residual": residual, "variance_explained": 1.0 - residual**2}


class AlignedEncoder(UserEncoder):
    """A UserEncoder whose output is mapped into its parent batch's space."""

    def __init__(self, base: UserEncoder, amap: AlignmentMap):
        super().__init__(base.model, base.normaliser, base.extra)
        self.alignment = amap

    def embed_raw(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """z_u in the batch's own (unaligned) space."""
        return super().embed(x, batch_size)

    def embed(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        return self.alignment.apply(super().embed(x, batch_size))


def load_encoder_dir(directory: Path) -> UserEncoder:
    """UserEncoder.load, plus the stored alignment map when the artifact has one."""
    encoder = UserEncoder.load(directory)
    amap = AlignmentMap.load(directory)
    return encoder if amap is None else AlignedEncoder(encoder, amap)


def default_parent(settings: Settings) -> str | None:
    """What `train` aligns to by default: the active batch, if any."""

    with session_scope(settings.metadata_db_url) as session:
        active = batches.active_batch(session)
        return active.batch_id if active is not None else None


def _parent(settings: Settings, parent_id: str) -> tuple[UserEncoder, pd.Timestamp]:

    with session_scope(settings.metadata_db_url) as session:
        row = batches.get_batch(session, parent_id)
        art, as_of = Path(row.artifact_path), pd.Timestamp(row.as_of)
    return load_encoder_dir(art), as_of


def _fit_rows(settings: Settings, users: np.ndarray, parent_as_of: pd.Timestamp) -> np.ndarray:
    """Row indices of users in both snapshots (a seeded sample above MAX_FIT_USERS)."""

    path = settings.paths.user_onboarding / snapshot_name(parent_as_of)
    known = (
        pd.read_parquet(path, columns=[C.USER_ID])[C.USER_ID].to_numpy() if path.exists() else users
    )
    rows = np.flatnonzero(np.isin(users, known))
    if len(rows) > MAX_FIT_USERS:
        rng = np.random.default_rng(settings.seed)
        rows = np.sort(rng.choice(rows, MAX_FIT_USERS, replace=False))
    return rows


def parent_anchors(
    settings: Settings,
    parent_id: str,
    users: np.ndarray,
    x: np.ndarray | SnapshotInputs,  # x[rows]: only the anchors' rows are read
    schema_hash: str | None,
    latent_dim: int,
) -> Anchors:
    """The parent's z_u (its own, aligned space) of the users in both snapshots, embedded from
    the new inputs x; refused when the parent reads another input layout or z_u width."""
    parent, parent_as_of = _parent(settings, parent_id)
    if parent.extra.get("input_schema_hash") != schema_hash:
        raise ValueError(
            f"batch {parent_id} reads another input layout: cannot align to it (--no-align)"
        )
    if parent.latent_dim != latent_dim:
        raise ValueError(f"latent dims differ ({parent.latent_dim} vs {latent_dim}): --no-align")
    rows = _fit_rows(settings, users, parent_as_of)
    if len(rows) <= latent_dim:
        raise ValueError(f"only {len(rows)} users shared with {parent_id}: too few to align")
    return Anchors(rows, parent.embed(x[rows]))


def fit_alignment(
    anchors: Anchors, z_raw: np.ndarray, method: str, with_scale: bool = True
) -> tuple[AlignmentMap | None, dict[str, float]]:
    """The map a method stores (None for "bct": training did the aligning) and the fit of the
    final space to the parent on the anchors; residual_raw is the fit with no map."""
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}: choose from {', '.join(METHODS)}")
    raw_fit = identity_fit(z_raw, anchors.z_parent)
    if method == BCT:
        return None, {**raw_fit, "residual_raw": raw_fit["residual"]}
    amap, fit = fit_procrustes(z_raw, anchors.z_parent, with_scale)
    return amap, {**fit, "residual_raw": raw_fit["residual"]}


def align_new_batch(
    settings: Settings,
    parent_id: str,
    art_dir: Path,
    users: np.ndarray,
    x: np.ndarray | SnapshotInputs,  # x[rows]: only the anchors' rows are read
    raw: UserEncoder,
    with_scale: bool = True,
    method: str = METHOD,
    anchors: Anchors | None = None,
    compat_weight: float = 0.0,
) -> dict[str, Any]:
    """Fit the new batch's map to parent_id on shared users (anchors, when training already
    embedded them), save align.npz unless method is "bct", return the metadata record."""
    if anchors is None:
        hash_ = raw.extra.get("input_schema_hash")
        anchors = parent_anchors(settings, parent_id, users, x, hash_, raw.latent_dim)
    amap, fit = fit_alignment(anchors, raw.embed(x[anchors.rows]), method, with_scale)
    record: dict[str, Any] = {"parent": parent_id, "method": method}
    record |= {"n_users": len(anchors.rows), **fit}
    if BCT in method:
        record["compat_weight"] = compat_weight
    if amap is not None:
        record |= {"scale": amap.scale, "file": ALIGN_FILE, "sha256": amap.save(art_dir)}
    log.info(
        "aligned to %s (%s) on %d users: residual %.4f (unmapped %.4f), variance explained %.4f",
        parent_id,
        method,
        len(anchors.rows),
        fit["residual"],
        fit["residual_raw"],
        fit["variance_explained"],
    )
    return record
