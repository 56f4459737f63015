"""REDIS_URL: the caches shared through a real Redis, and Redis down costing speed, never an answer."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from django.core.cache import caches
from django.test import Client, RequestFactory
from pytest_django.fixtures import Settings

from autocomplete import catalog as catalog_module
from autocomplete import resilient_cache
from autocomplete.catalog import catalog
from autocomplete.models import Corpus
from autocomplete.rate_limit import seconds_until_allowed
from autocomplete.search import embed_query
from config.settings import redis_caches
from embeddings.encoders import Encoder

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not redis_answers(), reason="no Redis answers PING on 127.0.0.1:6379")


def dead_port() -> int:
    """A port nothing listens on: the system picks a free one, and it is closed again at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def _fresh_outage_state() -> Iterator[None]:
    resilient_cache._outages.clear()
    yield
    resilient_cache._outages.clear()


def use_redis(settings: Settings, url: str) -> None:
    """Point both caches at `url`, under prefixes of this test alone (other tests may share the server)."""
    configured: dict[str, dict[str, Any]] = redis_caches(url)
    run = uuid.uuid4().hex
    for alias in configured.values():
        alias["KEY_PREFIX"] = f"test-{run}-{alias['KEY_PREFIX']}"
    # Setting CACHES sends `setting_changed`, on which Django drops every thread's cache connections.
    settings.CACHES = configured
    catalog_module.invalidate_catalog()


def as_other_worker(alias: str) -> Any:
    """A second client of the same cache, with its own connection pool, as another worker's would be."""
    other = caches.create_connection(alias)
    assert other is not caches[alias]
    return other


@needs_redis
def test_a_query_vector_encoded_by_one_worker_is_reused_by_another(
    settings: Settings, minilm: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_redis(settings, REDIS_URL)
    vector = embed_query(minilm, "how do i reset my password")
    caches["query-embeddings"] = as_other_worker("query-embeddings")

    def encode_again(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the second worker encoded a query the first had cached")

    monkeypatch.setattr(minilm, "encode", encode_again)
    assert np.array_equal(embed_query(minilm, "how do i reset   my password "), vector)


@needs_redis
def test_rate_limit_counters_are_shared_between_workers(settings: Settings, configure: Callable[..., None]) -> None:
    use_redis(settings, REDIS_URL)
    configure(RATE_LIMIT=True, RATE_LIMIT_PER_SECOND=0.01, RATE_LIMIT_BURST=3)
    workers = [caches["default"], as_other_worker("default")]
    waits = []
    for number in range(5):
        caches["default"] = workers[number % 2]
        # A new request each time: one request is counted once, however many layers ask.
        request = RequestFactory().get("/api/suggest", REMOTE_ADDR="192.0.2.7")
        waits.append(seconds_until_allowed(request))
    assert waits[:3] == [0, 0, 0] and all(wait > 0 for wait in waits[3:])


@needs_redis
@pytest.mark.django_db
def test_a_new_live_build_elsewhere_is_seen_before_the_ttl(settings: Settings, configure: Callable[..., None]) -> None:
    use_redis(settings, REDIS_URL)
    # As REDIS_URL sets it; builds stay removable only past the TTL, so the grace follows it.
    configure(CATALOG_TTL_SECONDS=3600.0, SUPERSEDED_GRACE_SECONDS=7200.0, CATALOG_CHANGE_CACHE="default")
    assert list(catalog().corpora) == []
    Corpus.objects.create(name="New", slug="new")
    assert list(catalog().corpora) == []  # within the TTL, nothing announced: the snapshot stands
    other_server = as_other_worker("default")
    other_server.set(catalog_module._CHANGE_KEY, uuid.uuid4().hex, timeout=None)
    assert list(catalog().corpora) == ["new"]


@pytest.mark.django_db
def test_with_an_in_process_cache_the_ttl_still_bounds_staleness(configure: Callable[..., None]) -> None:
    configure(CATALOG_TTL_SECONDS=0.0, CATALOG_CHANGE_CACHE="default")
    assert list(catalog().corpora) == []
    Corpus.objects.create(name="New", slug="new")
    assert list(catalog().corpora) == ["new"]


def test_with_redis_down_every_endpoint_answers_with_suggestions_and_the_limit_lets_them_through(
    settings: Settings,
    configure: Callable[..., None],
    client: Client,
    small_corpus: Corpus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    use_redis(settings, f"redis://127.0.0.1:{dead_port()}/0")
    configure(RATE_LIMIT=True, RATE_LIMIT_PER_SECOND=0.01, RATE_LIMIT_BURST=1)
    for _ in range(3):
        api = client.get("/api/suggest", {"q": "how do i reset my password"})
        assert api.status_code == 200 and api.json()["suggestions"]
        partial = client.get("/suggest", {"q": "cancel my subscription"}, headers={"HX-Request": "true"})
        assert partial.status_code == 200 and "Cancel plan" in partial.content.decode()
        page = client.get("/", {"q": "I forgot my password"})
        assert page.status_code == 200 and "Forgot password" in page.content.decode()
    assert caplog.text.count("cannot be reached") == 1  # once per outage, not per request or per cache


def test_while_redis_is_down_the_cache_reads_as_empty_and_writes_are_dropped(settings: Settings) -> None:
    use_redis(settings, f"redis://:secret@127.0.0.1:{dead_port()}/0")
    cache = caches["default"]
    cache.set("key", "value")
    assert cache.get("key", "missing") == "missing" and cache.get_many(["key"]) == {}
    assert cache.add("counter", 1) is True and cache.incr("counter") == 1
    assert cache.has_key("key") is False and cache.delete("key") is False


def test_the_log_names_the_server_without_its_password(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    port = dead_port()
    use_redis(settings, f"redis://:secret@127.0.0.1:{port}/0")
    caches["default"].get("key")
    assert f"redis://127.0.0.1:{port}/0" in caplog.text and "secret" not in caplog.text


@needs_redis
def test_when_redis_answers_again_the_cache_is_used_again(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_redis(settings, REDIS_URL)
    cache = caches["default"]
    assert isinstance(cache, resilient_cache.ResilientRedisCache)
    monkeypatch.setattr(resilient_cache, "RETRY_AFTER_SECONDS", 0.0)
    outage = resilient_cache._outage_of(cache._server_name)
    outage.failed(cache._server_name, ConnectionError("refused"))
    cache.set("key", "value")
    assert cache.get("key") == "value"
    assert "answers again" in caplog.text
