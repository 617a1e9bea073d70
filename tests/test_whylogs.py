"""whylogs_profile, the profile type transformer and the renderers: real whylogs on numpy 2.

No mocks: whylogs profiles the data, flytekit runs the tasks (locally and through
``pyflyte-execute``), and every assertion reads back what a user would look at: the profile's
counts, the decks' HTML, the saved profile file, the Blob a task wrote, the tracker's history.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flytekit import task, workflow
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine

from flyte_ctx_tracking import (
    WhylogsConstraintsRenderer,
    WhylogsDatasetProfileTransformer,
    WhylogsSummaryDriftRenderer,
    current_run,
    tracking_root,
    whylogs_profile,
)
from flyte_ctx_tracking.sessions.whylogs import ConstraintsFailedError, WhylogsProfile
from flyte_ctx_tracking.sessions.whylogs._compat import ensure_numpy2_compat, import_whylogs

from .conftest import REPO, PodRunner
from .fake_backend import FakeSession

import_whylogs()

from whylogs.core import DatasetProfileView  # noqa: E402
from whylogs.core.constraints import ConstraintsBuilder  # noqa: E402
from whylogs.core.constraints.factories import (  # noqa: E402
    greater_than_number,
    is_in_range,
    no_missing_values,
)

PYTHON = sys.executable


def frame(rows: int, *, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(100.0, 10.0, rows)
    country = rng.choice(["fr", "de", "it"], rows).astype(object)
    country[::10] = None  # every tenth row has no country
    return pd.DataFrame({"amount": amount, "country": country, "items": rng.integers(1, 5, rows)})


def counts(view: DatasetProfileView) -> dict[str, tuple[int, int]]:
    table = view.to_pandas()
    return {str(c): (int(table.loc[c, "counts/n"]), int(table.loc[c, "counts/null"])) for c in table.index}


def deck_pages() -> dict[str, str]:
    """The decks of the running task, by title."""
    return {deck.name: deck.html for deck in FlyteContextManager.current_context().user_space_params.decks}


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "WHYLOGS_NO_ANALYTICS": "1", **env},
    )


# ------------------------------------------------------------------------------ numpy 2
def test_the_environment_runs_numpy_2_and_pandas_2_or_later() -> None:
    assert int(np.__version__.split(".")[0]) >= 2
    assert int(pd.__version__.split(".")[0]) >= 2


def test_plain_whylogs_fails_on_numpy_2_without_the_compatibility_step() -> None:
    # The problem the step solves, shown on the installed whylogs (skipped once whylogs fixes it).
    done = run_python("import pandas as pd, whylogs as why; why.log(pd.DataFrame({'a': ['x', 'y']}))")
    if done.returncode == 0:
        pytest.skip("this whylogs works on numpy 2 by itself")
    assert "np.unicode_" in done.stderr


def test_the_compatibility_step_restores_only_numpys_own_alias() -> None:
    import_whylogs()
    assert np.unicode_ is np.str_  # type: ignore[attr-defined]
    assert ensure_numpy2_compat() == []  # idempotent: nothing more to add


def test_whylogs_imported_by_user_code_in_a_flytekit_process_works_and_knows_the_profile_type() -> None:
    # flytekit loads our entry point; the user imports whylogs; the step and the registration follow.
    code = (
        "import flytekit, sys\n"
        "assert 'whylogs' not in sys.modules\n"
        "import numpy as np, pandas as pd, whylogs as why\n"
        "from whylogs.core import DatasetProfileView\n"
        "from flytekit.core.type_engine import TypeEngine\n"
        "view = why.log(pd.DataFrame({'s': ['a', None], 'x': [1.5, 2.5]})).view()\n"
        "print(view.to_pandas().loc['s', 'counts/null'], type(TypeEngine.get_transformer(DatasetProfileView)).__name__)"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "WhylogsDatasetProfileTransformer"]


def test_without_whylogs_flytekit_still_imports_and_a_profile_asks_for_the_extra() -> None:
    code = (
        "import sys, warnings\n"
        "sys.modules['whylogs'] = None  # as if whylogs were not installed\n"
        "warnings.simplefilter('error')\n"
        "import flytekit\n"
        "from flyte_ctx_tracking import whylogs_profile\n"
        "try:\n"
        "    with whylogs_profile('x'):\n"
        "        pass\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "pip install -e '.[whylogs]'" in done.stdout and "'flyte-ctx-tracking[whylogs]'" in done.stdout


# ------------------------------------------------------------------------------ profiling
def test_streaming_chunks_gives_the_counts_of_the_whole_frame() -> None:
    data = frame(5_000)
    with whylogs_profile("tx") as prof:
        assert isinstance(prof, WhylogsProfile)
        assert current_run("whylogs") is prof
        for start in range(0, len(data), 1_000):
            prof.log(data.iloc[start : start + 1_000])
        prof.log({"amount": 1.0, "country": "fr", "items": 2})  # and a single row
    assert current_run("whylogs") is None
    assert (prof.rows, prof.chunks) == (5_001, 6)

    whole = DatasetProfileView.deserialize(prof.view().serialize())
    assert counts(whole) == {"amount": (5_001, 0), "country": (5_001, 500), "items": (5_001, 0)}
    summary = {c.column: c for c in prof.columns or []}
    assert summary["amount"].min == pytest.approx(min(data["amount"].min(), 1.0))
    assert summary["amount"].max == pytest.approx(data["amount"].max())
    assert summary["amount"].mean == pytest.approx((data["amount"].sum() + 1.0) / 5_001)
    assert summary["country"].type == "string" and summary["country"].mean is None
    assert summary["items"].type == "integral"


def test_the_profile_is_saved_under_the_tracking_directory() -> None:
    with whylogs_profile("saved") as prof:
        prof.log(frame(100))
    assert prof.path is not None and prof.path.parent == tracking_root() / "whylogs"
    assert counts(DatasetProfileView.read(str(prof.path)))["amount"] == (100, 0)


def test_bad_data_is_a_type_error_naming_what_is_accepted() -> None:
    with whylogs_profile("tx") as prof:
        for bad in ([1, 2, 3], "a,b", pd.Series([1.0]), 3):
            accepted = r"a pandas DataFrame, a dict row .*, a whylogs DatasetProfileView .* or a PySpark DataFrame"
            with pytest.raises(TypeError, match=accepted):
                prof.log(bad)
    with pytest.raises(RuntimeError, match="closed"):
        prof.log({"a": 1})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, ValueError, "name=.. is not accepted; pass a non-empty string"),
        ({"name": 3}, TypeError, "name=3 is not accepted; pass a str or None"),
        ({"reference": [1, 2]}, TypeError, "reference must be a pandas DataFrame, a whylogs DatasetProfileView"),
        ({"constraints": "amount > 0"}, TypeError, "constraints must be a callable"),
        ({"constraints": [greater_than_number(column_name="a", number=0), "x"]}, TypeError, "the list holds str"),
        ({"fail_on_constraints": True}, ValueError, "fail_on_constraints=True needs constraints"),
        ({"deck": "yes"}, TypeError, "deck=.yes. is not accepted; pass True or False"),
        ({"mode": "sometimes"}, ValueError, "mode='sometimes'"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        whylogs_profile(**kwargs)


def test_an_exception_in_the_block_keeps_the_profile_writes_the_decks_and_propagates_unchanged() -> None:
    boom = KeyError("bad chunk")
    seen: dict[str, Any] = {}

    @task(enable_deck=True)
    def ingest() -> int:
        rules = [no_missing_values(column_name="country")]
        try:
            with whylogs_profile("tx", constraints=rules, fail_on_constraints=True, interactive=False) as prof:
                prof.log(frame(300))
                raise boom
        except KeyError as error:
            seen["error"] = error
            seen["traceback_frames"] = len(list(_frames(error.__traceback__)))
        seen["decks"] = deck_pages()
        seen["prof"] = prof
        return 0

    ingest()
    assert seen["error"] is boom  # not a ConstraintsFailedError: the user's own exception wins
    assert seen["traceback_frames"] >= 1
    prof = seen["prof"]
    assert counts(prof.view())["amount"] == (300, 0)  # what was logged before the failure
    assert prof.failed_constraints == ["country has no missing values"]
    summary = seen["decks"]["whylogs: tx"]
    assert "raised KeyError" in summary and "300 rows logged" in summary
    assert "FAIL" in seen["decks"]["whylogs constraints: tx"]


def _frames(tb: Any) -> Any:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_as_a_decorator_each_call_is_a_profile_named_after_the_function() -> None:
    @whylogs_profile()
    def load() -> WhylogsProfile:
        prof = current_run("whylogs")
        prof.log(frame(10))
        return prof

    first, second = load(), load()
    assert first is not second and first.name == "load"
    assert first.path is not None and first.path.name.startswith("load.")


def test_disabled_mode_keeps_user_code_running_without_profiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "disabled")
    with whylogs_profile("off") as prof:
        prof.log(frame(10))
        with pytest.raises(TypeError):
            prof.log([1])
    assert not prof.active and prof.rows == 0
    assert prof.view().get_columns() == {}
    assert not (tracking_root() / "whylogs").exists()


# ------------------------------------------------------------------------------ drift and constraints
def test_the_drift_deck_shows_the_shifted_column_as_drifted() -> None:
    pages: dict[str, str] = {}
    reference = frame(2_000)
    # Same data, amounts 30 higher (3 standard deviations), one column gone and one new.
    target = reference.assign(amount=reference["amount"] + 30.0, extra=1).drop(columns=["items"])

    @task(enable_deck=True)
    def ingest() -> int:
        with whylogs_profile("tx", reference=reference) as prof:
            prof.log(target)
        pages.update(deck_pages())
        return len(prof.drift or [])

    assert ingest() == 2
    drift = pages["whylogs drift: tx"]
    assert "1 of 2 columns drifted: amount" in drift
    assert "Missing from what was logged: items" in drift
    assert "New, not in the reference: extra" in drift
    assert "<td>country</td><td class='ok'>no drift</td>" in drift
    assert "<td>amount</td><td class='bad'>drift</td>" in drift
    summary = pages["whylogs: tx"]
    assert "whylogs profile: tx" in summary
    assert all(f"<td>{column}</td>" in summary for column in ("amount", "country", "extra"))


def test_a_reference_profile_view_works_like_a_reference_frame() -> None:
    data = frame(1_000)
    with whylogs_profile("ref") as ref:
        ref.log(data)
    with whylogs_profile("tx", reference=ref.view()) as prof:
        prof.log(data.assign(amount=data["amount"] * 2))
    assert {d.column: d.category for d in prof.drift or []} == {
        "amount": "DRIFT",
        "country": "NO_DRIFT",
        "items": "NO_DRIFT",
    }


def test_the_constraints_deck_shows_each_constraint_passing_or_failing() -> None:
    pages: dict[str, str] = {}
    rules = [
        greater_than_number(column_name="amount", number=0),
        no_missing_values(column_name="country"),
        is_in_range(column_name="items", lower=1, upper=4),
        no_missing_values(column_name="never_logged"),
    ]

    @task(enable_deck=True)
    def ingest() -> int:
        with whylogs_profile("tx", constraints=rules, interactive=False) as prof:
            prof.log(frame(500))
        pages.update(deck_pages())
        return len(prof.failed_constraints)

    assert ingest() == 2
    html = pages["whylogs constraints: tx"]
    assert "2 of 4 constraints passed" in html
    for name, verdict in [
        ("amount greater than number 0", "PASS"),
        ("items is in range [1,4]", "PASS"),
        ("country has no missing values", "FAIL"),
        ("never_logged has no missing values", "FAIL"),
    ]:
        assert f"<td>{name}</td><td class='{'ok' if verdict == 'PASS' else 'bad'}'>{verdict}</td>" in html
    assert "column &#x27;never_logged&#x27; was not logged" in html


def test_fail_on_constraints_raises_after_the_decks_listing_the_failed_constraints() -> None:
    seen: dict[str, Any] = {}

    def rules(view: DatasetProfileView) -> Any:
        builder = ConstraintsBuilder(view)
        builder.add_constraint(greater_than_number(column_name="amount", number=0))
        builder.add_constraint(no_missing_values(column_name="country"))
        builder.add_constraint(is_in_range(column_name="items", lower=10, upper=20))
        return builder.build()

    @task(enable_deck=True)
    def ingest() -> int:
        try:
            with whylogs_profile("tx", constraints=rules, fail_on_constraints=True, interactive=False) as prof:
                prof.log(frame(200))
        except ConstraintsFailedError as error:
            seen["error"] = error
            seen["decks"] = deck_pages()  # already written when the error is raised
        return 0

    ingest()
    error = seen["error"]
    assert str(error) == (
        "whylogs profile 'tx': 2 of 3 constraints failed: country has no missing values; items is in range [10,20]"
    )
    assert error.failed == ["country has no missing values", "items is in range [10,20]"]
    assert "1 of 3 constraints passed" in seen["decks"]["whylogs constraints: tx"]


def test_passing_constraints_with_fail_on_constraints_let_the_block_finish() -> None:
    with whylogs_profile(
        "tx", constraints=[greater_than_number(column_name="amount", number=0)], fail_on_constraints=True
    ) as prof:
        prof.log(frame(100))
    assert prof.constraints is not None and [c.passed for c in prof.constraints] == [True]


def test_a_constraints_callable_that_breaks_fails_the_block_when_failing_is_asked() -> None:
    def broken(view: DatasetProfileView) -> Any:
        return "not constraints"

    with pytest.raises(ConstraintsFailedError, match="could not be evaluated: TypeError"):
        with whylogs_profile("tx", constraints=broken, fail_on_constraints=True) as prof:
            prof.log(frame(10))
    with pytest.warns(UserWarning, match="must return whylogs Constraints"):
        with whylogs_profile("tx", constraints=broken) as prof:
            prof.log(frame(10))


def test_the_renderers_report_drift_and_constraints() -> None:
    reference = frame(1_000)
    target = reference.assign(amount=reference["amount"] + 30.0)
    drift = WhylogsSummaryDriftRenderer.to_html(reference, target)
    assert "<td>amount</td><td class='bad'>drift</td>" in drift
    assert "<td>items</td><td class='ok'>no drift</td>" in drift
    assert "<iframe" in drift  # whylogs' own interactive report, folded below the table

    builder = ConstraintsBuilder(DatasetProfileView.deserialize(_view(target).serialize()))
    builder.add_constraint(greater_than_number(column_name="amount", number=0))
    builder.add_constraint(no_missing_values(column_name="country"))
    report = WhylogsConstraintsRenderer.to_html(builder.build(), interactive=False)
    assert "<td>amount greater than number 0</td><td class='ok'>PASS</td>" in report
    assert "<td>country has no missing values</td><td class='bad'>FAIL</td>" in report
    assert "<iframe" not in report

    with pytest.raises(TypeError, match="accepts whylogs Constraints"):
        WhylogsConstraintsRenderer.to_html("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reference_data must be a pandas DataFrame"):
        WhylogsSummaryDriftRenderer.to_html([1], target)


def _view(data: pd.DataFrame) -> DatasetProfileView:
    with whylogs_profile("helper", deck=False) as prof:
        prof.log(data)
    return prof.view()


# ------------------------------------------------------------------------------ trackers
def test_the_column_summary_goes_to_the_active_tracker_unless_opted_out() -> None:
    with FakeSession(mode="offline") as run:
        with whylogs_profile("tx") as prof:
            prof.log(pd.DataFrame({"amount": [1.0, 3.0, None], "country": ["fr", None, "de"]}))
        with whylogs_profile("quiet", log_to_trackers=False) as quiet:
            quiet.log({"a": 1})
    (logged,) = run.log
    assert logged["whylogs/tx/amount/count"] == 3
    assert logged["whylogs/tx/amount/null_count"] == 1
    assert logged["whylogs/tx/amount/mean"] == pytest.approx(2.0)
    assert (logged["whylogs/tx/amount/min"], logged["whylogs/tx/amount/max"]) == (1.0, 3.0)
    assert logged["whylogs/tx/country/null_count"] == 1
    assert "whylogs/tx/country/mean" not in logged  # strings have no mean


def test_the_column_summary_lands_in_a_real_wandb_run() -> None:
    from flyte_ctx_tracking import wandb_session

    from .wandb_records import find_runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with wandb_session(project="data", mode="offline"):
            with whylogs_profile("tx") as prof:
                prof.log(pd.DataFrame({"amount": [1.0, 3.0]}))
    (recorded,) = find_runs(tracking_root())
    (row,) = [{k: v for k, v in r.items() if k.startswith("whylogs/")} for r in recorded.history]
    assert row == {
        "whylogs/tx/amount/count": 2,
        "whylogs/tx/amount/null_count": 0,
        "whylogs/tx/amount/mean": 2.0,
        "whylogs/tx/amount/min": 1.0,
        "whylogs/tx/amount/max": 3.0,
    }
    assert prof.closed


# ------------------------------------------------------------------------------ the Flyte type
def test_the_transformer_is_registered_for_dataset_profile_view() -> None:
    transformer = TypeEngine.get_transformer(DatasetProfileView)
    assert isinstance(transformer, WhylogsDatasetProfileTransformer)
    literal_type = TypeEngine.to_literal_type(DatasetProfileView)
    assert (literal_type.blob.format, literal_type.blob.dimensionality) == ("binary", 0)  # 0: SINGLE
    html = transformer.to_html(FlyteContextManager.current_context(), _view(frame(10)), DatasetProfileView)
    assert "<td>amount</td>" in html and "<iframe" in html


def test_a_profile_travels_between_tasks_of_a_local_workflow() -> None:
    @task
    def ingest(rows: int) -> DatasetProfileView:
        with whylogs_profile("tx", deck=False) as prof:
            data = frame(rows)
            for start in range(0, rows, 100):
                prof.log(data.iloc[start : start + 100])
        return prof.view()

    @task
    def check(profile: DatasetProfileView) -> str:
        (n, nulls) = counts(profile)["country"]
        return f"{n} {nulls}"

    @workflow
    def wf(rows: int) -> str:
        return check(profile=ingest(rows=rows))

    assert wf(rows=1_000) == "1000 100"


POD_TASK = """
from flytekit import task
from whylogs.core import DatasetProfileView
from flyte_ctx_tracking import whylogs_profile

