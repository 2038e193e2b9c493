"""The service's ASGI middleware, driven directly: load shedding with Retry-After, the API key, the body size limit."""

import asyncio
import json
from typing import Any

from mlops_assets.serving.middleware import (
    DRAIN_FACTOR,
    MAX_BODY_BYTES,
    ApiKeyMiddleware,
    BodySizeLimitMiddleware,
    LoadSheddingMiddleware,
)


class SlowApp:
    """An ASGI app that holds each request until released, then answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.release, self.status = asyncio.Event(), status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.release.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def _call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "path": path, "headers": headers or []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


def test_requests_beyond_the_limit_are_shed_with_retry_after_and_service_recovers() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        app = LoadSheddingMiddleware(inner, max_in_flight=3, retry_after=2)
        held = [asyncio.create_task(_call(app, "/predict")) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert app.in_flight == 3
        status, headers = await _call(app, "/predict_batch")  # answered at once, not queued
        assert status == 429 and headers[b"retry-after"] == b"2"
        health = asyncio.create_task(_call(app, "/readyz"))  # never shed
        await asyncio.sleep(0.01)
        inner.release.set()
        assert [s for s, _ in await asyncio.gather(*held)] == [200, 200, 200]
        assert (await health)[0] == 200
        assert app.in_flight == 0 and (await _call(app, "/predict"))[0] == 200

    asyncio.run(scenario())


def test_a_503_from_adaptive_batching_gets_retry_after() -> None:
    async def scenario() -> None:
        inner = SlowApp(status=503)
        inner.release.set()
        status, headers = await _call(LoadSheddingMiddleware(inner, max_in_flight=3, retry_after=1), "/predict")
        assert status == 503 and headers[b"retry-after"] == b"1"

    asyncio.run(scenario())


def test_the_api_key_guards_prediction_paths_only() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        inner.release.set()
        app = ApiKeyMiddleware(inner, key="k-123")
        assert (await _call(app, "/predict"))[0] == 401
        assert (await _call(app, "/predict", [(b"x-api-key", b"k-124")]))[0] == 401
        assert (await _call(app, "/predict", [(b"x-api-key", b"k-123")]))[0] == 200
        assert (await _call(app, "/predict_batch", [(b"authorization", b"Bearer k-123")]))[0] == 200
        assert (await _call(app, "/docs.json"))[0] == 200

    asyncio.run(scenario())


class EchoApp:
    """An ASGI app that reads the whole body and answers 200 with it."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def _send_body(app: Any, path: str, chunks: list[bytes], content_length: bool = True) -> tuple[int, bytes, int]:
    """(status, response body, chunks the client was asked for) of a request whose body comes in `chunks`."""
    sent: list[dict[str, Any]] = []
    queue = list(chunks)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    headers = [(b"content-length", str(sum(map(len, chunks))).encode())] if content_length else []
    await app({"type": "http", "path": path, "headers": headers}, receive, send)
    return sent[0]["status"], sent[1]["body"], len(chunks) - len(queue)


def test_a_body_over_its_endpoints_limit_gets_a_413_and_never_reaches_the_service() -> None:
    async def scenario() -> None:
        app = BodySizeLimitMiddleware(EchoApp(), {"/predict": 10, "/predict_batch": 100})
        status, body, read = await _send_body(app, "/predict", [b"x" * 6, b"x" * 5])
        assert status == 413 and "larger than 10 bytes, the limit of /predict" in json.loads(body)["error"]
        assert read == 2  # by its Content-Length; read and dropped, so that the client still sending reads the 413
        assert (await _send_body(app, "/predict", [b"x" * 10]))[:2] == (200, b"x" * 10)
        assert (await _send_body(app, "/predict_batch", [b"y" * 100]))[:2] == (200, b"y" * 100)  # a larger limit
        # Without a Content-Length (chunked): refused once the chunks read pass the limit.
        status, body, read = await _send_body(app, "/predict", [b"abcd"] * 5, content_length=False)
        assert (status, read) == (413, 5)
        status, body, read = await _send_body(app, "/predict", [b"ab", b"cd", b"ef"], content_length=False)
        assert (status, body) == (200, b"abcdef")  # within the limit: the app gets every byte
        assert (await _send_body(app, "/docs.json", [b"z" * 1000]))[0] == 200  # other paths are not limited
        # Far beyond the limit, nothing is read: the 413 goes out and the connection closes.
        status, _, read = await _send_body(app, "/predict", [b"x" * (10 * DRAIN_FACTOR + 1)])
        assert (status, read) == (413, 0)
        status, _, read = await _send_body(app, "/predict", [b"x" * 60] * 5, content_length=False)
        assert (status, read) == (413, 2)

    asyncio.run(scenario())


def test_by_default_a_megabyte_is_too_much_for_one_request_but_not_for_a_batch() -> None:
    async def scenario() -> None:
        app = BodySizeLimitMiddleware(EchoApp())
        body = [b"x" * (MAX_BODY_BYTES["/predict"] + 1)]
        assert (await _send_body(app, "/predict", body))[0] == 413
        assert (await _send_body(app, "/predict_batch", body))[0] == 200

    asyncio.run(scenario())
