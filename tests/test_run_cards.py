"""Tracker run cards show the run: its logged series as inline charts, its config, tags and status."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from flytekit import task
from flytekit.core.context_manager import FlyteContextManager

from flyte_ctx_tracking import comet_session, mlflow_session, neptune_session, wandb_session
from flyte_ctx_tracking._types import RunInfo
from flyte_ctx_tracking.decks.run_card import downsample, run_card_html


def _wandb(steps: int, fail: bool) -> None:
    with wandb_session(project="cards", mode="offline", config={"lr": 0.01, "optimizer": "adam"}, tags=["demo"]) as run:
        for step in range(steps):
            run.log({"loss": 1.0 / (step + 1)})
        if fail:
            raise ValueError("diverged")


def _comet(steps: int, fail: bool) -> None:
    with comet_session(project_name="cards", mode="offline", tags=["demo"]) as experiment:
        experiment.log_parameters({"lr": 0.01, "optimizer": "adam"})
        for step in range(steps):
            experiment.log_metric("loss", 1.0 / (step + 1), step=step)
        if fail:
            raise ValueError("diverged")


def _neptune(steps: int, fail: bool) -> None:
    with neptune_session(mode="offline", tags=["demo"], capture_hardware_metrics=False) as run:
        run["parameters"] = {"lr": 0.01, "optimizer": "adam"}
        for step in range(steps):
            run["loss"].append(1.0 / (step + 1), step=step)
        if fail:
            raise ValueError("diverged")


def _mlflow(steps: int, fail: bool) -> None:
    import mlflow
    from mlflow.entities import Metric

    with mlflow_session("cards", mode="offline", tags={"demo": "yes"}) as run:
        mlflow.log_params({"lr": 0.01, "optimizer": "adam"})
        losses = [Metric("loss", 1.0 / (step + 1), step, step) for step in range(steps)]
        for start in range(0, steps, 1000):  # MLflow's batch limit; one call per step would take minutes
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=losses[start : start + 1000])
        if fail:
            raise ValueError("diverged")


BACKENDS: dict[str, tuple[str, Callable[[int, bool], None], str]] = {
    "wandb": ("Weights & Biases", _wandb, "lr"),
    "comet": ("Comet", _comet, "lr"),
    "neptune": ("Neptune", _neptune, "parameters/lr"),
    "mlflow": ("MLflow", _mlflow, "lr"),
}
# MLflow's tags are name=value pairs; the others' are labels.
TAG_TEXT = {"mlflow": "demo=yes"}


def card(backend: str, steps: int = 200, fail: bool = False) -> str:
    """The run card a local `@task(enable_deck=True)` training loop gets."""
    prefix, train, _ = BACKENDS[backend]

    @task(enable_deck=True)
    def training() -> str:
        try:
            train(steps, fail)
        except ValueError:
            assert fail
        decks = FlyteContextManager.current_context().user_space_params.decks
        (html,) = [deck.html for deck in decks if deck.name.startswith(prefix)]
        return str(html)

    return str(training())


def _loss_row(html: str) -> str:
    match = re.search(r"<tr><th[^>]*>loss</th>(.*?)</tr>", html)
    assert match, html
    return match.group(1)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_training_loop_card_charts_the_loss_and_shows_config_tags_and_status(backend: str) -> None:
    html = card(backend)
    prefix, _, config_key = BACKENDS[backend]
    assert f"{prefix.replace('&', '&amp;')} run (finished)" in html
    assert "Status: <strong>finished</strong>" in html
    row = _loss_row(html)
    assert row.count("<svg") == 1 and "loss: 200 values" in row
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[-3:] == ["0.005", "0.005", "1"]  # last, min, max
    assert f">{config_key}</th>" in html and "adam" in html
    assert f"<code>{TAG_TEXT.get(backend, 'demo')}</code>" in html
    if backend == "mlflow":  # a local store to browse, not a folder to upload
        assert "Recorded offline in" in html and "mlflow ui --backend-store-uri sqlite:///" in html
    else:
        assert "Recorded offline in" in html and "Upload it with:" in html and "<pre" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_failed_block_shows_failed_and_the_exception_type(backend: str) -> None:
    html = card(backend, steps=5, fail=True)
    assert "run (failed)" in html
    assert "failed with ValueError" in html
    assert "loss: 5 values" in html


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_long_history_keeps_the_card_small(backend: str) -> None:
    html = card(backend, steps=5000)
    assert "loss: 5000 values" in html
    assert len(html.encode()) < 50_000, len(html.encode())


def test_downsampling_keeps_spikes_and_the_last_point() -> None:
    points = [(float(step), 0.0) for step in range(10_000)]
    points[4321] = (4321.0, 99.0)
    kept = downsample(points, 200)
    assert len(kept) <= 201 and (4321.0, 99.0) in kept and kept[-1] == points[-1]


def test_the_card_escapes_everything_and_survives_odd_values() -> None:
    evil = "<script>alert(1)</script>"
    info = RunInfo(
        backend="Fake",
        fields={"id": evil},
        series={evil: [(0.0, math.nan), (1.0, math.inf), (2.0, 1.0)], "empty": []},
        config={evil: evil},
        tags=[evil],
        status=f"failed with {evil}",
        note=evil,
    )
    html = run_card_html(info)
    assert "<script" not in html
    assert html.count("&lt;script&gt;") >= 6


def test_unreadable_local_data_is_said_on_the_card_without_failing_the_deck(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_ctx_tracking.sessions import wandb as wandb_module

    def broken(*args: Any) -> Any:
        raise OSError("disk gone")

    monkeypatch.setattr(wandb_module, "_read_run_log", broken)
    html = card("wandb", steps=3)
    assert "run (finished)" in html
    assert "The logged values could not be read (OSError)" in html
