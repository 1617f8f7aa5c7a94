"""The driver's exception hierarchy.

Every failure a user or operator can see is one of these, so a message always names its
subject, the cause and what to do next, and callers never need to catch ``OSError`` or
``KeyError`` leaking from the layers below. Foreign exceptions are wrapped once, at the edge
where they happen, with ``raise ... from exc``.

    DriverError
     ├── DiscoveryError            sysfs/devfs tree missing, unreadable or inconsistent
     ├── MockConfigError           a mock node config that cannot be built
     ├── HySmiParseError           hy-smi output we cannot read
     ├── CdiError                  a CDI spec that cannot be built or written
     │    └── CdiValidationError   a spec that breaks the schema or the CDI rules
     ├── AllocationError           no room for a share on a DCU
     ├── ClaimConfigError          bad opaque configuration in a claim or class
     ├── ClaimError                a claim that cannot be prepared as it is (not allocated,
     │                             replaced, for another node, malformed allocation)
     ├── CheckpointError           the durable state cannot be read or written
     │    └── CheckpointCorruptError
     └── PublishError              the ResourceSlice could not be published

``Recoverable`` is a mixin: background errors carrying it are logged and retried; anything
else stops the daemon (the Python twin of the Go helper's ``ErrRecoverable``).
"""

from __future__ import annotations

import reprlib

#: How much of an outside value (a name the kubelet sent, a field of a user's config) a message
#: quotes: enough to recognise it; all 10 KiB of it would bury the message.
QUOTED_MAX_CHARS = 64
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = QUOTED_MAX_CHARS
_QUOTE.maxlevel = 2
_QUOTE.maxlist = _QUOTE.maxdict = 4


def quoted(value: object) -> str:
    """``value`` as a message quotes it: a ``repr``, shortened in the middle.

    Newlines, NUL and other control characters come out escaped, so the message stays one
    line, and the result is short whatever the size or depth of ``value``.
    """
    return _QUOTE.repr(value)


class DriverError(Exception):
    """Base class of every error the driver reports on purpose."""


class Recoverable:
    """Mixin marking an error after which the daemon keeps running and retries."""


class DiscoveryError(DriverError):
    """The node's DCUs could not be discovered from sysfs/devfs."""


class MockConfigError(DriverError):
    """A mock DCU node configuration is invalid."""


class HySmiParseError(DriverError):
    """``hy-smi`` printed something we cannot parse."""


class CdiError(DriverError):
    """A CDI spec could not be built or written."""


class CdiValidationError(CdiError):
    """A CDI spec breaks the official schema or the rules the schema does not express.

    ``problems`` holds one human-readable line per problem found.
    """

    def __init__(self, subject: str, problems: list[str]) -> None:
        self.subject = subject
        self.problems = list(problems)
        super().__init__(f"{subject}: " + "; ".join(self.problems))


class AllocationError(DriverError):
    """A share cannot be placed on a DCU."""


class ClaimConfigError(DriverError):
    """Opaque configuration for this driver is invalid."""


class ClaimError(DriverError):
    """A ResourceClaim cannot be prepared as the API server has it; reported per claim."""


class CheckpointError(DriverError):
    """The checkpoint cannot be read or written."""


class CheckpointCorruptError(CheckpointError):
    """The checkpoint exists but cannot be decoded; we never guess at its contents."""


class PublishError(DriverError, Recoverable):
    """Publishing ResourceSlices failed; retried with backoff."""


class ConvertError(DriverError):
    """A HAMi manifest that ``dcu-dra convert`` cannot turn into DRA claims as it is."""
