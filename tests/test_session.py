"""The session core's semantics, driven through a small in-test backend."""

from __future__ import annotations

import asyncio
import threading
import warnings
from pathlib import Path

import pytest
from flytekit import Secret, task

from flyte_ctx_tracking import NullRun, TrackingError, TrackingWarning, current_run

from .conftest import EXECUTION_NAME
from .fake_backend import FakeRun, FakeSession, fake_init

OFFLINE = {"mode": "offline"}


def test_a_decorated_function_calling_another_with_the_same_target_shares_the_run() -> None:
    @FakeSession("shared", **OFFLINE)
    def inner() -> FakeRun:
        return current_run("fake")  # type: ignore[no-any-return]

    @FakeSession("shared", **OFFLINE)
    def outer() -> tuple[FakeRun, FakeRun]:
        return current_run("fake"), inner()

    first, second = outer()
    assert first is second
    assert first.closed


def test_a_different_target_inside_opens_an_independent_run_and_is_innermost() -> None:
    with FakeSession("a", **OFFLINE) as a:
        with FakeSession("b", **OFFLINE) as b:
            assert a is not b
            assert current_run("fake") is b
        assert b.closed and not a.closed
        assert current_run("fake") is a
    assert a.closed


def test_reentering_after_exit_opens_a_fresh_handle() -> None:
    session = FakeSession(**OFFLINE)
    with session as first:
        pass
    with session as second:
        pass
    assert first is not second
    assert first.closed and second.closed


def test_threads_each_get_their_own_run_even_for_the_same_session_object() -> None:
    session = FakeSession(**OFFLINE)
    barrier = threading.Barrier(4)
    runs: list[FakeRun] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with session as run:
                barrier.wait(timeout=10)  # all four are inside at once
                assert current_run() is run
                runs.append(run)
        except BaseException as error:  # surfaced below
            errors.append(error)

    with session as main_run:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert current_run() is main_run
    assert not errors
    assert len({id(run) for run in runs}) == 4
    assert main_run not in runs
    assert all(run.closed for run in runs)


def test_an_exception_in_a_nested_block_closes_once_at_the_outermost_exit() -> None:
    session = FakeSession(**OFFLINE)
    with pytest.raises(ValueError), session as outer, session:
        raise ValueError("inner")
    assert outer.closed and outer.failed is True
    assert len(session.opened) == 1


def test_online_failure_falls_back_to_offline() -> None:
    session = FakeSession(fail_open=1, mode="online")
    with pytest.warns(TrackingWarning) as record, session as run:
        pass
    assert run is not None and run.mode == "offline"
    [message] = [str(w.message) for w in record]  # one warning says why, where, and how to upload
    assert "going online failed (ConnectionError: backend exploded)" in message
    assert "fake sync" in message


def test_close_failure_warns_and_never_hides_the_users_result_or_exception() -> None:
    with pytest.warns(TrackingWarning, match="could not close"):
        with FakeSession(fail_close=True, **OFFLINE):
            result = 42
    assert result == 42

    error = RuntimeError("user")
    with pytest.raises(RuntimeError) as caught:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with FakeSession(fail_close=True, on_error="raise", **OFFLINE):
                raise error
    assert caught.value is error

    with (
        pytest.raises(TrackingError, match="could not close"),
        FakeSession(fail_close=True, on_error="raise", **OFFLINE),
    ):
        pass


def test_mode_environment_variable_overrides_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "disabled")
    session = FakeSession(mode="online")
    with session as run:
        assert isinstance(run, NullRun) and not run
    assert session.opened == []

    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "offline")
    with FakeSession(mode="online") as run:
        assert run.mode == "offline"

    # A typo in the process-wide variable warns and leaves each session its own mode.
    monkeypatch.setenv("FLYTE_CTX_TRACKING_MODE", "sometimes")
    with pytest.warns(TrackingWarning, match="'sometimes' is not a mode.*'auto', 'online', 'offline', 'disabled'"):
        with FakeSession(mode="offline") as run:
            assert run.mode == "offline"


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [("mode", "cloud", "'auto', 'online'"), ("on_error", "ignore", "'warn', 'raise'")],
)
def test_bad_options_fail_at_construction_naming_the_value(option: str, value: str, accepted: str) -> None:
    with pytest.raises(ValueError, match=f"{option}='{value}'.*{accepted}"):
        FakeSession(**{option: value})  # type: ignore[arg-type]


def test_a_plain_string_secret_is_refused() -> None:
    with pytest.raises(TypeError, match="secret=str is not accepted"):
        FakeSession(secret="hunter2")  # type: ignore[arg-type]


