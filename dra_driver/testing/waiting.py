"""Polling with a deadline, for tests and test infrastructure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout_s: float,
    description: str,
    interval_s: float = 0.1,
    details: Callable[[], object] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    Raises ``AssertionError`` naming ``description`` (what did not happen), the last value or
    exception seen and, when given, ``details()`` (e.g. the object being waited on).
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = predicate()
        except AssertionError as exc:
            value, last = None, exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout_s:g} s waiting for {description}; last: {last!r}"
            if details is not None:
                try:
                    message += f"\ndetails: {details()}"
                except Exception as exc:  # diagnostics must not hide the timeout
                    message += f"\ndetails unavailable: {exc!r}"
            raise AssertionError(message)
        time.sleep(interval_s)