@task(enable_deck=True)
def extend(base: DatasetProfileView) -> DatasetProfileView:
    with whylogs_profile("tx", reference=base) as prof:
        for value in range(50):
            prof.log({"amount": float(value), "country": "fr"})
    return prof.view().merge(base)
"""


def test_a_profile_goes_in_and_out_of_a_pod_run(pod_run: PodRunner) -> None:
    base = _view(frame(200))
    result = pod_run(POD_TASK, "extend", inputs={"base": base})
    assert result.returncode == 0, result.output

    blob = result.outputs["o0"].scalar.blob
    assert blob.metadata.type.format == "binary"
    view = DatasetProfileView.deserialize(Path(blob.uri).read_bytes())
    assert counts(view)["amount"] == (250, 0)
    assert counts(view)["country"] == (250, 20)

    deck = result.deck_html or ""
    assert "whylogs profile: tx" in deck and "50 rows logged in 50 chunks" in deck
    assert "whylogs drift: tx" in deck
    saved = list((result.workdir / "tracking" / "whylogs").glob("tx.*.bin"))
    assert len(saved) == 1 and saved[0].name.startswith("tx.ab3kq9x2m4n5p6r7s8t1-n0-0.")  # the pod's name


FAILING_POD_TASK = """
from flytekit import task
from whylogs.core.constraints.factories import no_missing_values
from flyte_ctx_tracking import whylogs_profile

