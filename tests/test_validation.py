"""GX suites on small planted frames: the good frame passes; each corruption fails the expectation
built to catch it, and only that one (names asserted). Drift tests compare a candidate z_u with a
reference whose structure is known: two blocks of 16 correlated dimensions (rho = 0.5), every
dimension N(0, 1), so a permutation changes the joint structure but no marginal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from userrep import columns as C
from validation import stats
from validation.config import ValidationConfig
from validation.gate import TrainingSetInvalid, validate_training_set
from validation.targets import check_events, check_zu, zu_quality_frame

N, D, BATCH = 4000, 32, "b20240601-abcd"
AS_OF = pd.Timestamp("2024-06-01", tz="UTC")
NOW = AS_OF + pd.Timedelta(hours=6)
CFG = ValidationConfig()
IDS = np.arange(N, dtype=np.int64)


def planted(seed: int) -> np.ndarray:
    """(N, D): dims 0-15 share one factor, 16-31 another; unit variance, correlation 0.5."""
    rng = np.random.default_rng(seed)
    factors, noise = rng.standard_normal((N, 2)), rng.standard_normal((N, D))
    block = (np.arange(D) >= D // 2).astype(int)
    return (np.sqrt(0.5) * factors[:, block] + np.sqrt(0.5) * noise).astype(np.float32)


REFERENCE = planted(1)
# The same users one snapshot later: each vector moved a little (no drift in distribution).
GOOD = ((REFERENCE + 0.2 * planted(2)) / np.sqrt(1.04)).astype(np.float32)


def zu_frame(z: np.ndarray, ids: np.ndarray = IDS, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    n = len(ids)
    return zu_quality_frame(ids, z, [BATCH] * n, pd.Series([as_of] * n), pd.Series([NOW] * n))


def failed_zu(
    z: np.ndarray,
    frame: pd.DataFrame | None = None,
    reference: bool = True,
    same_space: bool = True,
    previous_rows: int | None = N,
) -> set[str]:
    frame = zu_frame(z) if frame is None else frame
    ref = (IDS, REFERENCE) if reference else None
    out = check_zu(frame, z, BATCH, D, NOW, CFG, previous_rows, ref, same_space)
    return set(out.failed)


def dims(kind: str, ks) -> set[str]:
    return {f"{kind}(z_u_{k})" for k in ks}


MEAN, STDEV, SHAPE = (
    "expect_column_mean_to_be_between",
    "expect_column_stdev_to_be_between",
    "expect_column_shape_to_match_reference",
)


def test_good_snapshot_passes_every_expectation() -> None:
    out = check_zu(zu_frame(GOOD), GOOD, BATCH, D, NOW, CFG, N, (IDS, REFERENCE))
    assert out.success, out.failed
    assert len(out.checks) > 3 * D  # quality + per-dimension + whole-vector checks all ran
    assert out.statistics["drift_mode"] == "same_space"


def test_nan_and_inf_fail_only_finiteness() -> None:
    z = GOOD.copy()
    z[10, 3], z[11, 4] = np.nan, np.inf
    assert failed_zu(z) == {"expect_column_vectors_to_be_finite(z_u)"}


def test_constant_dimension_fails_only_its_stdev() -> None:
    z = GOOD.copy()
    z[:, 5] = z[:, 5].mean()
    assert failed_zu(z) == dims(STDEV, [5])
    assert failed_zu(z, reference=False) == dims(STDEV, [5])  # caught without a reference too


def test_scale_change_fails_only_the_stdev_checks() -> None:
    mean = GOOD.mean(axis=0)
    z = ((GOOD - mean) * 1.5 + mean).astype(np.float32)
    assert failed_zu(z) == dims(STDEV, range(D))


def test_mean_shift_of_a_third_sigma_in_three_dims_fails_only_their_means() -> None:
    z = GOOD.copy()
    shifted = [3, 17, 29]
    z[:, shifted] += 0.3 * REFERENCE[:, shifted].std(axis=0)
    assert failed_zu(z) == dims(MEAN, shifted)


def test_kl_alone_misses_the_third_sigma_shift() -> None:
    """Why the suite pairs KL with mean checks: 0.3 sd moves a 20-bin KL by only ~0.05."""
    r = REFERENCE[:, 3].astype(np.float64)
    assert stats.kl_divergence(r, GOOD[:, 3] + 0.3 * r.std(), 20) < 0.1


def test_permuted_dimensions_fail_only_the_principal_component_check() -> None:
    """A retrain without alignment: same marginals, same distances, other axes."""
    z = GOOD[:, np.random.default_rng(0).permutation(D)]
    assert failed_zu(z) == {"expect_column_kl_divergence_to_be_less_than(pc_1)"}


def test_diffuse_shift_below_per_dimension_bounds_fails_only_the_domain_classifier() -> None:
    z = GOOD + 0.15 * np.tile([1.0, -1.0], D // 2).astype(np.float32)  # 0.15 sd, every dim
    assert failed_zu(z) == {"expect_domain_classifier_auc_to_be_below(z_u)"}


def test_vectors_attached_to_the_wrong_users_fail_only_neighbourhood_stability() -> None:
    z = GOOD[np.random.default_rng(0).permutation(N)]  # same vectors, shuffled user ids
    assert failed_zu(z) == {"expect_neighbourhood_overlap_to_be_above(z_u)"}


def test_skewed_dimension_fails_only_its_shape() -> None:
    z = GOOD.copy()
    skewed = np.random.default_rng(3).exponential(size=N) - 1.0  # mean 0, sd 1, skewed
    z[:, 7] = skewed * z[:, 7].std() + z[:, 7].mean()
    assert failed_zu(z) == dims(SHAPE, [7])


def test_duplicated_users_fail_only_uniqueness() -> None:
    ids = np.concatenate([IDS, IDS[:50]])
    z = np.vstack([GOOD, GOOD[:50]])
    assert failed_zu(z, zu_frame(z, ids)) == {"expect_column_values_to_be_unique(user_id)"}


def test_stale_snapshot_fails_only_freshness() -> None:
    frame = zu_frame(GOOD, as_of=NOW - pd.Timedelta(days=30))
    assert failed_zu(GOOD, frame) == {"expect_column_min_to_be_between(event_timestamp)"}


def test_row_count_collapse_vs_previous_run_fails_only_row_count() -> None:
    half = N // 2
    frame = zu_frame(GOOD[:half], IDS[:half])
    got = check_zu(frame, GOOD[:half], BATCH, D, NOW, CFG, previous_rows=N).failed
    assert got == ["expect_table_row_count_to_be_between"]


def test_wrong_length_and_foreign_batch_rows_are_named() -> None:
    frame = zu_frame(GOOD)
    vectors = list(GOOD)  # a plain object column of arrays works as well as Arrow lists
    vectors[0] = GOOD[0, :-1]
    frame[C.Z_U] = pd.Series(vectors, dtype=object)
    frame.loc[1, C.BATCH_ID] = "b-other"
    assert set(check_zu(frame, GOOD, BATCH, D, NOW, CFG, N).failed) == {
        "expect_column_vectors_to_have_length(z_u)",
        "expect_column_values_to_be_in_set(batch_id)",
    }


def test_new_batch_is_judged_by_space_invariant_checks_only() -> None:
    """A retrain = another space: a rotation of the good snapshot is fine across batches,
    while per-dimension checks (meaningless across spaces) would reject it."""
    q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((D, D)))
    rotated = (GOOD @ q * 3.0).astype(np.float32)  # rotated and rescaled
    out = check_zu(zu_frame(rotated), rotated, BATCH, D, NOW, CFG, N, (IDS, REFERENCE), False)
    assert out.success, out.failed
    assert not any(c.name.startswith((MEAN, SHAPE)) for c in out.checks)
    assert not any("domain_classifier" in c.name for c in out.checks)
    assert failed_zu(rotated) >= dims(STDEV, range(D))  # same-space checks would fire
    shuffled = rotated[np.random.default_rng(0).permutation(N)]
    got = failed_zu(shuffled, same_space=False)
    assert got == {"expect_neighbourhood_overlap_to_be_above(z_u)"}


# ---------------------------------------------------------------- events


def events(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            C.EVENT_ID: [f"e{i}" for i in range(n)],
            C.USER_ID: rng.integers(0, 50, n),
            C.ITEM_ID: rng.integers(0, 80, n),
            C.TS: NOW - pd.to_timedelta(rng.uniform(0, 30, n), unit="D"),
            C.WEIGHT: rng.geometric(0.4, n).astype(np.float64),
            C.EVENT_TYPE: "play",
        }
    )


def failed_events(frame: pd.DataFrame, previous_rows: int | None = 500) -> set[str]:
    return set(check_events(frame, "part-test", NOW, CFG, previous_rows).failed)


def test_good_events_pass() -> None:
    assert failed_events(events()) == set()


@pytest.mark.parametrize("bad", [-1.0, 1e9])
def test_weights_out_of_range_fail_only_the_weight_range(bad: float) -> None:
    frame = events()
    frame.loc[[3, 7], C.WEIGHT] = bad
    assert failed_events(frame) == {"expect_column_values_to_be_between(weight)"}


def test_event_problems_are_named() -> None:
    dup = events()
    dup.loc[5, C.EVENT_ID] = dup.loc[4, C.EVENT_ID]
    assert failed_events(dup) == {"expect_column_values_to_be_unique(event_id)"}
    missing = events()
    missing[C.ITEM_ID] = missing[C.ITEM_ID].astype("Int64")
    missing.loc[2, C.ITEM_ID] = pd.NA
    assert failed_events(missing) == {"expect_column_values_to_not_be_null(item_id)"}
    stale = events()
    stale[C.TS] -= pd.Timedelta(days=40)
    assert failed_events(stale) == {"expect_column_max_to_be_between(ts)"}
    future = events()
    future.loc[0, C.TS] = NOW + pd.Timedelta(days=5)
    assert failed_events(future) == {"expect_column_max_to_be_between(ts)"}


# ---------------------------------------------------------------- training sets


def training_set(n: int = 300, expanded: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, 8)).astype(np.float32)
    frame = pd.DataFrame(
        {
            C.USER_ID: np.arange(n),
            C.EVENT_TIMESTAMP: AS_OF,
            "label": rng.integers(0, 2, n),
            C.BATCH_ID: BATCH,
        }
    )
    if expanded:
        return pd.concat([frame, pd.DataFrame(z, columns=[f"z_u_{k}" for k in range(8)])], axis=1)
    return frame.assign(**{C.Z_U: list(z)})


@pytest.mark.parametrize("expanded", [False, True])
def test_good_training_set_passes(expanded: bool) -> None:
    out = validate_training_set(training_set(expanded=expanded), latent_dim=8, batch_id=BATCH)
    assert out.success


def test_training_set_gate_raises_naming_the_failed_expectations() -> None:
    frame = training_set(expanded=True)
    frame.loc[0, "label"] = 3
    frame.loc[1, "z_u_2"] = np.nan
    frame.loc[2, C.BATCH_ID] = "b-other"
    with pytest.raises(TrainingSetInvalid) as err:
        validate_training_set(frame, latent_dim=8, batch_id=BATCH)
    assert set(err.value.outcome.failed) == {
        "expect_column_values_to_be_between(label)",
        "expect_column_vectors_to_be_finite(z_u)",
        "expect_column_unique_value_count_to_be_between(batch_id)",
        "expect_column_values_to_be_in_set(batch_id)",
    }
    assert "expect_column_values_to_be_between(label)" in str(err.value)


def test_training_set_without_labels_fails_on_the_missing_column() -> None:
    out = validate_training_set(training_set().drop(columns=["label"]), raise_on_failure=False)
    assert out.failed == ["expect_column_to_exist(label)"]


# ---------------------------------------------------------------- records and reports


def test_report_draws_the_drifted_dimensions(tmp_path) -> None:
    from validation.report import write_report

    z = GOOD.copy()
    z[:, [3, 17]] += 0.5 * REFERENCE[:, [3, 17]].std(axis=0)
    out = check_zu(zu_frame(z), z, BATCH, D, NOW, CFG, N, (IDS, REFERENCE))
    assert set(out.samples) == {"z_u_3", "z_u_17"}  # histograms of what drifted, only
    page = write_report(out, tmp_path).read_text()
    assert page.count("<svg") == 2 and "expect_column_mean_to_be_between(z_u_17)" in page


def test_runs_are_recorded_and_the_next_run_compares_row_counts(fresh_settings) -> None:
    from userrep.db import TargetKind, latest_validation_run, session_scope, upgrade
    from validation.outcome import previous_row_count, record
    from validation.targets import ZU_SUITE

    upgrade(fresh_settings.metadata_db_url)
    assert previous_row_count(fresh_settings, TargetKind.BATCH, ZU_SUITE) is None
    first = check_zu(zu_frame(GOOD), GOOD, BATCH, D, NOW, CFG)
    record(fresh_settings, first)
    previous = previous_row_count(fresh_settings, TargetKind.BATCH, ZU_SUITE)
    assert previous == N
    half = N // 2
    second = check_zu(zu_frame(GOOD[:half], IDS[:half]), GOOD[:half], BATCH, D, NOW, CFG, previous)
    record(fresh_settings, second)
    with session_scope(fresh_settings.metadata_db_url) as session:
        run = latest_validation_run(session, TargetKind.BATCH, BATCH)
        assert run is not None and not run.success
        assert run.failed_expectations == ["expect_table_row_count_to_be_between"]
        assert run.statistics["observed"]["expect_table_row_count_to_be_between"] == half
    assert previous_row_count(fresh_settings, TargetKind.BATCH, ZU_SUITE) == N  # failed: skipped
