"""The autoencoder's training-time reconstruction targets beyond its input features: which
catalog items each user had (ItemTargets) and the share of their items carrying each genre / tag
(TagTargets).

The encoder input averages item vectors per horizon, which keeps a user's taste but loses
*which* items they played. A linear item decoder trained beside the feature decoder (softmax
over a vocabulary of popular items, multinomial NLL as in Mult-DAE) makes z_u keep that
identity; it is a training-time head only, so embedding (batch and near-real-time) reads the
same features as before. On the evaluation protocol it lifted every probe (docs/quality.md).

The tag head does the same for content taste: the item vocabulary stops at the most popular
items and averaged text vectors blur a small genre into the big ones, so a user's share of
jazz or film-noir reaches z_u only faintly. A soft-label softmax over the catalog's most used
genres / tags (the items table's `genres`), also training-time only, makes z_u keep it.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from userrep import columns as C

TAG_SEP = "|"  # C.GENRES holds "|"-separated genre / tag text


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


@dataclass(frozen=True)
class TagTargets:
    """(users, tags) share of each user's distinct items that carry each tag, over a vocabulary
    of the catalog's most used tags; a row sums to 1, or is empty for a user with no tagged item."""

    tags: np.ndarray  # (n_tags,) tag text of each column
    matrix: sp.csr_matrix  # (n_users, n_tags) float32 shares

    @property
    def vocab(self) -> int:
        return len(self.tags)


def tag_counts_from_pairs(
    pair_users: np.ndarray, pair_items: np.ndarray, items: pd.DataFrame
) -> pd.DataFrame:
    """(user_id, tag, n): how many of each user's distinct items carry each tag, from distinct
    (user, item) pairs and an items table with C.GENRES (what tag_counts computes in DuckDB)."""
    tags = items[[C.ITEM_ID, C.GENRES]].dropna()
    tags = tags.assign(tag=tags[C.GENRES].str.split(TAG_SEP)).explode("tag")
    tags = tags[tags["tag"].astype(bool)][[C.ITEM_ID, "tag"]].drop_duplicates()
    pairs = pd.DataFrame({C.USER_ID: pair_users, C.ITEM_ID: pair_items}).drop_duplicates()
    joined = pairs.merge(tags, on=C.ITEM_ID)
    return joined.groupby([C.USER_ID, "tag"]).size().rename("n").reset_index()


def top_tags(counts: pd.DataFrame, max_tags: int) -> np.ndarray:
    """The max_tags tags on most (user, item) pairs, ties by tag text: the head's columns."""
    total = counts.groupby("tag")["n"].sum().reset_index()
    total = total.sort_values(["n", "tag"], ascending=[False, True], kind="stable")
    return np.sort(total["tag"].to_numpy(object)[:max_tags]).astype(object)


def tag_targets_from_counts(
    user_ids: np.ndarray, counts: pd.DataFrame, vocab: int | np.ndarray
) -> TagTargets:
    """Share rows for user_ids (in order) from (user_id, tag, n) counts, over the max `vocab`
    tags of these users' counts (an int) or a vocabulary decided elsewhere (tag texts)."""
    user_ids = np.asarray(user_ids, np.int64)
    counts = counts[counts[C.USER_ID].isin(user_ids)]  # the vocabulary counts these users only
    tags = top_tags(counts, vocab) if isinstance(vocab, int) else np.sort(np.asarray(vocab, object))
    if not len(tags):
        return TagTargets(tags, sp.csr_matrix((len(user_ids), 0), dtype=np.float32))
    text = counts["tag"].to_numpy(object)
    col = np.minimum(np.searchsorted(tags, text), len(tags) - 1)
    hit = tags[col] == text  # the count's tag is in the vocabulary
    users, n = counts[C.USER_ID].to_numpy(np.int64)[hit], counts["n"].to_numpy()[hit]
    return TagTargets(tags, share_matrix(user_ids, users, col[hit], n, len(tags)))


