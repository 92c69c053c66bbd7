"""Training sets: label rows + Feast point-in-time features (z_u of ONE pinned batch, or the
curated / raw user features it replaces, plus item vectors for item tasks).

Every label row comes back, in order; features that did not exist at a row's time are null.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from representation import batches
from representation.inputs import InputLayout
from userrep import columns as C
from userrep.db import BatchStatus, TargetKind, latest_validation_run, session_scope
from userrep.feast_store import feature_store
from userrep.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

FeatureSet = Literal["z_u", "curated", "raw", "onboarding"]
FEATURE_SETS: tuple[str, ...] = ("z_u", "curated", "raw", "onboarding")
ITEM_FEATURES = ("collab", "content")  # item_vectors features joined for item tasks
ROW = "_label_row"
TRAINABLE = (BatchStatus.READY, BatchStatus.ACTIVE)


def curated_features(settings: Settings) -> list[str]:
    """The hand-made "before": counts and weights per horizon, recency, diversity, onboarding."""
    hist = [f(h) for h in settings.horizon_list for f in (C.count_feature, C.weight_feature)]
    hist += [C.RECENCY_DAYS, C.N_DISTINCT_ITEMS, C.DIVERSITY]
    onb = [C.DEMO_VEC, C.N_ONBOARDING, C.DAYS_SINCE_SIGNUP]
    return [f"{C.USER_HISTORY_VIEW}:{f}" for f in hist] + [
        f"{C.USER_ONBOARDING_VIEW}:{f}" for f in onb
    ]


def raw_features(settings: Settings) -> list[str]:
    """encoder_input_v2 in full: what the autoencoder reads, without the autoencoder (read
    from the input layout itself, so it follows every change to the encoder's input)."""
    layout = InputLayout(tuple(h.name for h in settings.horizon_list), 1, 1)
    views = {"onboarding": C.USER_ONBOARDING_VIEW}
    return [f"{views.get(group, C.USER_HISTORY_VIEW)}:{name}" for name, group, _ in layout.widths()]


def onboarding_features() -> list[str]:
    """The cold-start baseline: mean item vectors (collab, content) of the onboarding picks."""
    return [f"{C.USER_ONBOARDING_VIEW}:{f}" for f in (C.ONBOARD_COLLAB, C.ONBOARD_CONTENT)]


def user_feature_refs(settings: Settings, feature_set: str) -> list[str]:
    if feature_set == "onboarding":
        return onboarding_features()
    if feature_set == "z_u":
        return [f"{C.USER_EMBEDDING_VIEW}:{C.Z_U}"]
    if feature_set == "curated":
        return curated_features(settings)
    if feature_set == "raw":
        return raw_features(settings)
    raise ValueError(f"unknown feature set {feature_set!r}: one of {', '.join(FEATURE_SETS)}")


def trainable_batch(settings: Settings, batch_id: str | None) -> str:
    """A ready or active batch id (the active one when None); BatchError otherwise."""
    with session_scope(settings.metadata_db_url) as session:
        batch = batches.get_batch(session, batch_id) if batch_id else batches.active_batch(session)
        if batch is None:
            raise batches.BatchError(
                "no active batch to train on: pass a batch id or promote one "
                "(`userrep batches promote`)"
            )
        if batch.status not in TRAINABLE:
            raise batches.BatchError(
                f"batch {batch.batch_id!r} is {batch.status}: downstream models train only on a "
                "ready or active batch (a retired batch is no longer served; a building one is "
                "not published yet)"
            )
        return batch.batch_id


def _check_labels(labels: pd.DataFrame) -> None:
    missing = [c for c in (C.USER_ID, C.EVENT_TIMESTAMP) if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lack column(s) {missing}: need user_id and event_timestamp")
    ts = labels[C.EVENT_TIMESTAMP]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError("labels.event_timestamp must be timezone-aware (UTC) datetimes")
    if labels[C.USER_ID].isna().any():
        raise ValueError("labels have rows without a user_id")


def _entity_frame(labels: pd.DataFrame, batch_id: str | None) -> pd.DataFrame:
    entity = labels.copy()
    entity[ROW] = np.arange(len(entity), dtype=np.int64)
    if batch_id is not None:
        if C.BATCH_ID in entity.columns and (entity[C.BATCH_ID] != batch_id).any():
            raise ValueError(f"labels carry batch ids other than the pinned batch {batch_id!r}")
        entity[C.BATCH_ID] = batch_id
    return entity


def historical(store: FeatureStore, entity: pd.DataFrame, refs: Sequence[str]) -> pa.Table:
    """Feast point-in-time join, rows back in entity order; refuses to lose a row."""
    table = store.get_historical_features(entity_df=entity, features=list(refs)).to_arrow()
    if table.num_rows != len(entity):
        raise RuntimeError(
            f"Feast returned {table.num_rows} rows for {len(entity)} label rows: rows were "
            "dropped or duplicated (is the offline store `duckdb`?)"
        )
    return table.take(pc.sort_indices(table[ROW]))


def null_report(
    frame: pd.DataFrame, user_cols: Sequence[str], item_cols: Sequence[str], known: pd.Series | None
) -> dict[str, int]:
    """Rows whose user (item) features are all null; for z_u, unknown users vs too early."""
    user_null = frame[list(user_cols)].isna().all(axis=1).to_numpy()
    report = {"rows": len(frame), "user_features_null": int(user_null.sum())}
    if item_cols:
        report["item_features_null"] = int(frame[list(item_cols)].isna().all(axis=1).sum())
    if known is not None:  # first vector time per user of the pinned batch
        first = frame[C.USER_ID].map(known)
        unknown = user_null & first.isna().to_numpy()
        report["unknown_users"] = int(unknown.sum())
        report["before_first_snapshot"] = int((user_null & ~unknown).sum())
    return report


def first_vector_times(settings: Settings, batch_id: str) -> pd.Series:
    """Time of each user's first published z_u in the batch (offline files)."""
    import duckdb

    glob = str(settings.paths.user_embedding / f"{batch_id}__*.parquet")
    sql = f"SELECT user_id, MIN(event_timestamp) AS t FROM read_parquet('{glob}') GROUP BY 1"
    try:
        df = duckdb.connect().execute(sql).df()
    except duckdb.IOException:  # no file: the batch has no published vectors
        df = pd.DataFrame({C.USER_ID: [], "t": []})
    return pd.Series(df["t"].to_numpy(), index=df[C.USER_ID].to_numpy())


@dataclass(frozen=True)
class BatchValidation:
    """The newest validation run over a batch's z_u (target kind "batch") in the metadata DB;
    the validation package writes these runs, downstream only reads them."""

    batch_id: str
    run_id: int | None = None  # None: the batch was never validated
    suite: str | None = None
    success: bool | None = None
    failed: list[str] = field(default_factory=list)  # failed expectations of that run
    at: str | None = None

    def headline(self) -> str:
        if self.run_id is None:
            return f"batch {self.batch_id}: no validation run"
        state = "passed" if self.success else f"failed ({', '.join(self.failed) or '?'})"
        return f"batch {self.batch_id}: validation run #{self.run_id} ({self.suite}) {state}"


def batch_validation(settings: Settings, batch_id: str) -> BatchValidation:
    """What the metadata DB says of the batch's z_u: its newest validation run, if any."""
    with session_scope(settings.metadata_db_url) as session:
        run = latest_validation_run(session, TargetKind.BATCH, batch_id)
        if run is None:
            return BatchValidation(batch_id)
        return BatchValidation(
            batch_id,
            run.id,
            run.suite,
            bool(run.success),
            list(run.failed_expectations or []),
            str(run.created_at),
        )


def require_valid_batch(settings: Settings, batch_id: str) -> BatchValidation:
    """Refuse (BatchError) a batch whose newest validation run failed: a model must not learn
    from z_u that failed its checks. A batch never validated passes with a log line (such a
    batch was promoted with a recorded forced reason, or is only ready)."""
    check = batch_validation(settings, batch_id)
    if check.success is False:
        raise batches.BatchError(f"{check.headline()}: re-validate or retrain it first")
    log.info("%s", check.headline())
    return check


def build_training_set(
    settings: Settings,
    labels: pd.DataFrame,
    batch_id: str | None = None,
    feature_set: str = "z_u",
    store: FeatureStore | None = None,
    validate: bool = True,
) -> pd.DataFrame:
    """Label rows + point-in-time features from Feast, one output row per label row, in order.

    feature_set "z_u" reads z_u of ONE batch (the active one when batch_id is None; a retired
    or building batch raises BatchError); "curated" and "raw" read user_history_features and
    user_onboarding_features ("onboarding": only its pick-mean vectors). Rows with an item_id
    also get item_vectors collab/content. The null counts are logged and kept in
    `frame.attrs["nulls"]`; with `validate`, a z_u set also reports its batch's newest
    validation run (`frame.attrs["batch_validation"]`; never raises: train_task refuses a
    batch whose run failed).
    """

    _check_labels(labels)
    refs = user_feature_refs(settings, feature_set)
    pinned = trainable_batch(settings, batch_id) if feature_set == "z_u" else None
    items = C.ITEM_ID in labels.columns
    refs += [f"{C.ITEM_VECTORS_VIEW}:{f}" for f in ITEM_FEATURES] if items else []
    entity = _entity_frame(labels, pinned)
    table = historical(store or feature_store(settings), entity, refs)
    frame = table.drop_columns([ROW]).to_pandas()
    frame.index = labels.index
    user_cols = [r.split(":", 1)[1] for r in refs if not r.startswith(C.ITEM_VECTORS_VIEW)]
    known = first_vector_times(settings, pinned) if pinned else None
    nulls = null_report(frame, user_cols, ITEM_FEATURES if items else (), known)
    frame.attrs.update(nulls=nulls, batch_id=pinned, feature_set=feature_set)
    log.info("training set (%s%s): %s", feature_set, f", batch {pinned}" if pinned else "", nulls)
    if validate and pinned is not None:  # report only
        check = batch_validation(settings, pinned)
        frame.attrs["batch_validation"] = asdict(check)  # attrs go into parquet as JSON
        frame.attrs["validation_failed"] = check.failed if check.success is False else None
        log.info("%s", check.headline())
    return frame
