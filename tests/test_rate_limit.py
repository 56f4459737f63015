"""The per-address rate limit on /api/suggest and the search box's partial, counted in Django's cache."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory

from autocomplete import rate_limit
from autocomplete.conf import AutocompleteSettings
from autocomplete.measure.benchmark import stack_env
from autocomplete.middleware import SuggestFastPathMiddleware
from autocomplete.models import Corpus
from autocomplete.rate_limit import client_address, seconds_until_allowed

from .mounted_urls import SITE_MIDDLEWARE

pytestmark = pytest.mark.django_db

HTMX: dict[str, Any] = {"HTTP_HX_REQUEST": "true"}


class Clock:
    """The wall clock the limit reads, moved by hand so a window never ends mid-test."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_800_000_000.0)  # the start of a window for the bursts and rates below
    monkeypatch.setattr(rate_limit, "time", SimpleNamespace(time=fake.time))
    return fake


@pytest.fixture(autouse=True)
def _limit_on(configure: Callable[..., None]) -> Iterator[None]:
    """The limit as deployed (the test settings turn it off), with fresh counters."""
    configure(RATE_LIMIT=True, RATE_LIMIT_PER_SECOND=1.0, RATE_LIMIT_BURST=3)
    caches["default"].clear()
    yield
    caches["default"].clear()


def test_the_limit_is_on_by_default_and_the_benchmark_turns_it_off(tmp_path: Path) -> None:
    assert AutocompleteSettings.from_dict({}).rate_limit is True
    assert stack_env(tmp_path, encoder="minilm")["AUTOCOMPLETE_RATE_LIMIT"] == "0"
    assert AutocompleteSettings.from_dict({"RATE_LIMIT": False}).rate_limit is False


def test_past_the_burst_the_api_answers_429_with_retry_after(
    client: Client, small_corpus: Corpus, clock: Clock
) -> None:
    for _ in range(3):
        assert client.get("/api/suggest", {"q": "password"}).status_code == 200
    clock.now += 1.2
    response = client.get("/api/suggest", {"q": "password"})
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "2"  # the window of burst / rate = 3 s ends 1.8 s later
    assert response.json() == {"error": "Too many requests from your address: retry after 2 s."}
    assert response["X-Frame-Options"] == "DENY"


def test_the_next_window_lets_the_client_in_again(client: Client, db: None, clock: Clock) -> None:
    statuses = [client.get("/api/suggest", {"q": ""}).status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]  # no corpus yet: the 404 still counts
    clock.now += 3.0
    assert client.get("/api/suggest", {"q": ""}).status_code == 404


def test_the_partial_is_limited_and_shows_why_in_the_box(client: Client, small_corpus: Corpus, clock: Clock) -> None:
    for _ in range(3):
        assert client.get("/suggest", {"q": "password"}, **HTMX).status_code == 200
    response = client.get("/suggest", {"q": "password"}, **HTMX)
    assert response.status_code == 429
    assert response["Retry-After"] == "3"
    assert "Too many requests from your address: wait 3 s and type again." in response.content.decode()
    assert 'role="alert"' in response.content.decode()
    # The search page itself is not limited: it is loaded once, not per keystroke.
    assert client.get("/").status_code == 200


def test_the_box_swaps_a_429_in_rather_than_ignoring_it() -> None:
    script = (Path(__file__).resolve().parent.parent / "static/autocomplete/combobox.js").read_text()
    assert "status === 429" in script and "shouldSwap = true" in script


def test_the_api_and_the_partial_share_one_budget_per_address(
    client: Client, small_corpus: Corpus, clock: Clock
) -> None:
    client.get("/api/suggest", {"q": ""})
    client.get("/suggest", {"q": ""}, **HTMX)
    client.get("/api/suggest", {"q": ""})
    assert client.get("/suggest", {"q": ""}, **HTMX).status_code == 429
    other = Client(REMOTE_ADDR="192.0.2.7")
    assert other.get("/api/suggest", {"q": ""}).status_code == 200