def share_matrix(
    user_ids: np.ndarray, users: np.ndarray, cols: np.ndarray, n: np.ndarray, n_tags: int
) -> sp.csr_matrix:
    """(len(user_ids), n_tags) float32 rows of shares from (user, tag column, count) triples;
    triples of other users are ignored, a user without any keeps an empty row."""
    rows, keep = _known_pairs(np.asarray(user_ids, np.int64), users, np.arange(len(users)))
    m = sp.csr_matrix(
        (np.asarray(n, np.float32)[keep], (rows, cols[keep])), shape=(len(user_ids), n_tags)
    )
    total = np.asarray(m.sum(axis=1)).ravel()  # (users,) tagged items in the vocabulary
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(total, 1.0)) @ m, dtype=np.float32)


def tag_counts(
    con: duckdb.DuckDBPyConnection,
    source: str,
    items_path: str,
    as_of: pd.Timestamp,
    user_range: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """(user_id, tag, n) of every user's distinct items <= as_of in `source` (a SQL relation),
    joined with the items file's tags; with user_range, only lo <= user_id < hi. Small data
    (tests, diagnostics): training reads tag_matrix, which returns no tag text per user."""
    where, params = _range_filter(as_of, user_range)
    sql = f"{_user_tags_sql(source, items_path, where)} SELECT * FROM user_tags"
    return con.execute(sql, params).df().astype({C.USER_ID: np.int64, "n": np.int64})


def tag_matrix(
    con: duckdb.DuckDBPyConnection,
    source: str,
    items_path: str,
    as_of: pd.Timestamp,
    user_ids: np.ndarray,
    vocab: np.ndarray,
    user_range: tuple[int, int] | None = None,
) -> sp.csr_matrix:
    """The tag decoder's (len(user_ids), len(vocab)) shares of events <= as_of, rows in
    user_ids' order: DuckDB returns (user, column, count) integers only, so memory follows the
    number of (user, tag) pairs, not their text. user_range: read only that range's pairs."""
    where, params = _range_filter(as_of, user_range)
    con.register("_tag_vocab", pd.DataFrame({"tag": vocab, "col": np.arange(len(vocab))}))
    sql = f"""{_user_tags_sql(source, items_path, where)}
        SELECT user_id, col, n FROM user_tags JOIN _tag_vocab USING (tag)"""
    got = con.execute(sql, params).fetchnumpy()
    con.unregister("_tag_vocab")
    return share_matrix(
        user_ids,
        np.asarray(got[C.USER_ID], np.int64),
        np.asarray(got["col"], np.int64),
        np.asarray(got["n"]),
        len(vocab),
    )


def _range_filter(as_of: pd.Timestamp, user_range: tuple[int, int] | None) -> tuple[str, dict]:
    params: dict = {"as_of": as_of.to_pydatetime()}
    if user_range is None:
        return "", params
    return "AND user_id >= $lo AND user_id < $hi", params | {
        "lo": user_range[0],
        "hi": user_range[1],
    }


def tag_vocabulary(
    con: duckdb.DuckDBPyConnection,
    source: str,
    items_path: str,
    as_of: pd.Timestamp,
    users: str,
    max_tags: int,
) -> np.ndarray:
    """top_tags over the users of `users` (a SQL relation with a user_id column) as one DuckDB
    aggregate (nothing per user comes back): sorted tag texts."""
    where = f"AND user_id IN (SELECT user_id FROM {users})"
    sql = f"""{_user_tags_sql(source, items_path, where)}
        SELECT tag FROM user_tags GROUP BY tag ORDER BY SUM(n) DESC, tag LIMIT $max_tags"""
    params = {"as_of": as_of.to_pydatetime(), "max_tags": max_tags}
    return np.sort(con.execute(sql, params).fetchnumpy()["tag"].astype(object))


def _user_tags_sql(source: str, items_path: str, where: str) -> str:
    """A WITH clause defining user_tags(user_id, tag, n) from events <= $as_of."""
    return f"""
        WITH pairs AS (SELECT DISTINCT user_id, item_id FROM {source} WHERE ts <= $as_of {where}),
        tags AS (
            SELECT DISTINCT item_id, tag FROM (
                SELECT item_id, UNNEST(string_split({C.GENRES}, '{TAG_SEP}')) AS tag
                FROM read_parquet('{items_path}') WHERE {C.GENRES} IS NOT NULL
            ) WHERE tag <> ''
        ),
        user_tags AS (
            SELECT user_id, tag, COUNT(*) AS n FROM pairs JOIN tags USING (item_id)
            GROUP BY user_id, tag
        )"""
