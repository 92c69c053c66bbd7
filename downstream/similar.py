"""Similar users: exact cosine nearest neighbours on one batch's z_u (numpy, outside Feast),
and their evaluation: purity@k on planted clusters, ROC-AUC of friends vs random pairs.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from downstream.training_set import trainable_batch
from userrep import columns as C
from userrep.ingest import FRIEND_ID
from userrep.settings import Settings

log = logging.getLogger(__name__)


def batch_vectors(
    settings: Settings, batch_id: str | None = None, as_of: pd.Timestamp | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(user ids, (n, d) z_u, batch): each user's newest published vector (at or before as_of)."""
    batch = trainable_batch(settings, batch_id)
    files = sorted(settings.paths.user_embedding.glob(f"{batch}__*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"batch {batch} has no published z_u in {settings.paths.user_embedding}"
        )
    frame = pd.concat(pq.read_table(f).to_pandas() for f in files)
    if as_of is not None:
        frame = frame[frame[C.EVENT_TIMESTAMP] <= as_of]
    frame = frame.sort_values([C.USER_ID, C.EVENT_TIMESTAMP, C.CREATED]).drop_duplicates(
        C.USER_ID, keep="last"
    )
    dim = len(frame[C.Z_U].iloc[0]) if len(frame) else 0
    z = np.stack(frame[C.Z_U].to_numpy()).astype(np.float32) if len(frame) else np.zeros((0, dim))
    return frame[C.USER_ID].to_numpy(np.int64), z, batch


def _unit(z: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def nearest(
    z: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities), each (len(queries), k), of the k nearest rows of z to each
    query row index, the query itself excluded. Exact: chunked matrix products."""
    unit = _unit(z)  # (n, d)
    k = min(k, len(z) - 1)
    chunk = chunk or max(1, 25_000_000 // max(len(z), 1))  # ~100 MB of similarities at a time
    idx = np.empty((len(queries), k), np.int64)
    sims = np.empty((len(queries), k), np.float32)
    for lo in range(0, len(queries), chunk):
        q = np.asarray(queries[lo : lo + chunk])
        s = unit[q] @ unit.T  # (chunk, n)
        s[np.arange(len(q)), q] = -np.inf  # never your own neighbour
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]  # (chunk, k), unordered
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1)
        idx[lo : lo + len(q)] = np.take_along_axis(top, order, axis=1)
        sims[lo : lo + len(q)] = np.take_along_axis(s, idx[lo : lo + len(q)], axis=1)
    return idx, sims


def similar_users(
    settings: Settings, user_id: int, k: int = 10, batch_id: str | None = None
) -> pd.DataFrame:
    """The k users closest to one user in z_u of one batch: (user_id, similarity)."""
    users, z, batch = batch_vectors(settings, batch_id)
    pos = np.flatnonzero(users == user_id)
    if not len(pos):
        raise KeyError(f"user {user_id} has no z_u in batch {batch}")
    idx, sims = nearest(z, pos, k)
    return pd.DataFrame({C.USER_ID: users[idx[0]], "similarity": sims[0]})


def purity_at_k(z: np.ndarray, labels: np.ndarray, k: int = 10) -> dict[str, float]:
    """Share of each user's k nearest neighbours with the same label, and its chance level
    (sum of squared label shares: what random neighbours would score)."""
    labels = np.asarray(labels)
    idx, _ = nearest(z, np.arange(len(z)), k)
    share = pd.Series(labels).value_counts(normalize=True).to_numpy()
    return {
        "purity": float((labels[idx] == labels[:, None]).mean()),
        "chance": float((share**2).sum()),
        "k": k,
        "users": len(z),
    }


def friends_auc(
    users: np.ndarray, z: np.ndarray, friends: pd.DataFrame, seed: int = 0
) -> dict[str, float]:
    """ROC-AUC of cosine similarity: friend pairs vs as many random pairs (both with z_u)."""
    from sklearn.metrics import roc_auc_score

    pos = pd.Series(np.arange(len(users)), index=users)
    pairs = friends[friends[C.USER_ID].isin(pos.index) & friends[FRIEND_ID].isin(pos.index)]
    pairs = pairs[pairs[C.USER_ID] != pairs[FRIEND_ID]]
    if pairs.empty:
        return {"auc": float("nan"), "pairs": 0}
    a, b = pos[pairs[C.USER_ID]].to_numpy(), pos[pairs[FRIEND_ID]].to_numpy()
    rng = np.random.default_rng(seed)
    ra, rb = rng.integers(len(users), size=(2, len(a)))
    unit = _unit(z)
    sim = np.concatenate([(unit[a] * unit[b]).sum(1), (unit[ra] * unit[rb]).sum(1)])
    y = np.r_[np.ones(len(a)), np.zeros(len(a))]
    return {"auc": float(roc_auc_score(y, sim)), "pairs": int(len(a))}


def evaluate_similar(
    settings: Settings, batch_id: str | None = None, k: int = 10, truth: pd.DataFrame | None = None
) -> dict[str, object]:
    """Purity@k on planted clusters (truth table, or <workspace>/data/truth/users.parquet) and
    friends AUC (data/friends.parquet), whichever are present."""
    users, z, batch = batch_vectors(settings, batch_id)
    out: dict[str, object] = {"batch_id": batch, "users": len(users)}
    truth_file = settings.paths.truth / "users.parquet"
    if truth is None and truth_file.exists():
        truth = pd.read_parquet(truth_file)
    if truth is not None:
        cluster = pd.Series(truth[C.CLUSTER].to_numpy(), index=truth[C.USER_ID].to_numpy())
        known = np.isin(users, cluster.index)
        out["clusters"] = purity_at_k(z[known], cluster[users[known]].to_numpy(), k)
    if settings.paths.friends.exists():
        out["friends"] = friends_auc(
            users, z, pd.read_parquet(settings.paths.friends), settings.seed
        )
    log.info("similar users on batch %s: %s", batch, out)
    return out
