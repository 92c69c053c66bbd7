"""The autoencoder's second reconstruction target: which catalog items each user had.

The encoder input averages item vectors per horizon, which keeps a user's taste but loses
*which* items they played. A linear item decoder trained beside the feature decoder (softmax
over a vocabulary of popular items, multinomial NLL as in Mult-DAE) makes z_u keep that
identity; it is a training-time head only, so embedding (batch and near-real-time) reads the
same features as before. On the evaluation protocol it lifted every probe (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from userrep import columns as C


@dataclass(frozen=True)
class ItemTargets:
    """(users, vocab) binary history matrix, rows aligned with the training matrix."""

    item_ids: np.ndarray  # (vocab,) item id of each column
    matrix: sp.csr_matrix  # (n_users, vocab) 1 where the user played the item

    @property
    def vocab(self) -> int:
        return len(self.item_ids)


def item_targets_from_pairs(
    user_ids: np.ndarray,
    pair_users: np.ndarray,
    pair_items: np.ndarray,
    max_items: int,
    min_users: int = 2,
) -> ItemTargets:
    """Targets from distinct (user, item) pairs: the vocabulary is the max_items items most
    users had (at least min_users of them; ties by item id), rows follow user_ids."""
    order = np.argsort(user_ids, kind="stable")
    pos = np.minimum(np.searchsorted(user_ids[order], pair_users), max(len(user_ids) - 1, 0))
    known = (user_ids[order][pos] == pair_users) if len(user_ids) else np.zeros(0, bool)
    rows, items = order[pos[known]], pair_items[known]
    ids, counts = np.unique(items, return_counts=True)
    keep = counts >= min_users
    ids, counts = ids[keep], counts[keep]
    top = np.sort(ids[np.lexsort((ids, -counts))[:max_items]])  # most users first, then id
    col = np.searchsorted(top, items)
    col = np.minimum(col, max(len(top) - 1, 0))
    hit = (top[col] == items) if len(top) else np.zeros(len(items), bool)
    data = np.ones(int(hit.sum()), np.float32)
    m = sp.csr_matrix((data, (rows[hit], col[hit])), shape=(len(user_ids), len(top)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return ItemTargets(top, m)


def item_targets(
    con: duckdb.DuckDBPyConnection,
    source: str,
    as_of: pd.Timestamp,
    user_ids: np.ndarray,
    max_items: int,
) -> ItemTargets:
    """The distinct items of each user's events <= as_of in `source` (a SQL relation)."""
    sql = f"SELECT DISTINCT user_id, item_id FROM {source} WHERE ts <= $as_of"
    pairs = con.execute(sql, {"as_of": as_of.to_pydatetime()}).fetchnumpy()
    return item_targets_from_pairs(
        np.asarray(user_ids, np.int64),
        np.asarray(pairs[C.USER_ID], np.int64),
        np.asarray(pairs[C.ITEM_ID], np.int64),
        max_items,
    )
