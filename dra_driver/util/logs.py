"""Logging set-up for the daemon: text for people, JSON for log pipelines."""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
