"""What is logged is exactly what was answered: follow-ups run after a delivered 200, undos otherwise."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mlops_assets.core.serving.delivery import DeliveryMiddleware, after_answer


def _app(status: int, events: list[str]) -> Any:
    """An endpoint that scores in a worker thread (as BentoML runs it) and answers `status`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        def handler() -> None:
            after_answer(lambda: events.append("commit"), lambda: events.append("undo"))

        await anyio.to_thread.run_sync(handler)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    return app


async def _call(app: Any, path: str = "/predict", send: Any = None) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def sent(message: dict[str, Any]) -> None:
        pass

    await DeliveryMiddleware(app, paths=("/predict",))({"type": "http", "path": path}, receive, send or sent)


@pytest.mark.parametrize(("status", "expected"), [(200, ["commit"]), (409, ["undo"]), (500, ["undo"])])
def test_follow_ups_run_once_the_answer_is_delivered_and_are_undone_otherwise(status: int, expected: list[str]) -> None:
    events: list[str] = []
    anyio.run(_call, _app(status, events))
    assert events == expected


def test_an_answer_the_client_never_got_is_undone() -> None:
    events: list[str] = []

    async def gone(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client disconnected")

    with pytest.raises(OSError):
        anyio.run(lambda: _call(_app(200, events), send=gone))
    assert events == ["undo"]


def test_outside_a_request_or_on_other_paths_a_follow_up_runs_at_once() -> None:
    events: list[str] = []
    after_answer(lambda: events.append("commit"), lambda: events.append("undo"))
    anyio.run(lambda: _call(_app(200, events), path="/other"))
    assert events == ["commit", "commit"]
