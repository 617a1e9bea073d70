"""Data profiles at scale: shards of a map task merged into one profile, Spark DataFrames profiled on Spark.

Real parts only: flytekit runs the map task and the Spark task locally, whylogs profiles and
merges, and a local Spark session (``local[1]``, one per module: a JVM takes seconds to start)
runs whylogs' Spark functions in its executors. Each test reads back what a user would check: the
merged profile against one profile of the whole frame, the decks, the profile a task returned.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flytekit import map_task, task, workflow
from flytekit.core.context_manager import FlyteContextManager

from flyte_ctx_tracking import (
    ConstraintsFailedError,
    TrackingError,
    TrackingWarning,
    merge_profiles,
    whylogs_profile,
)
from flyte_ctx_tracking.sessions.whylogs._compat import import_whylogs

import_whylogs()

from whylogs.core import DatasetProfileView  # noqa: E402
from whylogs.core.constraints.factories import (  # noqa: E402
    greater_than_number,
    is_in_range,
    no_missing_values,
)

# pyspark 4 warns that it does not fully support pandas 3 on every conversion; what is used here works.
# One xdist worker runs the whole module, so one JVM serves it (see ONE_WORKER_MODULES in conftest.py).
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

ROWS = 4_000
# whylogs' exact metrics (the type counts too); the rest are sketches with error bounds.
EXACT = (
    *("counts/n", "counts/null", "counts/nan", "counts/inf"),
    *("distribution/n", "distribution/min", "distribution/max"),
)
QUANTILES = {"q_01": 0.01, "q_10": 0.10, "q_25": 0.25, "median": 0.5, "q_75": 0.75, "q_90": 0.90, "q_99": 0.99}


def frame(rows: int, *, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    country = rng.choice(["fr", "de", "it"], rows).astype(object)
    country[::10] = None  # every tenth row has no country
    return pd.DataFrame(
        {
            "amount": rng.normal(100.0 + shift, 10.0, rows),
            "country": country,
            "items": rng.integers(1, 5, rows),
            "user": rng.integers(0, rows, rows),  # many distinct values: the cardinality sketch estimates
        }
    )


def deck_pages() -> dict[str, str]:
    """The decks of the running task, by title."""
    return {deck.name: deck.html for deck in FlyteContextManager.current_context().user_space_params.decks}


def assert_merged_matches_whole(merged: DatasetProfileView, whole: DatasetProfileView, data: pd.DataFrame) -> None:
    """Equal where whylogs' sketches are exact; within each sketch's documented error elsewhere."""
    merged_table, whole_table = merged.to_pandas(), whole.to_pandas()
    assert sorted(merged_table.index) == sorted(whole_table.index) == sorted(data.columns)
    exact = [name for name in merged_table.columns if name in EXACT or name.startswith("types/")]
    pd.testing.assert_frame_equal(merged_table.loc[data.columns, exact], whole_table.loc[data.columns, exact])
    for column in data.columns:
        values = data[column].dropna()
        merged_column = merged.get_column(column)
        if pd.api.types.is_numeric_dtype(values):
            # The mean and spread are merged with the parallel-variance formula: equal up to rounding.
            for stat in ("distribution/mean", "distribution/stddev"):
                assert merged_table.loc[column, stat] == pytest.approx(whole_table.loc[column, stat], rel=1e-9)
            # KLL quantiles: the true rank of each estimate is within the sketch's normalized rank error.
            kll = merged_column.get_metric("distribution").kll.value
            error = kll.normalized_rank_error(False) + 1 / len(values)  # + one row: ties in integer columns
            for name, rank in QUANTILES.items():
                estimate = merged_table.loc[column, f"distribution/{name}"]
                below, at_most = float((values < estimate).mean()), float((values <= estimate).mean())
                assert below - error <= rank <= at_most + error, (column, name, estimate)
        # HyperLogLog: the true distinct count lies within 3 standard deviations of the estimate.
        hll = merged_column.get_metric("cardinality").hll.value
        assert hll.get_lower_bound(3) <= values.nunique() <= hll.get_upper_bound(3), column
    # Frequent items of a column with few values are exact.
    merged_items = merged.get_column("country").get_metric("frequent_items").to_summary_dict()
    whole_items = whole.get_column("country").get_metric("frequent_items").to_summary_dict()
    assert merged_items == whole_items


# ------------------------------------------------------------------------------ shards of a map task
@task
def split(rows: int, shards: int) -> list[pd.DataFrame]:
    data = frame(rows)
    return [data.iloc[index::shards].reset_index(drop=True) for index in range(shards)]


@task
def profile_shard(shard: pd.DataFrame) -> DatasetProfileView:
    with whylogs_profile("shard", deck=False) as prof:
        prof.log(shard)
    return prof.view()


def test_a_map_task_profiles_shards_and_the_reduce_task_judges_the_merged_profile() -> None:
    pages: dict[str, str] = {}
    handles: list[Any] = []
    rules = [
        greater_than_number(column_name="amount", number=0),
        is_in_range(column_name="items", lower=1, upper=4),
        no_missing_values(column_name="country"),  # every tenth row has none: fails on the merged profile
    ]

    @task(enable_deck=True)
    def merge(profiles: list[DatasetProfileView]) -> DatasetProfileView:
        with whylogs_profile(
            "transactions", reference=frame(ROWS, seed=1, shift=30.0), constraints=rules, interactive=False
        ) as prof:
            for profile in profiles:
                prof.log(profile)
        pages.update(deck_pages())
        handles.append(prof)
        return prof.view()

    @workflow
    def wf(rows: int, shards: int) -> DatasetProfileView:
        return merge(profiles=map_task(profile_shard)(shard=split(rows=rows, shards=shards)))

    merged = wf(rows=ROWS, shards=4)
    data = frame(ROWS)
    with whylogs_profile("whole", deck=False) as whole:
        whole.log(data)
    assert_merged_matches_whole(merged, whole.view(), data)

    (prof,) = handles
    assert (prof.rows, prof.chunks) == (ROWS, 4)
    assert prof.failed_constraints == ["country has no missing values"]
    constraints = pages["whylogs constraints: transactions"]
    assert "2 of 3 constraints passed" in constraints
    assert "<td>country has no missing values</td><td class='bad'>FAIL</td>" in constraints
    assert f"counts: n={ROWS}, null={ROWS // 10}" in constraints  # judged on all the shards' rows, not one shard's
    assert {d.column: d.category for d in prof.drift} == {
        "amount": "DRIFT",
        "country": "NO_DRIFT",
        "items": "NO_DRIFT",
        "user": "NO_DRIFT",
    }
    assert "whylogs drift: transactions" in pages
    assert "4,000 rows logged in 4 chunks" in pages["whylogs: transactions"]


@pytest.mark.parametrize("shards", [2, 7])
def test_merge_profiles_gives_the_profile_of_the_whole_frame(shards: int) -> None:
    data = frame(ROWS, seed=3)
    views = []
    for index in range(shards):
        with whylogs_profile(f"shard-{index}", deck=False) as prof:
            prof.log(data.iloc[index::shards])
        views.append(prof.view())
    with whylogs_profile("whole", deck=False) as whole:
        whole.log(data)
    assert_merged_matches_whole(merge_profiles(views), whole.view(), data)
    assert_merged_matches_whole(merge_profiles(iter(views)), whole.view(), data)  # any iterable


def test_merge_profiles_refuses_what_is_not_a_list_of_profiles() -> None:
    with whylogs_profile("one", deck=False) as prof:
        prof.log({"amount": 1.0})
    view = prof.view()
    with pytest.raises(TypeError, match=r"iterable of whylogs DatasetProfileView .*; got DatasetProfileView"):
        merge_profiles(view)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"profile 1 is DataFrame"):
        merge_profiles([view, frame(3)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"profile 1 is None .*merge_profiles\(p for p in profiles if p is not None\)"):
        merge_profiles([view, None])  # type: ignore[list-item]
    assert merge_profiles([]).get_columns() == {}


def test_logging_a_profile_needs_an_open_block_and_a_disabled_block_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with whylogs_profile("shard", deck=False) as shard:
        shard.log(frame(100))
    with whylogs_profile("all", deck=False) as prof:
        prof.log(shard.view())
        prof.log(shard.view())
        prof.log({"amount": 1.0, "country": "fr", "items": 2, "user": 7})
    assert (prof.rows, prof.chunks) == (201, 3)
    assert {c.column: c.count for c in prof.columns or []} == {"amount": 201, "country": 201, "items": 201, "user": 201}
    with pytest.raises(RuntimeError, match="'all' is closed: log inside its block"):
        prof.log(shard.view())
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "disabled")
    with whylogs_profile("off") as off:
        off.log(shard.view())
    assert (off.rows, off.view().get_columns()) == (0, {})


# ------------------------------------------------------------------------------ Spark
@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local Spark session for the module: one executor thread, no UI, two shuffle partitions."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        reason = "no Java runtime (java on PATH or JAVA_HOME): `apt-get install default-jre-headless`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the Spark tests: {reason}", pytrace=False)
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        # The executors' Python: this interpreter (whylogs and this library are installed there).
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        session = (
            SparkSession.builder.master("local[1]")
            .appName("flyte-ctx-tracking-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.driver.bindAddress", "127.0.0.1")
            # Each task in a fresh Python worker, as on a new executor: a worker that ran whylogs
            # before would hide what a fresh one does (the numpy-2 step is per process).
            .config("spark.python.worker.reuse", "false")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


def test_a_spark_dataframe_is_profiled_on_the_cluster_like_the_same_rows_in_pandas(spark: Any) -> None:
    data = frame(2_000, seed=5)
    spark_frame = spark.createDataFrame(data).repartition(3)  # three partitions: three partial profiles
    with whylogs_profile("events", constraints=[no_missing_values(column_name="country")], deck=False) as prof:
        prof.log(spark_frame)
    with whylogs_profile("whole", deck=False) as whole:
        whole.log(data)
    assert_merged_matches_whole(prof.view(), whole.view(), data)
    assert (prof.rows, prof.chunks, prof.unprofiled) == (2_000, 1, [])
    assert prof.failed_constraints == ["country has no missing values"]
    assert prof.path is not None
    assert DatasetProfileView.read(str(prof.path)).to_pandas().loc["amount", "counts/n"] == 2_000


def test_whylogs_own_spark_call_fails_on_numpy_2_where_the_session_works(spark: Any) -> None:
    # The reason the executors run the numpy-2 step first (skipped once whylogs fixes it).
    from whylogs.api.pyspark.experimental import collect_dataset_profile_view

    spark_frame = spark.createDataFrame(pd.DataFrame({"word": ["a", "b", None]}))
    try:
        collect_dataset_profile_view(spark_frame)
    except Exception as error:
        assert "np.unicode_" in str(error)
    else:
        pytest.skip("this whylogs works on numpy 2 in the executors by itself")
    with whylogs_profile("words", deck=False) as prof:
        prof.log(spark_frame)
    assert {c.column: (c.count, c.null_count) for c in prof.columns or []} == {"word": (3, 1)}


def test_a_flytekitplugins_spark_task_profiles_its_dataframe_and_returns_the_profile(spark: Any) -> None:
    import flytekit
    from flytekitplugins.spark import Spark

    pages: dict[str, str] = {}

    @task(task_config=Spark(spark_conf={"spark.master": "local[1]", "spark.ui.enabled": "false"}), enable_deck=True)
    def ingest(rows: int) -> DatasetProfileView:
        session = flytekit.current_context().spark_session
        events = session.range(rows).selectExpr("id", "id % 7 AS bucket", "IF(id % 4 = 0, NULL, 'fr') AS country")
        rules = [is_in_range(column_name="bucket", lower=0, upper=6)]
        with whylogs_profile("events", constraints=rules, fail_on_constraints=True, interactive=False) as prof:
            prof.log(events)
        pages.update(deck_pages())
        return prof.view()

    @task
    def nulls(profile: DatasetProfileView) -> int:
        return int(profile.to_pandas().loc["country", "counts/null"])

    @workflow
    def wf(rows: int) -> int:
        return nulls(profile=ingest(rows=rows))

    assert wf(rows=1_000) == 250
    assert "1 of 1 constraints passed" in pages["whylogs constraints: events"]
    assert "<td>bucket is in range [0,6]</td><td class='ok'>PASS</td>" in pages["whylogs constraints: events"]


def failing_frame(spark: Any) -> Any:
    """A DataFrame whose rows cannot be computed: a Python UDF that divides by zero in the executors."""
    from pyspark.sql.functions import col, udf

    return spark.range(10).withColumn("ratio", udf(lambda value: 1 / 0, "double")(col("id")))


def test_a_failed_spark_job_is_a_warning_and_fails_a_data_gate(spark: Any) -> None:
    with pytest.warns(TrackingWarning, match="could not profile the PySpark DataFrame on the cluster"):
        with whylogs_profile("broken", deck=False) as prof:
            prof.log({"id": 1})
            prof.log(failing_frame(spark))  # the task goes on
    assert (prof.rows, prof.chunks) == (1, 1)
    assert len(prof.unprofiled) == 1 and "ZeroDivisionError" in prof.unprofiled[0]

    rules = [greater_than_number(column_name="id", number=-1)]
    with pytest.raises(ConstraintsFailedError, match="could not be evaluated: could not profile the PySpark"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrackingWarning)
            with whylogs_profile("gate", constraints=rules, fail_on_constraints=True, deck=False) as gate:
                gate.log({"id": 1})
                gate.log(failing_frame(spark))
    assert gate.failed_constraints == []  # what was profiled passed; the data that was not fails the gate

    with pytest.raises(TrackingError, match="(?s)could not profile the PySpark DataFrame.*ZeroDivisionError"):
        with whylogs_profile("strict", on_error="raise", deck=False) as strict:
            strict.log(failing_frame(spark))


def test_spark_data_is_checked_before_any_job_and_a_disabled_block_runs_none(
    spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repeated = spark.range(3).selectExpr("id", "id")
    with whylogs_profile("dupes", deck=False) as prof:
        with pytest.raises(ValueError, match="column names must be unique; the DataFrame repeats 'id'"):
            prof.log(repeated)
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "disabled")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)  # no warning either: the failing job never ran
        with whylogs_profile("off") as off:
            off.log(failing_frame(spark))
    assert (off.rows, off.unprofiled) == (0, [])
