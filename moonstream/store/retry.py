"""Our retry policy for remote stores: one pure decision function plus a small loop around it.

botocore's own retries are switched off (``max_attempts=1``) so that every retry is decided here:
capped exponential backoff with full jitter (delay drawn uniformly from ``[0, min(cap, base * 2**n))``)
for transient failures only. Not-found, precondition failures and other client errors are answers,
not failures, and are never retried.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ErrorKind(enum.Enum):
    """What a failed store call means for retrying it."""

    NOT_FOUND = "not_found"  # 404: an answer
    PRECONDITION = "precondition"  # 412, 409 ConditionalRequestConflict: an answer
    CLIENT = "client"  # other 4xx: our request is wrong, retrying cannot help
    THROTTLED = "throttled"  # 429, 503 SlowDown and friends
    TIMEOUT = "timeout"  # 408 RequestTimeout
    SERVER = "server"  # other 5xx
    CONNECTION = "connection"  # connect/read failures, connection reset, torn response body

    @property
    def retryable(self) -> bool:
        """True for transient failures that a later attempt may not see."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({ErrorKind.THROTTLED, ErrorKind.TIMEOUT, ErrorKind.SERVER, ErrorKind.CONNECTION})

# 2**62 times any sane base is far above any cap; clamping the exponent avoids float overflow.
_MAX_EXPONENT = 62


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: at most ``max_attempts`` calls in all (the first included),
    waiting up to ``min(cap, base * 2**(attempt-1))`` seconds after failed attempt ``attempt``."""

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not self.base > 0:
            raise ValueError(f"base must be positive, got {self.base}")
        if not self.cap >= self.base:
            raise ValueError(f"cap ({self.cap}) must be at least base ({self.base})")


DEFAULT_RETRY_POLICY = RetryPolicy()


def retry_delay(attempt: int, error_kind: ErrorKind, *, policy: RetryPolicy, rand: float) -> float | None:
    """Seconds to wait before the next attempt, or None to give up.

    ``attempt`` is the 1-based number of the attempt that just failed with ``error_kind``; ``rand`` is
    a uniform draw from ``[0, 1)`` supplied by the caller, so the function is pure. Non-retryable kinds
    and an exhausted budget (``attempt >= policy.max_attempts``) give None.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    if not error_kind.retryable or attempt >= policy.max_attempts:
        return None
    ceiling = min(policy.cap, policy.base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return rand * ceiling


def call_with_retries(
    fn: Callable[[], T],
    classify: Callable[[BaseException], ErrorKind | None],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
    what: str = "store call",
) -> T:
    """Call ``fn`` until it returns, retrying the failures :func:`retry_delay` allows.

    ``classify`` maps an exception to an :class:`ErrorKind`, or None for exceptions that are not store
    failures (bugs), which propagate at once. When no retry is left the last exception is re-raised
    unchanged; the caller maps it to its own error type. ``what`` names the call in log lines.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            delay = retry_delay(attempt, kind, policy=policy, rand=rand())
            if delay is None:
                if kind.retryable:
                    logger.warning("%s failed (%s) on attempt %d; giving up", what, kind.value, attempt)
                raise
            logger.info(
                "%s failed (%s) on attempt %d of %d; retrying in %.3fs",
                what,
                kind.value,
                attempt,
                policy.max_attempts,
                delay,
            )
        sleep(delay)
        attempt += 1
