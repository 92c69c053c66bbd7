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
    rows, items = _known_pairs(user_ids, pair_users, pair_items)
    ids, counts = np.unique(items, return_counts=True)
    keep = counts >= min_users
    ids, counts = ids[keep], counts[keep]
    top = np.sort(ids[np.lexsort((ids, -counts))[:max_items]])  # most users first, then id
    return ItemTargets(top, _binary_matrix(rows, items, top, len(user_ids)))


def targets_for_vocabulary(
    user_ids: np.ndarray, pair_users: np.ndarray, pair_items: np.ndarray, vocab: np.ndarray
) -> ItemTargets:
    """Targets over a vocabulary decided elsewhere (item_vocabulary: over all users), rows
    follow user_ids: a shard of users gets exactly its rows of the all-users matrix."""
    rows, items = _known_pairs(user_ids, pair_users, pair_items)
    vocab = np.asarray(vocab, np.int64)
    return ItemTargets(vocab, _binary_matrix(rows, items, vocab, len(user_ids)))


def _known_pairs(
    user_ids: np.ndarray, pair_users: np.ndarray, pair_items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row in user_ids, item) of the pairs whose user is in user_ids."""
    order = np.argsort(user_ids, kind="stable")
    pos = np.minimum(np.searchsorted(user_ids[order], pair_users), max(len(user_ids) - 1, 0))
    known = (user_ids[order][pos] == pair_users) if len(user_ids) else np.zeros(0, bool)
    return order[pos[known]], pair_items[known]


def _binary_matrix(rows: np.ndarray, items: np.ndarray, top: np.ndarray, n: int) -> sp.csr_matrix:
    """(n, len(top)) CSR, 1 where a (row, item) pair has its item in the sorted vocabulary top."""
    col = np.searchsorted(top, items)
    col = np.minimum(col, max(len(top) - 1, 0))
    hit = (top[col] == items) if len(top) else np.zeros(len(items), bool)
    data = np.ones(int(hit.sum()), np.float32)
    m = sp.csr_matrix((data, (rows[hit], col[hit])), shape=(n, len(top)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


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


def item_vocabulary(
    con: duckdb.DuckDBPyConnection,
    source: str,
    as_of: pd.Timestamp,
    users: str,
    max_items: int,
    min_users: int = 2,
) -> np.ndarray:
    """item_targets_from_pairs's vocabulary as one DuckDB aggregate (nothing per user comes
    back): the max_items items most of `users` (a SQL relation with a user_id column) had in
    events <= as_of, at least min_users of them, ties by item id; sorted item ids."""
    sql = f"""
        SELECT item_id, COUNT(*) AS n_users FROM (
            SELECT DISTINCT user_id, item_id FROM {source}
            WHERE ts <= $as_of AND user_id IN (SELECT user_id FROM {users})
        ) GROUP BY item_id HAVING COUNT(*) >= $min_users
        ORDER BY n_users DESC, item_id LIMIT $max_items
    """
    params = {"as_of": as_of.to_pydatetime(), "min_users": min_users, "max_items": max_items}
    top = con.execute(sql, params).fetchnumpy()[C.ITEM_ID]
    return np.sort(np.asarray(top, np.int64))


def range_item_targets(
    con: duckdb.DuckDBPyConnection,
    source: str,
    as_of: pd.Timestamp,
    user_ids: np.ndarray,
    user_range: tuple[int, int],
    vocab: np.ndarray,
) -> ItemTargets:
    """item_targets of the users with lo <= user_id < hi (user_ids: theirs, in row order) over
    a fixed vocabulary: only that range's (user, item) pairs come back from DuckDB."""
    sql = (
        f"SELECT DISTINCT user_id, item_id FROM {source} "
        "WHERE ts <= $as_of AND user_id >= $lo AND user_id < $hi"
    )
    params = {"as_of": as_of.to_pydatetime(), "lo": user_range[0], "hi": user_range[1]}
    pairs = con.execute(sql, params).fetchnumpy()
    return targets_for_vocabulary(
        np.asarray(user_ids, np.int64),
        np.asarray(pairs[C.USER_ID], np.int64),
        np.asarray(pairs[C.ITEM_ID], np.int64),
        vocab,
    )
