"""The retrying HTTP transports under every client, and their counters: plumbing, for those who
build their own ``httpx`` client or read ``client.stats``.

``RetryTransport`` / ``AsyncRetryTransport`` retry idempotent requests on connection errors,
429 and 5xx with backoff; ``Stats`` counts requests, retries and re-logins.
"""

from imgtools._transport import AsyncRetryTransport, RetryTransport, Stats

__all__ = ["AsyncRetryTransport", "RetryTransport", "Stats"]
