"""Named defaults. Every duration is in float seconds; every size is a count of items or bytes.

Keyword-only options across imgtools default to these constants, so a reader can find, in one
place, how long imgtools waits, how often it retries and how fast it polls.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDENTITY_URL",
    "DEFAULT_IMAGES_PAGE_SIZE",
    "DEFAULT_POLL_INITIAL",
    "DEFAULT_POLL_JITTER",
    "DEFAULT_POLL_MAXIMUM",
    "DEFAULT_POLL_MULTIPLIER",
    "DEFAULT_RETRIES",
    "DEFAULT_RETRY_AFTER_CAP",
    "DEFAULT_RETRY_BACKOFF_INITIAL",
    "DEFAULT_RETRY_BACKOFF_MAXIMUM",
    "DEFAULT_TASKS_PAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WAIT_TIMEOUT",
    "FAST_POLL_INITIAL",
    "FAST_POLL_MAXIMUM",
    "MAX_CONTAINER_NAME_BYTES",
    "MAX_PAGE_SIZE",
    "RECONCILE_ATTEMPTS",
    "RECONCILE_CLOCK_SKEW",
    "RECONCILE_SETTLE",
    "TOKEN_REFRESH_MARGIN",
    "USER_AGENT",
]

#: Per-request HTTP timeout (read, write, pool), seconds.
DEFAULT_TIMEOUT = 30.0
#: Time allowed to open a TCP/TLS connection, seconds.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Retries of one idempotent request after the first attempt (so at most 1 + 5 attempts).
DEFAULT_RETRIES = 5
#: First retry backoff, seconds; doubled each retry with full jitter, up to the maximum.
DEFAULT_RETRY_BACKOFF_INITIAL = 0.5
DEFAULT_RETRY_BACKOFF_MAXIMUM = 8.0
#: A ``Retry-After`` longer than this is shortened to it, seconds (one bad header must not
#: park a script for an hour).
DEFAULT_RETRY_AFTER_CAP = 60.0

#: Task polling: exponential backoff from ``initial`` up to the ``maximum`` ceiling, seconds.
#: The provider asks clients "not to poll more frequently than every 30 seconds": the ceiling is
#: 30 s and jitter only lengthens a delay, so a long wait settles at one request per 30-36 s.
DEFAULT_POLL_INITIAL = 2.0
DEFAULT_POLL_MAXIMUM = 30.0
DEFAULT_POLL_MULTIPLIER = 2.0
#: Fraction by which a poll delay may be lengthened at random (0.2 = up to 20 % longer).
DEFAULT_POLL_JITTER = 0.2
#: ``PollPolicy.fast()``, for the local emulator only, seconds.
FAST_POLL_INITIAL = 0.05
FAST_POLL_MAXIMUM = 0.5

#: How long ``wait()`` / ``wait_all()`` wait by default, seconds; ``None`` means forever and must
#: be asked for explicitly. Exports of large images take tens of minutes.
DEFAULT_WAIT_TIMEOUT = 3600.0

#: Page sizes: Glance's maximum ``limit`` is 1000 (larger values are refused locally).
MAX_PAGE_SIZE = 1000
DEFAULT_TASKS_PAGE_SIZE = 1000
DEFAULT_IMAGES_PAGE_SIZE = 100

#: Cloud Files limit on a container name, in UTF-8 bytes.
MAX_CONTAINER_NAME_BYTES = 256

#: Lost-POST reconciliation: tasks created up to this long before the request began still count
#: as candidates, because the service's clock and ours differ (and its timestamps are truncated
#: to whole seconds), seconds.
RECONCILE_CLOCK_SKEW = 120.0
#: Pause before listing tasks to reconcile a lost POST, so a request still being processed
#: behind a gateway has time to show up, seconds.
RECONCILE_SETTLE = 1.0
#: Times a lost POST's task is looked for (listing and fetching) when looking fails on a
#: network error, a 5xx, a rate limit or a 401 that a new login may cure, before
#: ``ExportNotConfirmed`` says it could not be confirmed either way.
RECONCILE_ATTEMPTS = 4

#: Re-authenticate this long before the token's ``expires`` (at most a tenth of its lifetime),
#: seconds, so long waits rarely meet a 401 at all.
TOKEN_REFRESH_MARGIN = 60.0

#: Rackspace identity v2.0 (``POST {identity}/tokens``).
DEFAULT_IDENTITY_URL = "https://identity.api.rackspacecloud.com/v2.0"

USER_AGENT = "imgtools/0.1.0"