def test_auto_without_a_key_goes_offline_with_one_warning_saying_where_and_how_to_sync(tmp_path: Path) -> None:
    with pytest.warns(TrackingWarning) as record, FakeSession(secret=Secret(group="fake", key="token")) as run:
        pass
    assert run.mode == "offline"
    assert len(record) == 1
    message = str(record[0].message)
    assert "no API key was found" in message
    assert "Secret(group='fake', key='token')" in message
    assert run.directory in message and "fake sync" in message


def test_auto_with_a_flyte_secret_goes_online_and_the_value_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    value = "sk-very-secret-4242"
    monkeypatch.setenv("_FSEC_FAKE_TOKEN", value)
    session = FakeSession(secret=Secret(group="fake", key="token"), error_text=f"bad key {value}", fail_open=2)
    assert value not in repr(session)
    with pytest.warns(TrackingWarning) as record, session as run:
        assert isinstance(run, NullRun) and not run  # both online and offline attempts failed
    assert all(value not in str(w.message) for w in record)
    assert any("***" in str(w.message) for w in record)

    with FakeSession(secret=Secret(group="fake", key="token")) as run:
        assert run.mode == "online" and run.api_key == value


def test_a_callable_secret_is_resolved_when_the_session_opens() -> None:
    calls = []

    def key() -> str:
        calls.append(1)
        return "abc"

    session = FakeSession(secret=key)
    assert calls == []
    with session as run:
        assert run.api_key == "abc" and run.mode == "online"


def test_local_data_goes_under_the_tracking_dir_and_an_explicit_directory_wins(
    tmp_path: Path, _isolated_tracking: Path
) -> None:
    with FakeSession(**OFFLINE) as run:
        assert Path(run.directory) == _isolated_tracking / "fake"
    with FakeSession(directory=tmp_path / "mine", **OFFLINE) as run:
        assert Path(run.directory) == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()


def test_only_rank_zero_tracks_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    ran = False
    with FakeSession(**OFFLINE) as run:
        ran = True
        assert run is None
    assert ran
    monkeypatch.setenv("RANK", "0")
    with FakeSession(**OFFLINE) as run:
        assert run is not None


