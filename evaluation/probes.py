"""Probes: fixed, cheap models fitted on probe-train users' vectors and scored on probe-test
users (DESIGN.md, "Representation quality: the bar"). Each returns a flat dict of metrics.

linear: one logistic regression per candidate item, mean ROC-AUC on future consumption (also
on cold-start vectors); gbdt: one LightGBM over (user vector, item popularity, item PPMI-SVD
vector) pairs, pooled AUC, Recall@10, NDCG@10. genre: dominant future genre / tag (accuracy,
macro-F1); similar: friends / trust vs random pairs (ROC-AUC) or planted-cluster purity@10.
On explicit feedback (Split.explicit) the labels are "liked" and every probe fits and scores
the rated pairs only (Split.pair_mask); rating_level: a ridge probe of the user's mean future
rating (Spearman correlation on probe-test users).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from downstream.metrics import auc, column_aucs, ranking_metrics
from downstream.models import make_model
from evaluation.methods import UserVectors
from evaluation.protocol import Split
from userrep import columns as C

log = logging.getLogger(__name__)
LINEAR_C = 1.0  # inverse L2 strength of every logistic probe: sklearn's default, as in DESIGN
LINEAR_C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # linear_probe_cv's choices
CV_FOLDS = 3  # linear_probe_cv: folds over probe-train users
N_GENRES = 20  # genre probe classes: the most consumed genres / tags in history
PURITY_K = 10
RANK_K = 10  # Recall@K / NDCG@K
MIN_RANKED_USERS = 50  # a ranking metric over fewer probe-test users is not reported (NaN)
RIDGE_ALPHAS = tuple(10.0**k for k in range(-2, 5))  # rating_level: alpha by leave-one-out


def _scaled(train: UserVectors, *others: UserVectors) -> list[UserVectors]:
    """Standardise dense vectors on the train rows; sparse (tf-idf) ones are left as they are."""
    if sp.issparse(train):
        return [train, *others]
    scaler = StandardScaler().fit(train)
    return [scaler.transform(v).astype(np.float32) for v in (train, *others)]


def linear_probe(split: Split, vectors: UserVectors, c: float = LINEAR_C) -> float:
    """Mean per-item ROC-AUC over the candidate items (fitted on probe-train users' vectors)."""
    if vectors.shape[1] == 0:  # no user vector: constant scores
        return 0.5
    tr, te = np.flatnonzero(split.train), np.flatnonzero(split.test)
    return _ItemProbe(split, vectors, tr, te).auc(c)[0]


def linear_probe_cv(split: Split, vectors: UserVectors) -> dict[str, float]:
    """The linear probe with its L2 strength chosen on probe-train users only: each C of
    LINEAR_C_GRID is scored by CV_FOLDS-fold cross-validation over probe-train users, the best
    mean per-item AUC wins, and the probe is refitted on all of them with it.

    The fixed C = 1 of `linear_probe` (DESIGN's table) is one prior for every input: it suits
    tf-idf (unstandardised, L2-normalised rows: small values, so C = 1 is a strong penalty) and
    over-fits standardised dense vectors, whose 64 unit-variance columns it barely shrinks
    (docs/quality.md: on Last.fm every 64-d method gains 0.03 to 0.06 AUC at C = 0.01-0.03,
    tf-idf nothing). Choosing C on the training side, as linear evaluation of representations
    usually does, scores what each vector carries rather than how well C = 1 suits its scale.
    Returns {"linear_auc_cv": test AUC, "linear_c": the chosen C}."""
    if vectors.shape[1] == 0:
        return {"linear_auc_cv": 0.5, "linear_c": float("nan")}
    tr, te = np.flatnonzero(split.train), np.flatnonzero(split.test)
    fold = np.random.default_rng(split.seed).permutation(len(tr)) % CV_FOLDS  # (train users,)
    scores = np.full((CV_FOLDS, len(LINEAR_C_GRID)), np.nan)
    for k in range(CV_FOLDS):
        probe, start = _ItemProbe(split, vectors, tr[fold != k], tr[fold == k]), None
        for i, c in enumerate(LINEAR_C_GRID):  # strongest penalty first, each fit warm-started
            scores[k, i], start = probe.auc(c, start)
    inner = np.nanmean(scores, axis=0)  # (grid,)
    best = LINEAR_C_GRID[int(np.flatnonzero(inner == np.nanmax(inner))[-1])]  # ties: weaker
    log.debug("linear probe CV: %s -> C=%s", dict(zip(LINEAR_C_GRID, inner, strict=True)), best)
    auc_te = _ItemProbe(split, vectors, tr, te).auc(best)[0]
    return {"linear_auc_cv": auc_te, "linear_c": best}


def probed_items(split: Split, fit: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Candidate positions the linear probe scores: both the fitted pairs (rows `fit`) and the
    scored ones (rows `score`) of the item hold both classes."""
    y, mask = split.labels(), split.pair_mask()
    both = lambda yy, mm: ((yy == 1) & mm).any(0) & ((yy == 0) & mm).any(0)  # noqa: E731
    return np.flatnonzero(both(y[fit], mask[fit]) & both(y[score], mask[score]))


class _ItemProbe:
    """Per-item logistic regressions fitted on rows `fit` of vectors, scored on rows `score`."""

    def __init__(self, split: Split, vectors: UserVectors, fit: np.ndarray, score: np.ndarray):
        y, mask = split.labels(), split.pair_mask()  # (users, candidates)
        self.x_tr, self.x_te = _scaled(vectors[fit], vectors[score])
        self.y_tr, self.y_te, self.m_tr, self.m_te = y[fit], y[score], mask[fit], mask[score]
        self.items = probed_items(split, fit, score)

    def auc(self, c: float, init=None) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
        """(mean per-item ROC-AUC at C = c, the fitted (w, b)); init: a warm start."""
        items = self.items
        if len(items) == 0:
            return float("nan"), None
        w, b = fit_logistic(self.x_tr, self.y_tr[:, items], self.m_tr[:, items], c, init=init)
        scores = _matmul(self.x_te, w) + b  # (score users, items) decision function
        aucs = column_aucs(self.y_te[:, items], scores, self.m_te[:, items])
        return float(np.mean(aucs)), (w, b)


def _matmul(x: UserVectors, w: np.ndarray) -> np.ndarray:
    return np.asarray(x @ w)


def fit_logistic(
    x: UserVectors,
    y: np.ndarray,
    mask: np.ndarray,
    c: float,
    tol: float = 1e-5,
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One L2-regularised logistic regression per column of y, all fitted at once.

    Minimises, for each column j independently, sklearn's objective
    C * sum_i mask_ij * logloss(y_ij, x_i w_j + b_j) + ||w_j||^2 / 2 (intercept not penalised).
    The columns share no parameter, so the joint L-BFGS minimum is every column's own minimum:
    the same model as looping sklearn's LogisticRegression(C=c), many times faster. Like sklearn,
    the objective is divided by the number of rows and L-BFGS stops on the largest gradient entry
    (`tol`; sklearn's default is 1e-4 per model: 1e-5 over all columns is at least as tight).
    init: a starting (w, b), e.g. the solution at a nearby C (the minimum does not depend on
    it). Returns w (dim, columns) and b (columns,).
    """
    import torch

    n, dim = x.shape
    w0, b0 = init or (np.zeros((dim, y.shape[1])), np.zeros(y.shape[1]))
    used = None
    if sp.issparse(x):
        # columns with no entry in x get no gradient but the penalty's, so their weights stay
        # at 0: fitting the used columns alone is the same minimum, and much cheaper on a large
        # catalog; the products run in scipy, many times faster than torch's sparse ones
        csr = sp.csr_matrix(x, dtype=np.float64)
        used = np.flatnonzero(np.diff(csr.tocsc().indptr) > 0)
        csr = csr[:, used]
        csr_t = sp.csr_matrix(csr.T)
        w0 = w0[used]
    else:
        xt = torch.from_numpy(np.asarray(x, np.float64))
    yt = torch.from_numpy(y.astype(np.float64))
    mt = torch.from_numpy(mask.astype(np.float64))
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        max_iter=500,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = xt @ w + b
        nll = torch.nn.functional.binary_cross_entropy_with_logits(z, yt, mt, reduction="sum")
        loss = (c * nll + 0.5 * (w * w).sum()) / n
        loss.backward()
        return loss

    def sparse_closure() -> torch.Tensor:
        # the same objective, its gradient written out: d/dz of the masked log loss is
        # mask * (sigmoid(z) - y)
        with torch.no_grad():
            z = torch.from_numpy(csr @ w.numpy()) + b
            nll = torch.nn.functional.binary_cross_entropy_with_logits(z, yt, mt, reduction="sum")
            loss = (c * nll + 0.5 * (w * w).sum()) / n
            dz = c * mt * (torch.sigmoid(z) - yt) / n  # (rows, columns)
            w.grad = torch.from_numpy(csr_t @ dz.numpy()) + w / n
            b.grad = dz.sum(dim=0)
        return loss

    opt.step(closure if used is None else sparse_closure)
    if used is None:
        return w.detach().numpy(), b.detach().numpy()
    full = np.zeros((dim, y.shape[1]))
    full[used] = w.detach().numpy()
    return full, b.detach().numpy()


def item_features(split: Split, collab: np.ndarray) -> np.ndarray:
    """(candidates, 1 + dim): log(1 + history users of the item), its PPMI-SVD vector."""
    pop = np.asarray((split.hist[:, split.candidates] > 0).sum(axis=0)).ravel()
    return np.hstack([np.log1p(pop)[:, None], collab[split.candidates]]).astype(np.float32)


def _pairs(vectors: UserVectors, items: np.ndarray, u: np.ndarray, j: np.ndarray) -> UserVectors:
    if sp.issparse(vectors):
        return sp.hstack([vectors[u], sp.csr_matrix(items[j])], format="csr")
    return np.hstack([vectors[u], items[j]])


def gbdt_probe(split: Split, vectors: UserVectors, collab: np.ndarray) -> dict[str, float]:
    """One LightGBM on (user, candidate) pairs of probe-train users; pooled metrics on test."""
    y, items = split.labels(), item_features(split, collab)
    u, j = np.nonzero(split.pair_mask())  # scored pairs, row-major: grouped by user
    ut, jt = u[split.test[u]], j[split.test[u]]
    if vectors.shape[1] == 0:  # popularity: rank by history popularity, no model
        return pair_metrics(split, ut, jt, y[ut, jt], items[jt, 0])
    val_user = np.random.default_rng([split.seed, 10]).random(len(split.user_ids)) < 0.1
    fit = split.train[u] & ~val_user[u]
    val = split.train[u] & val_user[u]
    model = make_model("lightgbm", seed=split.seed).fit(
        _pairs(vectors, items, u[fit], j[fit]),
        y[u[fit], j[fit]],
        _pairs(vectors, items, u[val], j[val]),
        y[u[val], j[val]],
    )
    scores = model.predict_proba(_pairs(vectors, items, ut, jt))
    return pair_metrics(split, ut, jt, y[ut, jt], scores)


def pair_metrics(
    split: Split, u: np.ndarray, j: np.ndarray, y: np.ndarray, scores: np.ndarray
) -> dict[str, float]:
    """Pooled AUC over the scored pairs; Recall / NDCG@10 ranking each user's unseen candidates
    (ranked_users: which users count)."""
    pooled = auc(y, scores)
    unseen = split.unseen()[u, j]
    u, y, scores = u[unseen], y[unseen], scores[unseen]
    for_ndcg, for_recall = ranked_users(split, u, y)
    ndcg = ranking_metrics(split.user_ids[u[for_ndcg]], y[for_ndcg], scores[for_ndcg], RANK_K)
    recall = ranking_metrics(
        split.user_ids[u[for_recall]], y[for_recall], scores[for_recall], RANK_K
    )
    enough = lambda m, key: m[key] if m["users"] >= MIN_RANKED_USERS else float("nan")  # noqa: E731
    return {
        "gbdt_auc": pooled,
        f"recall@{RANK_K}": enough(recall, f"recall@{RANK_K}"),
        f"ndcg@{RANK_K}": enough(ndcg, f"ndcg@{RANK_K}"),
    }


def ranked_users(split: Split, u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of the ranked pairs (rows u, labels y) count for NDCG@K and for Recall@K.

    Implicit feedback: every user with a positive (ranking_metrics' own rule), for both.
    Explicit feedback ranks only the items a user rated, so a user whose rated candidates are
    all liked (or none) has one possible NDCG, and one with at most K rated candidates has a
    Recall@K of 1 whatever the scores: NDCG counts the users whose rated candidates hold both a
    liked and a disliked item, Recall those of them with more than K rated candidates. Either
    metric is NaN (no column) when fewer than MIN_RANKED_USERS users count."""
    every = np.ones(len(u), bool)
    if not split.explicit:
        return every, every
    n = np.bincount(u, minlength=len(split.user_ids))
    pos = np.bincount(u, weights=y, minlength=len(split.user_ids))
    mixed = (pos > 0) & (pos < n)
    return mixed[u], (mixed & (n > RANK_K))[u]


def rating_level_probe(split: Split, vectors: UserVectors) -> dict[str, float]:
    """Explicit feedback only: how well a ridge regression from the user vector (fitted on
    probe-train users, alpha by leave-one-out over RIDGE_ALPHAS) predicts each probe-test
    user's mean future rating: their Spearman correlation. Empty on implicit data."""
    if not split.explicit or split.future_rating is None:
        return {}
    if vectors.shape[1] == 0:  # no user vector: one constant prediction
        return {"rating_level": float("nan")}
    target = split.future_rating
    tr = np.flatnonzero(split.train & np.isfinite(target))
    te = np.flatnonzero(split.test & np.isfinite(target))
    x_tr, x_te = _scaled(vectors[tr], vectors[te])
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(x_tr, target[tr])
    pred = model.predict(x_te)
    if np.ptp(pred) == 0:
        return {"rating_level": float("nan")}
    return {"rating_level": float(spearmanr(pred, target[te]).statistic)}


def genre_targets(split: Split) -> tuple[np.ndarray, list[str]]:
    """Per user, the genre / tag most present among their future items (-1: none), and names."""
    items = split.data.items.set_index(C.ITEM_ID)[C.GENRES].reindex(split.item_ids).fillna("")
    lists = [[g for g in s.split("|") if g] for s in items]
    names = sorted({g for lst in lists for g in lst})
    if not names:
        return np.full(len(split.user_ids), -1), []
    index = {g: k for k, g in enumerate(names)}
    rows = np.repeat(np.arange(len(lists)), [len(lst) for lst in lists])
    cols = np.array([index[g] for lst in lists for g in lst], np.int64)
    genre = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(lists), len(names)))
    top = np.argsort(-np.asarray(((split.hist > 0) @ genre).sum(axis=0)).ravel(), kind="stable")
    top = top[:N_GENRES]  # the most consumed genres, most consumed first
    counts = np.asarray(((split.fut > 0) @ genre[:, top]).todense())  # (users, top)
    target = np.where(counts.max(axis=1) > 0, counts.argmax(axis=1), -1)
    return target, [names[k] for k in top]


def genre_probe(split: Split, warm: UserVectors) -> dict[str, float]:
    """Multinomial logistic regression from the user vector to the dominant future genre, its C
    chosen on the probe-train users (genre_c)."""
    target, names = genre_targets(split)
    tr = np.flatnonzero(split.train & (target >= 0))
    te = np.flatnonzero(split.test & (target >= 0))
    if not names or warm.shape[1] == 0 or len(np.unique(target[tr])) < 2:
        return {"genre_acc": float("nan"), "genre_f1": float("nan")}
    c = genre_c(split, warm[tr], target[tr])
    x_tr, x_te = _scaled(warm[tr], warm[te])
    pred = LogisticRegression(C=c, max_iter=500).fit(x_tr, target[tr]).predict(x_te)
    return {
        "genre_acc": float((pred == target[te]).mean()),
        "genre_f1": float(f1_score(target[te], pred, average="macro")),
        "genre_c": c,
    }


def genre_c(split: Split, x: UserVectors, target: np.ndarray) -> float:
    """The genre probe's L2 strength, chosen as linear_probe_cv chooses the linear probe's: each
    C of LINEAR_C_GRID is scored by CV_FOLDS-fold cross-validated accuracy over the probe-train
    users (rows of x), the best mean wins, ties to the weaker penalty. A fixed C = 1 would judge
    how well one prior suits each vector's scale (tf-idf's small sparse values against 64
    standardised columns), not the genre preference it carries."""
    fold = np.random.default_rng([split.seed, 3]).permutation(len(target)) % CV_FOLDS
    scores = np.zeros(len(LINEAR_C_GRID))
    for k in range(CV_FOLDS):
        fit, held = fold != k, fold == k
        if len(np.unique(target[fit])) < 2:
            continue
        x_fit, x_held = _scaled(x[fit], x[held])
        model = LogisticRegression(max_iter=500, warm_start=True)
        for i, c in enumerate(LINEAR_C_GRID):  # strongest penalty first, each fit warm-started
            model.set_params(C=c).fit(x_fit, target[fit])
            scores[i] += float((model.predict(x_held) == target[held]).mean()) / CV_FOLDS
    return LINEAR_C_GRID[int(np.flatnonzero(scores == scores.max())[-1])]


def _unit(v: UserVectors) -> np.ndarray:
    x = np.asarray(v.todense() if sp.issparse(v) else v, np.float64)  # type: ignore[union-attr]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def similar_label(data) -> str:
    """What similar_probe measures on this data set (EvalData): the report's column header."""
    if data.clusters is not None:
        return f"cluster purity@{PURITY_K}"
    return "friends AUC" if data.friends is not None else "similar users"


def similar_absent(data) -> str | None:
    """Why similar_probe has no column on this data set (EvalData), or None when it runs."""
    if data.clusters is None and (data.friends is None or data.friends.empty):
        return "no friends / trust graph and no planted clusters"
    return None


def similar_probe(split: Split, warm: UserVectors) -> dict[str, float]:
    """Friends vs random pairs (ROC-AUC of cosine) or planted-cluster purity@10."""
    data = split.data
    if warm.shape[1] == 0 or (data.friends is None and data.clusters is None):
        return {}
    x = _unit(warm)
    if data.clusters is not None:
        cluster = data.clusters.reindex(split.user_ids).to_numpy()
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        nn = np.argpartition(-sims, PURITY_K, axis=1)[:, :PURITY_K]
        return {"similar": float((cluster[nn] == cluster[:, None]).mean())}
    return {"similar": _friends_auc(split, x)}


def _friends_auc(split: Split, x: np.ndarray) -> float:
    f = split.data.friends
    assert f is not None
    a = np.searchsorted(split.user_ids, f[C.USER_ID].to_numpy())
    b = np.searchsorted(split.user_ids, f[C.FRIEND_ID].to_numpy())
    a, b = np.minimum(a, len(split.user_ids) - 1), np.minimum(b, len(split.user_ids) - 1)
    ok = (
        (split.user_ids[a] == f[C.USER_ID].to_numpy())
        & (split.user_ids[b] == f[C.FRIEND_ID].to_numpy())
        & (a != b)
    )
    # one undirected pair per edge: a directed trust edge counts whichever way it points
    pairs = np.unique(np.stack([np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])]), axis=1)
    a, b = pairs[0], pairs[1]
    rng = np.random.default_rng([split.seed, 20])
    ra, rb = rng.integers(len(x), size=(2, 2 * len(a)))
    friends = set(zip(a.tolist(), b.tolist(), strict=True))
    keep = np.array(
        [
            p != q and (min(p, q), max(p, q)) not in friends
            for p, q in zip(ra.tolist(), rb.tolist(), strict=True)
        ]
    )
    ra, rb = ra[keep][: len(a)], rb[keep][: len(a)]
    sims = np.concatenate([(x[a] * x[b]).sum(axis=1), (x[ra] * x[rb]).sum(axis=1)])
    return auc(np.r_[np.ones(len(a)), np.zeros(len(ra))], sims)
