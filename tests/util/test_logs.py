"""Log formatting: the per-second time cache formats exactly as ``logging.Formatter`` does."""

from __future__ import annotations

import json
import logging

import pytest

from dra_driver.util.logs import JsonFormatter, SecondCachedFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def record_at(created: float, message: str = "m") -> logging.LogRecord:
    record = logging.LogRecord("dra", logging.INFO, __file__, 1, message, None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


@pytest.mark.parametrize(
    "datefmt", [None, "%Y-%m-%dT%H:%M:%S"], ids=["default-with-msecs", "explicit-datefmt"]
)
def test_times_match_the_standard_formatter_within_and_across_seconds(datefmt: str | None) -> None:
    cached = SecondCachedFormatter(TEXT_FORMAT, datefmt)
    standard = logging.Formatter(TEXT_FORMAT, datefmt)
    times = [1_800_000_000.001, 1_800_000_000.999, 1_800_000_001.5, 1_800_000_000.25]

    assert [cached.format(record_at(t)) for t in times] == [
        standard.format(record_at(t)) for t in times
    ]


def test_a_new_datefmt_is_not_served_from_the_cache() -> None:
    formatter = SecondCachedFormatter()
    record = record_at(1_800_000_000.5)

    first = formatter.formatTime(record, "%H")
    second = formatter.formatTime(record, "%Y")

    assert (first, second) == (
        logging.Formatter().formatTime(record, "%H"),
        logging.Formatter().formatTime(record, "%Y"),
    )


def test_json_lines_carry_the_time_severity_logger_and_message() -> None:
    record = record_at(1_800_000_000.5, "prepared claim ns/c")

    entry = json.loads(JsonFormatter().format(record))

    assert entry == {
        "time": logging.Formatter().formatTime(record, "%Y-%m-%dT%H:%M:%S"),
        "severity": "INFO",
        "logger": "dra",
        "message": "prepared claim ns/c",
    }