def test_off_means_never_limited(client: Client, small_corpus: Corpus, configure: Callable[..., None]) -> None:
    configure(RATE_LIMIT=False)
    assert {client.get("/api/suggest", {"q": ""}).status_code for _ in range(10)} == {200}


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    client: Client, small_corpus: Corpus, clock: Clock
) -> None:
    # A client cannot escape its limit by claiming other addresses.
    statuses = [
        client.get("/api/suggest", {"q": ""}, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def request_from(peer: str, forwarded: str | None = None) -> HttpRequest:
    extra: dict[str, Any] = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/api/suggest", REMOTE_ADDR=peer, **extra)


@pytest.mark.parametrize(
    ("proxies", "peer", "forwarded", "address"),
    [
        ((), "203.0.113.5", "198.51.100.1", "203.0.113.5"),
        (("10.0.0.1",), "203.0.113.5", "198.51.100.1", "203.0.113.5"),  # the peer is not our proxy
        (("10.0.0.1",), "10.0.0.1", "198.51.100.1", "198.51.100.1"),
        (("10.0.0.1",), "10.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # left part: client's claim
        (("10.0.0.0/8",), "10.2.3.4", "198.51.100.1, 10.9.9.9", "198.51.100.1"),  # two proxies of ours
        (("10.0.0.1", "2001:db8::/32"), "2001:db8::5", "2001:db8:1::1, 2a00::1", "2a00::1"),
        (("10.0.0.1",), "10.0.0.1", None, "10.0.0.1"),  # nothing forwarded: the proxy itself
        (("10.0.0.1",), "10.0.0.1", "not-an-address", "10.0.0.1"),
        (("10.0.0.0/8",), "10.0.0.1", "10.0.0.2", "10.0.0.1"),  # every hop ours
    ],
)
def test_client_address(
    configure: Callable[..., None], proxies: tuple[str, ...], peer: str, forwarded: str | None, address: str
) -> None:
    configure(TRUSTED_PROXIES=proxies)
    assert client_address(request_from(peer, forwarded)) == address


def test_clients_behind_a_trusted_proxy_are_counted_apart(
    client: Client, small_corpus: Corpus, configure: Callable[..., None], clock: Clock
) -> None:
    configure(TRUSTED_PROXIES="127.0.0.1")  # the test client's address, written as the variable is
    for _ in range(3):
        assert client.get("/api/suggest", {"q": ""}, HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 200
    assert client.get("/api/suggest", {"q": ""}, HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429
    assert client.get("/api/suggest", {"q": ""}, HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 200


def test_a_bad_trusted_proxy_entry_or_rate_is_refused_at_start_up() -> None:
    with pytest.raises(ImproperlyConfigured, match="neither an IP address nor a network"):
        AutocompleteSettings.from_dict({"TRUSTED_PROXIES": "10.0.0.1,proxy.internal"})
    for bad in ({"RATE_LIMIT_PER_SECOND": 0}, {"RATE_LIMIT_BURST": 0}):
        with pytest.raises(ImproperlyConfigured, match="set AUTOCOMPLETE_RATE_LIMIT=0"):
            AutocompleteSettings.from_dict(bad)
    assert AutocompleteSettings.from_dict({"RATE_LIMIT": False, "RATE_LIMIT_BURST": 0}).rate_limit is False


def test_the_check_costs_well_under_a_millisecond(configure: Callable[..., None]) -> None:
    """A micro-benchmark of the middleware's check and of a whole 429 answer (no view behind it)."""
    configure(RATE_LIMIT_PER_SECOND=0.001, RATE_LIMIT_BURST=1)  # one request per 1,000 s window

    def never_called(request: HttpRequest) -> HttpResponse:
        raise AssertionError("the limited request went on")

    middleware = SuggestFastPathMiddleware(never_called)
    # A request is counted once, however many times it is checked: each check gets a new one.
    requests = [request_from("203.0.113.9") for _ in range(4000)]
    check, answer = [], []
    for request in requests[:2000]:
        started = time.perf_counter()
        seconds_until_allowed(request)
        check.append(time.perf_counter() - started)
    for request in requests[2000:]:
        started = time.perf_counter()
        assert middleware(request).status_code == 429
        answer.append(time.perf_counter() - started)
    assert statistics.median(check) < 0.0002
    assert statistics.median(answer) < 0.001


def test_without_the_fast_path_a_mounted_app_is_still_limited(
    client: Client, small_corpus: Corpus, clock: Clock, configure: Callable[..., None], settings: Any
) -> None:
    """A site that mounts the app under a prefix, with none of this project's middleware."""
    settings.ROOT_URLCONF = "tests.mounted_urls"
    settings.MIDDLEWARE = SITE_MIDDLEWARE
    configure(CORS_ALLOWED_ORIGINS="https://help.example.com")
    origin: dict[str, Any] = {"HTTP_ORIGIN": "https://help.example.com"}
    statuses = [client.get("/autocomplete/api/suggest", {"q": "password"}, **origin).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/autocomplete/api/suggest", {"q": "password"}, **origin)
    assert response["Access-Control-Allow-Origin"] == "https://help.example.com"
    assert response.json()["error"].startswith("Too many requests")
    assert client.get("/autocomplete/suggest", {"q": "password"}, **HTMX).status_code == 429
