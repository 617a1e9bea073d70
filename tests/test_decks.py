"""Decks: added inside tasks with decks on, harmless everywhere else."""

from __future__ import annotations

from flytekit import task
from flytekit.core.context_manager import FlyteContextManager

from flyte_ctx_tracking import add_deck

from .conftest import PodRunner

DECK_TASK = """
from flytekit import task
from tests.fake_backend import FakeSession

@task(enable_deck=True)
def tracked() -> int:
    with FakeSession(mode="offline"):
        return 1
"""


def test_outside_a_task_add_deck_does_nothing() -> None:
    assert add_deck("Nothing", "<p>x</p>") is False


def test_inside_a_task_with_decks_on_the_deck_is_added() -> None:
    titles: list[str] = []

    @task(enable_deck=True)
    def with_decks() -> bool:
        added = add_deck("Mine", "<p>hello</p>")
        titles.extend(deck.name for deck in FlyteContextManager.current_context().user_space_params.decks)
        return added

    @task
    def without_decks() -> bool:
        return add_deck("Mine", "<p>hello</p>")

    assert with_decks() is True
    assert "Mine" in titles
    assert without_decks() is False


def test_a_tracking_session_shows_its_run_in_the_pod_deck(pod_run: PodRunner) -> None:
    result = pod_run(DECK_TASK, "tracked")
    assert result.returncode == 0, result.output
    html = result.deck_html
    assert html is not None
    assert "Fake tracker run (finished)" in html
    assert "fake sync" in html


def test_decks_with_the_same_title_are_numbered_instead_of_replaced() -> None:
    titles: list[str] = []

    @task(enable_deck=True)
    def two_runs() -> None:
        add_deck("Weights & Biases", "<p>outer</p>")
        add_deck("Weights & Biases", "<p>inner</p>")
        titles.extend(deck.name for deck in FlyteContextManager.current_context().user_space_params.decks)

    two_runs()
    assert "Weights & Biases" in titles and "Weights & Biases #2" in titles


def test_tracker_decks_are_titled_after_their_runs_so_several_runs_in_a_task_are_told_apart() -> None:
    from flyte_ctx_tracking import wandb_session

    @task(enable_deck=True)
    def two_runs() -> list[str]:
        with wandb_session(project="titles", name="train", mode="offline"):
            with wandb_session(project="titles", name="evaluate", mode="offline"):
                pass
        params = FlyteContextManager.current_context().user_space_params
        return [deck.name for deck in params.decks if deck.name.startswith("Weights & Biases")]

    assert sorted(two_runs()) == ["Weights & Biases: evaluate", "Weights & Biases: train"]
