"""Logging set-up for the daemon: text for people, JSON for log pipelines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]


class SecondCachedFormatter(logging.Formatter):
    """A ``logging.Formatter`` that formats the time of day once per second, not per record.

    ``formatTime`` (``time.localtime`` and ``strftime``) was a fifth of a log line's cost, and
    the daemon logs a line for every claim it prepares or unprepares. The milliseconds are
    still each record's own.
    """

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        # (second, datefmt, text): one tuple, replaced whole, so threads never see it torn.
        self._cached: tuple[int, str | None, str] = (-1, None, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """The record's time as ``logging.Formatter`` formats it."""
        second = int(record.created)
        cached_second, cached_datefmt, text = self._cached
        if cached_second != second or cached_datefmt != datefmt:
            converted = self.converter(second)
            text = time.strftime(datefmt or self.default_time_format, converted)
            self._cached = (second, datefmt, text)
        if datefmt or not self.default_msec_format:
            return text
        return self.default_msec_format % (text, record.msecs)


class JsonFormatter(SecondCachedFormatter):
    """One JSON object per line with ``time``, ``severity``, ``logger`` and ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        claim = getattr(record, "claim", None)
        if claim is not None:
            entry["claim"] = claim
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(*, verbosity: int, log_format: LogFormat) -> None:
    """Send logs to stderr: INFO by default, DEBUG with ``-v``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            SecondCachedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    # Our formats name neither the source line, the thread nor the process: don't collect them
    # for every record (the logging HOWTO's "Optimization"; finding the caller walks the stack
    # and cost a tenth of a prepare's logging).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    # urllib3 logs every connection at DEBUG; keep it out unless asked for twice.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)
