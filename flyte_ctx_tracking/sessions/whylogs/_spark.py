"""PySpark DataFrames profiled on the cluster with whylogs' own Spark functions.

Private: ``prof.log(spark_df)`` comes here. whylogs' Spark API (``whylogs.api.pyspark.experimental``)
profiles each partition's Arrow batches in the executors (``mapInPandas`` with its
``whylogs_pandas_map_profiler``), merges each column's partial profiles in a grouped aggregation on
the executors (its ``column_profile_bytes_aggregator``), and collects one serialized profile per
column on the driver. Its ``collect_dataset_profile_view`` chains exactly these steps, but cannot be
called as it is on numpy 2: the executors are fresh Python processes that never ran the numpy-2 step
(see ``_compat``), so whylogs fails there with ``np.unicode_ was removed``. The one difference here
is the function the executors run: the step, then whylogs' own profiler.

That function is pickled by reference, so the executors import this module: they need
flyte-ctx-tracking and whylogs installed (in a Flyte Spark task they run the task's image).
Importing this module imports neither pyspark nor whylogs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._compat import import_whylogs

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView

__all__ = ["failure_summary", "is_spark_dataframe", "profile_spark_dataframe"]

# The DataFrame classes of classic PySpark and of Spark Connect (pyspark < 4 keeps them apart).
_DATAFRAME_CLASSES = (("pyspark.sql", "DataFrame"), ("pyspark.sql.connect.dataframe", "DataFrame"))
# The line of a Python traceback that names the exception: ``ZeroDivisionError: division by zero``.
_RAISED_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def is_spark_dataframe(value: object) -> bool:
    """True for a PySpark DataFrame; never imports pyspark (none exists unless it was imported)."""
    for module_name, class_name in _DATAFRAME_CLASSES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None)
        if isinstance(cls, type) and isinstance(value, cls):
            return True
    return False


def failure_summary(error: BaseException) -> str:
    """``Type: what went wrong`` in one line. A failed Spark job's message is the executor's whole
    Python traceback (and often the JVM's): its first line only says that the worker raised, so the
    line naming the executor's exception is taken when there is one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED_LINE.match(line)]
    detail = raised[-1] if raised else (lines[0] if lines else "")
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _profile_partition(batches: Iterable[Any]) -> Iterator[Any]:
    """Runs in the executors, on one partition's pandas batches: whylogs' own profiler, after the
    numpy-2 step (an executor's Python never ran it)."""
    import_whylogs()
    from whylogs.api.pyspark.experimental import whylogs_pandas_map_profiler

    yield from whylogs_pandas_map_profiler(batches)


def _without_vectors(frame: Any) -> Any:
    """``frame`` with Spark ML vector columns as arrays: Arrow, which ``mapInPandas`` goes through,
    has no vector type (whylogs' own Spark call converts them the same way)."""
    from pyspark.sql.types import UserDefinedType

    vectors = [field.name for field in frame.schema.fields if isinstance(field.dataType, UserDefinedType)]
    if not vectors:
        return frame
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    for field in frame.schema.fields:
        if isinstance(field.dataType, VectorUDT):
            frame = frame.withColumn(field.name, vector_to_array(frame[field.name]))
    return frame


def profile_spark_dataframe(frame: Any) -> DatasetProfileView:
    """The whylogs profile of a PySpark DataFrame, computed in the executors.

    Each executor profiles its partitions and merges the partial profiles of each column; the driver
    receives one serialized profile per column, never rows.
    """
    import_whylogs()
    from whylogs.api.pyspark.experimental import column_profile_bytes_aggregator
    from whylogs.api.pyspark.experimental.profiler import COL_NAME_FIELD, COL_PROFILE_FIELD
    from whylogs.core import DatasetProfileView
    from whylogs.core.view.column_profile_view import ColumnProfileView

    profiles_schema = f"{COL_NAME_FIELD} string, {COL_PROFILE_FIELD} binary"
    per_batch = _without_vectors(frame).mapInPandas(_profile_partition, schema=profiles_schema)
    per_column = per_batch.groupby(COL_NAME_FIELD).applyInPandas(
        column_profile_bytes_aggregator, schema=profiles_schema
    )
    columns = {
        row[COL_NAME_FIELD]: ColumnProfileView.from_bytes(row[COL_PROFILE_FIELD]) for row in per_column.collect()
    }
    now = datetime.now(timezone.utc)
    return DatasetProfileView(columns=columns, dataset_timestamp=now, creation_timestamp=now)
