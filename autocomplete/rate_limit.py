"""How many suggestion requests each client address may make, counted in Django's cache.

The counters live in the cache named by `rate_limit_cache`, so several workers or hosts share one
limit only when that cache is shared (Redis or memcached); an in-process cache counts per worker.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time

from django.core.cache import caches
from django.http import HttpRequest

from .conf import app_settings

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Set on a request once it has been counted, so that the fast-path middleware and the view that a
# request then reaches count it once between them.
_COUNTED = "_autocomplete_rate_counted"


def client_address(request: HttpRequest) -> str:
    """The address to count: the peer, or the client a trusted proxy names in X-Forwarded-For."""
    peer = str(request.META.get("REMOTE_ADDR", ""))
    proxies = app_settings().trusted_proxies
    if not proxies or not _is_trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    # Each proxy appends the address it was reached from, so the last hop not ours is the client;
    # anything to its left was written by the client and proves nothing.
    for hop in reversed(hops):
        if hop and not _is_trusted(hop, proxies):
            return hop if _is_address(hop) else peer
    return peer


def seconds_until_allowed(request: HttpRequest) -> int:
    """0 when this request is within its client's limit, else the whole seconds to wait (Retry-After).

    A fixed window counted with the cache's atomic `incr`: one cache operation per request and an
    exact count across workers sharing Redis or memcached, where a token bucket would need a read
    and a write that concurrent workers could interleave; the price is that a client may send up
    to twice the burst across a window boundary. A request already counted is within its limit, since
    one over it was answered there and then.
    """
    settings = app_settings()
    if not settings.rate_limit or getattr(request, _COUNTED, False):
        return 0
    setattr(request, _COUNTED, True)
    window = settings.rate_limit_burst / settings.rate_limit_per_second
    now = time.time()
    number = int(now // window)
    count = _count(f"ratelimit:{client_address(request)}:{number}", timeout=window + 1)
    if count <= settings.rate_limit_burst:
        return 0
    return max(1, math.ceil((number + 1) * window - now))


def _count(key: str, *, timeout: float) -> int:
    """Add one to the counter at `key`, creating it (and its expiry) on the first request."""
    cache = caches[app_settings().rate_limit_cache]
    try:
        return cache.incr(key)
    except ValueError:
        # The window's first request; if another worker created the counter in between, count on it.
        if cache.add(key, 1, timeout=math.ceil(timeout)):
            return 1
        return cache.incr(key)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, proxies: tuple[str, ...]) -> bool:
    exact, networks = _parsed_proxies(proxies)
    if address in exact:
        return True
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@functools.cache
def _parsed_proxies(proxies: tuple[str, ...]) -> tuple[frozenset[str], tuple[_Network, ...]]:
    """Single addresses, compared as strings, and networks (`10.0.0.0/8`), compared as addresses."""
    networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in proxies if "/" in entry)
    return frozenset(entry for entry in proxies if "/" not in entry), networks
