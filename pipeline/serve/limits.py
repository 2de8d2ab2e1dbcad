"""Limits of the HTTP API: per-key rate limits, request body size, and request time.

- :class:`RateLimiter`: a token bucket per API key (``api.rate_limit_per_s`` tokens a second,
  at most ``api.rate_limit_burst`` saved up); a request finding the bucket empty is told how
  long to wait (429 with ``Retry-After``). Buckets live in the server process: with
  ``--workers N`` each worker has its own, so a key may get up to N times the rate. Failed
  authentications take tokens from a bucket of the client's address, with the same settings;
  an address whose bucket is empty gets 429 without its credentials being checked.
- :class:`BodySizeLimit`: an ASGI middleware that refuses a body larger than
  ``api.max_body_bytes`` while it is being read: at once when ``Content-Length`` says so, and
  for a chunked body as soon as the bytes received pass the limit, so no oversized body is ever
  held in memory whole; and a body still incomplete ``api.body_timeout_s`` after the request
  began (a client trickling it in) with 408.
- :class:`Deadline` and :func:`run_with_deadline`: run blocking work in a thread for at most
  ``api.request_timeout_s``; work that must not happen after the client was told "timeout" (a
  charge) calls :meth:`Deadline.commit` first, which fails once the request timed out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")


class RateLimiter:
    """Token buckets, one per key: ``rate_per_s`` tokens a second, at most ``burst`` saved.

    Parameters
    ----------
    rate_per_s
        Tokens added per second.
    burst
        Bucket size: how many requests a rested key may make at once.
    clock
        Monotonic seconds (a parameter so tests can drive time).
    """

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at time)
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Return 0 if ``key`` has a token now, else the seconds until it has; take nothing."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_s)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s

    def acquire(self, key: str) -> float:
        """Take a token for ``key``; return 0, or the seconds until a token is available."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s


class BodyTooLargeError(HTTPException):
    """A request body larger than the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (api.max_body_bytes)")


class BodyTimeoutError(HTTPException):
    """A request body still incomplete after the request timeout (408)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408, f"the request body did not arrive within {timeout_s:g} s (api.body_timeout_s)"
        )


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_body_bytes`` or slower than ``body_timeout_s``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a ``receive`` that counts the body's bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await send_json(send, 413, error_body("body_too_large", self._message()))
            return
        received = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def counting_receive() -> Message:
            nonlocal received
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except TimeoutError:
                raise BodyTimeoutError(self.body_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError(self.max_body_bytes)
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return str(BodyTooLargeError(self.max_body_bytes).detail)


def _content_length(scope: Scope) -> int | None:
    """Return the request's declared Content-Length, or None (absent or not a number)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 19 else None
    return None


def error_body(code: str, message: str, field: str | None = None) -> dict[str, str]:
    """Return the JSON error document every error response carries."""
    body = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return body


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    """Send a whole JSON response through a raw ASGI ``send``."""
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class RequestTimeoutError(Exception):
    """The request ran past ``api.request_timeout_s`` (answered 504)."""


class Deadline:
    """Decides, once, between "the work committed" and "the request was abandoned"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._committed = False

    def commit(self) -> None:
        """Mark the work as committed; the work calls it before an irreversible step (a charge).

        Raises
        ------
        RequestTimeoutError
            If the request already timed out: the step must not happen.
        """
        with self._lock:
            if self._abandoned:
                raise RequestTimeoutError
            self._committed = True

    def abandon(self) -> bool:
        """Give the request up on timeout; False if the work committed (its answer must be sent)."""
        with self._lock:
            if self._committed:
                return False
            self._abandoned = True
            return True


async def run_with_deadline(
    executor: concurrent.futures.Executor, timeout_s: float, work: Callable[[Deadline], T]
) -> T:
    """Run ``work(deadline)`` in ``executor``; :class:`RequestTimeoutError` after ``timeout_s``.

    Work that committed (:meth:`Deadline.commit`) before the timeout is waited for, so a charged
    answer is always sent.
    """
    deadline = Deadline()
    future = asyncio.get_running_loop().run_in_executor(executor, work, deadline)
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except TimeoutError:
        if deadline.abandon():
            raise RequestTimeoutError from None
        return await future
