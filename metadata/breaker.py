"""A circuit breaker per backend (S3, Redis, the metadata store on the read path).

A backend that is down or hung must cost a request nothing once the outage is
known: after ``failures`` consecutive failures the breaker *opens* and calls fail
at once with ``BreakerOpen`` (the origin answers 503 + Retry-After, the Redis cache
falls back to its in-process copy). After ``cooldown`` seconds it is *half open*:
exactly one call goes through as a probe; its success closes the breaker, its
failure opens it for another cool-down. (The pattern of Nygard, "Release It!",
ch. 5; the states are the ones resilience4j and Polly name.)

``state`` ("closed" | "open" | "half_open") is what /readyz and /metrics report.
Not thread-safe: one breaker belongs to one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

State = Literal["closed", "open", "half_open"]
STATES: tuple[State, ...] = ("closed", "open", "half_open")


class BreakerOpen(ConnectionError):
    """The backend is known to be out: the call was not attempted."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"{name}: circuit open (retry in {retry_after:.1f} s)")
        self.name = name
        self.retry_after = retry_after


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe (module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 3,
        cooldown: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or cooldown <= 0:
            raise ValueError("failures must be >= 1 and cooldown > 0")
        self.name = name
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None  # None: closed
        self._probing = False
        self.opened = 0  # how many times it opened (a counter for /metrics)
        self.on_close: Callable[[], None] | None = None

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def retry_after(self) -> float:
        """Seconds until the next probe may go (0 when closed or half open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go now? True when closed; when half open, True for the one
        probe (the caller must then report success() or failure())."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self.cooldown:
            return False
        self._probing = True
        return True

    def check(self) -> None:
        """allow(), raising BreakerOpen instead of returning False."""
        if not self.allow():
            raise BreakerOpen(self.name, self.retry_after())

    def success(self) -> None:
        self._consecutive = 0
        was_open = self._opened_at is not None
        self._opened_at = None
        self._probing = False
        if was_open and self.on_close is not None:
            self.on_close()

    def failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self.failures:
            if not self._probing and self._opened_at is None:
                self.opened += 1
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """The call ended with no verdict on the backend (cancelled): a probe slot
        taken by it is given back."""
        self._probing = False

    @contextmanager
    def guard(self, healthy: Callable[[BaseException], bool] = lambda exc: False
              ) -> Iterator[None]:
        """``with breaker.guard(): await call()``: BreakerOpen when open; the
        outcome is recorded (an exception for which ``healthy(exc)`` is true, such
        as S3's 404, is an answer from a working backend, not a failure)."""
        self.check()
        try:
            yield
        except Exception as exc:
            if healthy(exc):
                self.success()
            else:
                self.failure()
            raise
        except BaseException:  # cancelled: no verdict
            self.release()
            raise
        else:
            self.success()