def test_every_rank_opt_in_gives_distinct_run_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_INTERNAL_EXECUTION_ID", EXECUTION_NAME)
    monkeypatch.setenv("HOSTNAME", f"{EXECUTION_NAME}-n0-0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ids = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        with FakeSession(all_ranks=True, **OFFLINE) as run:
            ids.append(run.run_id)
    assert ids == [f"{EXECUTION_NAME}-n0-0-rank0", f"{EXECUTION_NAME}-n0-0-rank1"]


def test_a_missing_backend_names_the_extra_to_install() -> None:
    class Missing(FakeSession):
        backend_module = "no_such_backend_for_flyte_ctx_tracking"
        extra = "nothing"

    with (
        pytest.raises(
            ImportError, match=r"pip install -e '\.\[nothing\]' in a checkout, or 'flyte-ctx-tracking\[nothing\]'"
        ),
        Missing(**OFFLINE),
    ):
        pass


def test_decorator_adapter_with_and_without_arguments_on_plain_functions() -> None:
    @fake_init
    def bare() -> FakeRun:
        return current_run()  # type: ignore[no-any-return]

    @fake_init(target="x", mode="offline")
    def configured(value: int) -> tuple[int, FakeRun]:
        return value, current_run()

    assert isinstance(bare(), FakeRun)
    value, run = configured(3)
    assert value == 3 and run.closed
    assert configured.get_extra_config() == {"target": "x", "link_type": "fake-execution-id"}
    assert configured.__name__ == "configured"


def test_decorator_adapter_validates_at_decoration_time() -> None:
    with pytest.raises(ValueError, match="mode='sideways'"):
        fake_init(mode="sideways")


def test_every_public_name_resolves_and_is_documented() -> None:
    import flyte_ctx_tracking

    required = {
        "wandb_session", "comet_session", "neptune_session", "memray_profile", "whylogs_profile",
        "wandb_init", "comet_ml_login", "neptune_init_run", "memray_profiling", "current_run",
        "WhylogsDatasetProfileTransformer", "WhylogsConstraintsRenderer", "WhylogsSummaryDriftRenderer",
    }  # fmt: skip
    assert required <= set(flyte_ctx_tracking.__all__)
    for name in flyte_ctx_tracking.__all__:
        value = getattr(flyte_ctx_tracking, name)
        assert value.__doc__, name


def test_profilers_log_to_the_innermost_active_tracker() -> None:
    from flyte_ctx_tracking._session import log_to_active_trackers

    assert log_to_active_trackers({"x": 1}) == []
    with FakeSession("a", **OFFLINE) as outer, FakeSession("b", **OFFLINE) as inner:
        assert log_to_active_trackers({"memray/join/peak_memory": 123}) == ["fake"]
    assert inner.log == [{"memray/join/peak_memory": 123}]
    assert outer.log == []


def test_a_deck_failure_never_replaces_the_users_exception_even_with_on_error_raise() -> None:
    class BrokenDeck(FakeSession):
        def _deck(self, handle: FakeRun, plan: object, error: BaseException | None) -> tuple[str, str]:
            raise OSError("deck exploded")

    error = KeyError("user")

    @task(enable_deck=True)
    def failing() -> None:
        with BrokenDeck(on_error="raise", **OFFLINE):
            raise error

    with pytest.raises(KeyError) as caught:
        failing()
    assert "user" in str(caught.value)

    @task(enable_deck=True)
    def succeeding() -> None:
        with BrokenDeck(on_error="raise", **OFFLINE):
            pass

    with pytest.raises(TrackingError, match="could not write the Fake tracker deck"):
        succeeding()


def test_warnings_turned_into_errors_leave_no_run_open_and_no_session_active() -> None:
    session = FakeSession()  # auto without a key: the offline warning fires right after opening
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        with pytest.raises(TrackingWarning), session:
            pass
    assert len(session.opened) == 1 and session.opened[0].closed
    assert current_run() is None


def test_an_unwritable_tracking_dir_leaves_the_block_running_untracked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FLYTE_CTX_TRACKING_DIR", str(blocker))
    ran = False
    with pytest.warns(TrackingWarning, match="could not create its data directory"), FakeSession(**OFFLINE) as run:
        ran = True
        assert isinstance(run, NullRun) and not run
    assert ran


def test_a_secret_inside_a_chained_backend_error_is_scrubbed_from_the_whole_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import traceback

    value = "sk-chained-secret-777"
    monkeypatch.setenv("_FSEC_FAKE_TOKEN", value)

    class Chained(FakeSession):
        def _open(self, plan: object) -> FakeRun:
            try:
                raise ValueError(f"rejected key {value}")
            except ValueError as inner:
                raise ConnectionError("login failed") from inner

    session = Chained(secret=Secret(group="fake", key="token"), on_error="raise", mode="online")
    with pytest.raises(TrackingError) as caught, session:
        pass
    printed = "".join(traceback.format_exception(caught.value))
    assert "login failed" in printed and "rejected key ***" in printed
    assert value not in printed


def test_a_backend_that_cannot_open_at_all_warns_once_without_an_offline_retry() -> None:
    from flyte_ctx_tracking._session import SessionUnavailable

    class Busy(FakeSession):
        def _open(self, plan: object) -> FakeRun:
            raise SessionUnavailable("another run holds the only slot")

    with pytest.warns(TrackingWarning) as record, Busy(mode="online") as run:
        assert isinstance(run, NullRun) and not run
    assert len(record) == 1
    assert "another run holds the only slot" in str(record[0].message)


def test_an_unreadable_saved_login_counts_as_no_login() -> None:
    class BrokenLogin(FakeSession):
        def _ambient_credentials(self) -> bool:
            raise ValueError("malformed config file")

    with pytest.warns(TrackingWarning, match="no API key was found"), BrokenLogin() as run:
        assert run.mode == "offline"


async def test_an_asyncio_task_that_outlives_the_block_keeps_the_run_open_until_it_ends() -> None:
    session = FakeSession(**OFFLINE)
    release = asyncio.Event()
    seen: list[FakeRun] = []

    async def background() -> None:
        async with session as run:  # inherits the block's run (contextvars), and holds it
            await release.wait()
            seen.append(run)
            assert not run.closed

    async with session as parent:
        child = asyncio.create_task(background())
        await asyncio.sleep(0.01)
    assert not parent.closed  # the child still logs into it
    release.set()
    await child
    assert seen == [parent] and parent.closed and parent.failed is False


def test_a_block_exited_in_another_thread_still_closes_its_run() -> None:
    session = FakeSession(**OFFLINE)

    def holder():  # type: ignore[no-untyped-def]
        with session as run:
            yield run

    generator = holder()
    run = next(generator)
    closer = threading.Thread(target=generator.close)
    closer.start()
    closer.join()
    assert run.closed
    assert current_run() is None  # the stale frame in this thread no longer counts


@pytest.mark.parametrize("ending", [GeneratorExit(), SystemExit(0), SystemExit(None)])
def test_leaving_a_generator_early_or_exiting_with_zero_is_not_a_failure(ending: BaseException) -> None:
    with pytest.raises(type(ending)), FakeSession(**OFFLINE) as run:
        raise ending
    assert run.closed and run.failed is False


def test_sys_exit_with_an_error_code_is_a_failure() -> None:
    with pytest.raises(SystemExit), FakeSession(**OFFLINE) as run:
        raise SystemExit(3)
    assert run.failed is True