@task(enable_deck=True)
def ingest() -> int:
    rules = [no_missing_values(column_name="country")]
    with whylogs_profile("tx", constraints=rules, fail_on_constraints=True, interactive=False) as prof:
        prof.log({"country": None})
    return 1
"""


def test_failing_constraints_fail_a_pod_task_with_their_names(pod_run: PodRunner) -> None:
    result = pod_run(FAILING_POD_TASK, "ingest")
    assert result.outputs == {}
    assert "ConstraintsFailedError: whylogs profile 'tx': 1 of 1 constraints failed: country has no missing values" in (
        result.error or ""
    )
    deck = result.deck_html or ""  # written before the task failed
    assert (
        "whylogs constraints: tx" in deck and "<td>country has no missing values</td><td class='bad'>FAIL</td>" in deck
    )


def test_the_interactive_report_is_inert_until_asked_for_and_says_it_needs_the_network() -> None:
    import re

    reference = frame(200)
    drift = WhylogsSummaryDriftRenderer.to_html(reference, reference.assign(amount=reference["amount"] + 1.0))
    assert "needs internet access" in drift and "<template>" in drift
    outside = re.sub(r"(?s)<template>.*?</template>", "", drift)
    # Nothing outside the inert template names a resource a browser would fetch when the page opens.
    assert not re.findall(r"""(?i)(?:src|href)\s*=\s*["']?https?://""", outside)
    assert "<iframe" not in outside
