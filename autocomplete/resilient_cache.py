"""Django's Redis cache, made to fail soft: while Redis cannot be reached it acts as an empty cache.

Every use of the cache in this app is an optimisation (query vectors, the catalog's change token)
or a limit that should let traffic through rather than refuse it (rate-limit counters), so a Redis
outage costs speed, never an answer. The handling lives here, in one backend class named in
`CACHES` when `REDIS_URL` is set, rather than at each call site: the call sites stay the plain
cache API that the in-process default also serves, and a new one cannot forget it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# After a failure, calls skip the server for this long, so that a server that times out (rather
# than refusing at once) costs one timeout per interval per process, not one per cache call.
RETRY_AFTER_SECONDS = 1.0


class _Outage:
    """Whether one server is down, shared by every thread's cache object, so it is logged once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False
        self.retry_at = 0.0

    def skipping(self) -> bool:
        return self.down and time.monotonic() < self.retry_at

    def failed(self, server: str, error: Exception) -> None:
        with self.lock:
            if not self.down:
                logger.error(
                    "Redis at %s cannot be reached (%s): the caches act as empty and the rate limit lets "
                    "requests through until it answers again; check the server and REDIS_URL.",
                    server,
                    error,
                )
            self.down = True
            self.retry_at = time.monotonic() + RETRY_AFTER_SECONDS

    def answered(self, server: str) -> None:
        if self.down:
            with self.lock:
                if self.down:
                    logger.warning("Redis at %s answers again; the caches are shared again.", server)
                self.down = False


_outages: dict[str, _Outage] = {}
_outages_lock = threading.Lock()


def _outage_of(server: str) -> _Outage:
    with _outages_lock:
        return _outages.setdefault(server, _Outage())


def _without_credentials(url: str) -> str:
    """The server's address for the log: a password in REDIS_URL must not reach it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


class ResilientRedisCache(RedisCache):
    """RedisCache whose operations answer as a miss / a no-op while the server is unreachable."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._server_name = ", ".join(_without_credentials(url) for url in re.split("[;,]", server))
        self._outage = _outage_of(self._server_name)

    def _guarded(self, operation: Callable[[], T], fallback: T) -> T:
        if self._outage.skipping():
            return fallback
        try:
            result = operation()
        except (RedisError, OSError) as error:
            self._outage.failed(self._server_name, error)
            return fallback
        self._outage.answered(self._server_name)
        return result

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._guarded(lambda: super(ResilientRedisCache, self).get(key, default, version), default)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        return self._guarded(lambda: super(ResilientRedisCache, self).get_many(keys, version), {})

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._guarded(lambda: super(ResilientRedisCache, self).has_key(key, version), False)

    def set(self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        self._guarded(lambda: super(ResilientRedisCache, self).set(key, value, timeout, version), None)

    def set_many(
        self, data: dict[Any, Any], timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        return self._guarded(lambda: super(ResilientRedisCache, self).set_many(data, timeout, version), list(data))

    def add(self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        # Reported as stored: a caller counting with add-then-incr (the rate limit) starts afresh.
        return self._guarded(lambda: super(ResilientRedisCache, self).add(key, value, timeout, version), True)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        # The counter reads as just started, so a limit counted here lets the request through;
        # a missing key still raises ValueError, as the cache API says, while the server answers.
        return self._guarded(lambda: super(ResilientRedisCache, self).incr(key, delta, version), delta)

    def touch(self, key: Any, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._guarded(lambda: super(ResilientRedisCache, self).touch(key, timeout, version), False)

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._guarded(lambda: super(ResilientRedisCache, self).delete(key, version), False)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        self._guarded(lambda: super(ResilientRedisCache, self).delete_many(keys, version), None)

    def clear(self) -> None:
        self._guarded(lambda: super(ResilientRedisCache, self).clear(), None)
