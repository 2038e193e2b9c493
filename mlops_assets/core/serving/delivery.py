"""What is logged is exactly what was answered: work that must follow an answer (its prediction-log records, the
request ids it used) waits until that answer has been sent whole; an answer that was not (an error after scoring, a
timeout, a client gone) gets its undo instead.

The scorer hands its follow-up to `after_answer`; around an HTTP request, `DeliveryMiddleware` holds it until the
response's last byte was sent with status 200. Outside a request (in-process use, tests) it runs at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio


@dataclass(frozen=True)
class FollowUp:
    commit: Callable[[], None]  # the answer was delivered
    undo: Callable[[], None]  # it was not


# The follow-ups of the request being handled; the handler's thread sees the same list (a copy of this context).
_PENDING: ContextVar[list[FollowUp] | None] = ContextVar("mlops_pending_follow_ups", default=None)


def after_answer(commit: Callable[[], None], undo: Callable[[], None]) -> None:
    """Run `commit` once the answer is delivered, `undo` if it never is; at once (`commit`) outside a request."""
    pending = _PENDING.get()
    if pending is None:
        commit()
    else:
        pending.append(FollowUp(commit, undo))


class DeliveryMiddleware:
    """Holds the follow-ups of each request on `paths` until its response is sent: all of it and with status 200 runs
    their commits (in a worker thread: a flush of the log must not hold the event loop), anything else their undos."""

    def __init__(self, app: Any, paths: tuple[str, ...]) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        pending: list[FollowUp] = []
        status, delivered = 0, False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal status, delivered
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)  # raises when the client is gone: then it was not delivered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                delivered = True

        token = _PENDING.set(pending)
        try:
            await self.app(scope, receive, tracked)
        finally:
            _PENDING.reset(token)
            if pending:
                ok = delivered and status == 200
                with anyio.CancelScope(shield=True):  # a cancelled request (client gone) still gets its undo
                    await anyio.to_thread.run_sync(_run, [f.commit if ok else f.undo for f in pending])


def _run(steps: list[Callable[[], None]]) -> None:
    for step in steps:
        step()
