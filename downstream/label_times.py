"""When downstream labels are taken: a rolling origin over the times a batch is published at.

A batch trained as of T0 and embedded forward (T0, T0 + 7d, ...; `userrep embed --start`)
gives one label set per published time Tk, each row joined by Feast to z_u as of its own Tk.
Only Tk >= T0 are used: the encoder never saw events after a label time (leak-free).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from downstream.tasks import batch_as_of
from representation.build import last_event_time
from representation.publish import published_times
from userrep.settings import Settings, WorkspacePaths

log = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 7  # the window of a single label time (no cadence to take it from)
DEFAULT_HOLDOUT = 0.2  # share of events after the training time: the usual 80 / 20 time split
WEEK = pd.Timedelta(days=7)


def window_for(times: list[pd.Timestamp], window_days: int | None = None) -> int:
    """The label window in days: as given, else the spacing of the label times (median gap,
    whole days, at least 1), so consecutive windows tile the period and every later event is
    a label once; DEFAULT_WINDOW_DAYS for a single time."""
    if window_days is not None:
        if window_days < 1:
            raise ValueError(f"window_days must be >= 1, got {window_days}")
        return int(window_days)
    if len(times) < 2:
        return DEFAULT_WINDOW_DAYS
    ns = np.array([t.value for t in sorted(times)], np.int64)  # (times,)
    gaps = np.diff(ns).astype(np.float64) / 86_400e9  # (times - 1,) days
    return max(1, int(np.ceil(float(np.median(gaps)) - 1e-9)))


def label_times(
    settings: Settings, batch_id: str, window_days: int | None = None
) -> tuple[list[pd.Timestamp], int]:
    """(label times, window days) of a batch: its published as-of times at or after its
    training time that have later events. ValueError when there is none (a batch trained on
    the newest snapshot has no future to label: backfill an earlier-trained batch forward)."""

    trained = batch_as_of(settings, batch_id)
    last = last_event_time(settings.paths)
    published = published_times(settings, batch_id)
    times = [t for t in published if trained <= t < last]
    if not times:
        raise ValueError(
            f"batch {batch_id} (trained as of {trained}) is published at no time from its "
            f"training time on that has later events (published: "
            f"{', '.join(str(t) for t in published) or 'none'}; last event {last}): embed it "
            "forward (`userrep embed --batch B --start T0 --end T1 --every 7D`), or give --as-of"
        )
    window = window_for(times, window_days)
    log.info(
        "label times of batch %s: %d, %s .. %s, window %dd",
        batch_id,
        len(times),
        times[0],
        times[-1],
        window,
    )
    return times, window


def holdout_start(
    paths: WorkspacePaths,
    holdout: float = DEFAULT_HOLDOUT,
    end: pd.Timestamp | None = None,
    every: pd.Timedelta = WEEK,
) -> pd.Timestamp:
    """The training time T0 that leaves about `holdout` of the events after it for labels:
    the (1 - holdout) quantile of event time, moved back onto the grid end - k * every."""
    import duckdb

    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    end = end if end is not None else last_event_time(paths).ceil("D")
    source = f"read_parquet('{paths.events}/*.parquet')"
    sql = f"SELECT quantile_disc(epoch_ns(ts), {1 - holdout}) FROM {source}"
    q = pd.Timestamp(duckdb.connect().execute(sql).fetchone()[0], tz="UTC")  # type: ignore[index]
    steps = max(1, int(np.ceil((end - q) / every)))
    return end - steps * every
