"""Rolling-origin labels on planted events: label times of a batch (leak-free, with later
events), windows that tile the period, one label set per time, ranking per (user, time), and
GBDT leaf sizes that follow the training-set size. Small frames, no Feast, seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from downstream import labels as L
from downstream.label_times import DEFAULT_WINDOW_DAYS, holdout_start, label_times, window_for
from downstream.models import GBDTParams, make_model, sized_for
from downstream.tasks import Design
from representation import batches, pipeline
from userrep import columns as C
from userrep.db import session_scope, upgrade
from userrep.settings import Settings

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _ingest(settings: Settings, rows: list[tuple[int, int, pd.Timestamp]]) -> None:
    from userrep import ingest

    events = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.TS]).assign(**{C.WEIGHT: 1.0})
    ingest.ingest_event_frame(settings.paths, events, "planted")
    items = pd.DataFrame(
        {
            C.ITEM_ID: np.arange(10, 20, dtype=np.int64),
            C.TITLE: [f"item {i}" for i in range(10, 20)],
            C.ARTIST_ID: pd.array([pd.NA] * 10, dtype="Int64"),
            C.ARTIST: "",
            C.GENRES: ["rock"] * 5 + ["jazz"] * 5,  # items 10-14 rock, 15-19 jazz
        }
    )
    ingest.ingest_items(settings.paths, items)


# user 1: active before T0, plays 11 in the first week and 12 in the second;
# user 2: first play in the first week, plays jazz (16, 17) in the second;
# user 3: never plays after T0.
PLANTED = [
    (1, 10, T0 - 2 * DAY),
    (3, 13, T0 - 3 * DAY),
    (1, 11, T0 + 1 * DAY),
    (2, 15, T0 + 3 * DAY),
    (1, 12, T0 + 8 * DAY),
    (2, 16, T0 + 9 * DAY),
    (2, 17, T0 + 10 * DAY),
    (3, 18, T0 + 16 * DAY),  # the last event: T0 + 14d still has a (short) window
]


@pytest.fixture
def planted(fresh_settings: Settings) -> Settings:
    upgrade(fresh_settings.metadata_db_url)
    _ingest(fresh_settings, PLANTED)
    return fresh_settings


def _publish(settings: Settings, batch_id: str, trained: pd.Timestamp, times: list) -> None:
    """A batch trained as of `trained`, published (offline) at `times`; z_u are zeros."""
    with session_scope(settings.metadata_db_url) as session:
        batches.create_batch(
            session,
            batch_id=batch_id,
            as_of=trained.to_pydatetime(),
            feature_service=C.ENCODER_INPUT_SERVICE,
            latent_dim=2,
            artifact_path="-",
            artifact_sha256="-",
            metrics={},
        )
    users = np.array([1, 2, 3])
    for t in times:
        table = pipeline.embedding_table(users, np.zeros((3, 2), np.float32), batch_id, t)
        pq.write_table(
            table, settings.paths.user_embedding / f"{batch_id}__{t:%Y%m%dT%H%M%S}.parquet"
        )
    with session_scope(settings.metadata_db_url) as session:
        batches.mark_ready(session, batch_id, len(users))


def test_window_tiles_the_label_times() -> None:
    weekly = [T0 + 7 * k * DAY for k in range(4)]
    assert window_for(weekly) == 7
    assert window_for([T0, T0 + DAY, T0 + 2 * DAY]) == 1
    assert window_for([T0, T0 + 7 * DAY, T0 + 21 * DAY]) == 11  # median gap 10.5 -> 11 days
    assert window_for([T0]) == DEFAULT_WINDOW_DAYS
    assert window_for(weekly, 30) == 30
    with pytest.raises(ValueError):
        window_for(weekly, 0)


def test_label_times_are_leak_free_and_have_later_events(planted: Settings) -> None:
    times = [T0 + k * 7 * DAY for k in (-1, 0, 1, 2, 3)]  # T0 - 7d .. T0 + 21d
    _publish(planted, "b-roll", T0, times)
    got, window = label_times(planted, "b-roll")
    # before training (the encoder saw those windows) and after the last event are left out
    assert got == [T0, T0 + 7 * DAY, T0 + 14 * DAY] and window == 7
    assert label_times(planted, "b-roll", window_days=3)[1] == 3
    _publish(planted, "b-newest", T0 + 21 * DAY, [T0, T0 + 21 * DAY])
    with pytest.raises(ValueError, match="embed it"):  # trained on the newest snapshot
        label_times(planted, "b-newest")


def test_future_listening_takes_one_label_set_per_time(planted: Settings) -> None:
    labels = L.future_listening(planted, [T0 + 7 * DAY, T0], 7, negatives_per_positive=1)
    pos = labels[labels[L.LABEL] == 1]
    got = {
        (u, i, t)
        for u, i, t in zip(pos[C.USER_ID], pos[C.ITEM_ID], pos[C.EVENT_TIMESTAMP], strict=True)
    }
    # T0: only user 1 was active (user 2's first play is after T0); T0 + 7d: users 1 and 2
    assert got == {(1, 11, T0), (1, 12, T0 + 7 * DAY), (2, 16, T0 + 7 * DAY), (2, 17, T0 + 7 * DAY)}
    assert list(labels[C.EVENT_TIMESTAMP].drop_duplicates()) == [T0, T0 + 7 * DAY]  # time order
    neg = labels[labels[L.LABEL] == 0]
    for t, part in neg.groupby(C.EVENT_TIMESTAMP):
        assert not {(u, i, t) for u, i in zip(part[C.USER_ID], part[C.ITEM_ID], strict=True)} & got
    one = L.future_listening(planted, T0, 7, negatives_per_positive=1)
    pd.testing.assert_frame_equal(
        one,
        labels[labels[C.EVENT_TIMESTAMP] == T0].reset_index(drop=True),
        check_dtype=False,  # the stacked frame's timestamps are ns, one time's keep T0's unit
    )


def test_genre_preference_per_user_and_time(planted: Settings) -> None:
    labels = L.genre_preference(planted, [T0, T0 + 7 * DAY], 7)
    got = {
        (u, t, g)
        for u, t, g in zip(
            labels[C.USER_ID], labels[C.EVENT_TIMESTAMP], labels[L.LABEL], strict=True
        )
    }
    assert got == {(1, T0, "rock"), (1, T0 + 7 * DAY, "rock"), (2, T0 + 7 * DAY, "jazz")}


def test_holdout_start_is_on_the_weekly_grid_before_the_quantile(fresh_settings: Settings) -> None:
    from userrep import ingest

    days = pd.date_range(T0, periods=100, freq="D") + pd.Timedelta(hours=12)  # one event a day
    events = pd.DataFrame({C.USER_ID: 1, C.ITEM_ID: 10, C.TS: days, C.WEIGHT: 1.0})
    ingest.ingest_event_frame(fresh_settings.paths, events, "daily")
    end = days[-1].ceil("D")
    t0 = holdout_start(fresh_settings.paths, 0.2, end)
    assert (end - t0) % (7 * DAY) == pd.Timedelta(0)
    after = (days > t0).mean()
    assert 0.2 <= after < 0.2 + 7 / 100  # at least the holdout, at most one more week


def test_ranking_queries_are_user_and_time() -> None:
    users = np.array([1, 1, 1, 1, 2, 2])
    times = np.array([0, 0, 5, 5, 0, 0])
    design = Design(np.zeros((6, 1)), np.zeros(6), users, np.array(["test"] * 6), ["x"], 1, {})
    np.testing.assert_array_equal(design.queries(), users)  # no times: one query per user
    design.times = times
    q = design.queries()
    assert q[0] == q[1] != q[2] == q[3] and q[4] == q[5] and len(set(q)) == 3


def test_leaf_size_follows_the_training_rows() -> None:
    p = GBDTParams()
    assert sized_for(p, 10_000).min_child_samples == 40  # large sets: as configured
    assert sized_for(p, 300).min_child_samples == 15
    assert sized_for(p, 30).min_child_samples == 2
    assert sized_for(GBDTParams(scale_to_rows=False), 30).min_child_samples == 40


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_a_tiny_multiclass_set_is_learned(family: str) -> None:
    """60 training rows, 3 classes, class = argmax of the first 3 features: LightGBM's fixed
    leaf size of 40 rows cannot split them (constant prediction); the size-scaled one learns
    them. (XGBoost's leaf bound is a hessian sum, 40 / 10: it could split, and still does.)"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(260, 6)).astype(np.float32)
    y = x[:, :3].argmax(axis=1)
    fit, test = slice(0, 60), slice(60, 260)
    fixed = make_model(family, scale_to_rows=False).fit(x[fit], y[fit])
    scaled = make_model(family).fit(x[fit], y[fit])
    if family == "lightgbm":
        assert len(np.unique(fixed.predict_proba(x[test]).argmax(axis=1))) == 1  # nothing
    acc = (scaled.predict_proba(x[test]).argmax(axis=1) == y[test]).mean()
    assert acc > 0.6  # chance: 1/3
    assert scaled.params.min_child_samples == 3  # recorded with the model (params.json)


def test_cross_fitting_scores_every_user_once() -> None:
    """Planted: a user likes the items on their side of 0. One split scores ~30% of the
    users; cross-fitting over 4 folds scores every labelled user, out of fold."""
    from downstream.metrics import split_users
    from downstream.tasks import fit_evaluate

    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(200), 10)  # 200 users x 10 candidate items
    side = rng.normal(size=200)[users]  # (rows,) the user's taste
    item = rng.normal(size=len(users))  # (rows,) the item's position
    x = np.stack([side, item], axis=1).astype(np.float32)
    y = ((side > 0) == (item > 0)).astype(np.int64)
    design = Design(x, y, users, split_users(users), ["user", "item"], 1, {})
    _, one = fit_evaluate(design, "lightgbm")
    _, cross = fit_evaluate(design, "lightgbm", folds=4)
    assert 40 <= one["test_users"] <= 80
    assert cross["test_users"] == 200 and cross["rows"] == len(y) and cross["folds"] == 4
    assert cross["auc"] > 0.9 and one["auc"] > 0.9
