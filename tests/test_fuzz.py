"""No input gives a 500: arbitrary query strings thrown at the JSON API, the HTMX partial and the page.

Every answer is a 200 or a 4xx (the API's 4xx with a JSON `error`), within a bounded time, against
the real indexed `small_corpus`. Values travel percent-encoded as a client would send them, or as raw
bytes (invalid UTF-8, lone surrogates, overlong sequences) that no client should send.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote, quote_from_bytes

import pytest
from django.conf import settings as django_settings
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from autocomplete.models import Corpus

pytestmark = pytest.mark.django_db

# Generous for a loaded two-core machine: a keystroke takes milliseconds.
TIME_LIMIT_SECONDS = 2.0
# Enough to find a crash in each surface, few enough that the file runs in well under a minute.
FUZZ = settings(max_examples=60, deadline=None, database=None)

# Byte sequences that are not UTF-8, as they arrive percent-encoded in a URL.
HOSTILE_BYTES = [
    "%ED%A0%80",  # a lone high surrogate (U+D800) encoded as if it were a character
    "%ED%BF%BF",  # a lone low surrogate
    "%ED%A0%BD%ED%B8%80",  # a surrogate pair written as two characters (CESU-8)
    "%C0%AF",  # an overlong "/"
    "%C0%80",  # an overlong NUL
    "%E0%80%AF",  # a three-byte overlong "/"
    "%F4%90%80%80",  # beyond U+10FFFF
    "%FF%FE",  # bytes that never appear in UTF-8
    "%00",
    "%0D%0ASet-Cookie:%20x=1",  # a header injection attempt
    "%",
    "%zz",
    "%E2%80%AE",  # right-to-left override
    "%EF%BB%BF",  # a byte order mark
]

text_values = st.text(max_size=60)  # any Unicode a client can encode: controls, NUL, combining marks
long_values = st.sampled_from(["x" * 201, "é" * 300, "how do i " * 600, "\u0301" * 5000, "😀" * 2000])
k_values = st.sampled_from(
    ["", " ", "-1", "0", "1", "20", "21", "-99999", "9" * 5000, "1.5", "5.0", "1e3", "NaN", "inf", "0x10", "٣", "+5"]
)
corpus_values = st.sampled_from(["small", "", "nope", "SMALL", "small\x00", "../small", "small/", "<script>", "é"])
encoder_values = st.sampled_from(["minilm", "", "ivysaur", "gist-small", "nope", "__proto__", "minilm\x00", "MINILM"])
names = st.sampled_from(["q", "corpus", "k", "encoder"]) | st.text(max_size=8)


def _encoded(value: str) -> str:
    return quote(value, safe="")


encoded_values = st.one_of(
    text_values.map(_encoded),
    long_values.map(_encoded),
    k_values.map(_encoded),
    corpus_values.map(_encoded),
    encoder_values.map(_encoded),
    st.binary(max_size=40).map(lambda raw: quote_from_bytes(raw, safe="")),
    st.lists(st.sampled_from(HOSTILE_BYTES), min_size=1, max_size=4).map("".join),
)
# Repeated and unknown parameters included: a list of name=value pairs, in any order.
query_strings = st.lists(st.tuples(names.map(_encoded), encoded_values), max_size=6).map(
    lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)
)
# What a broken client might put on the wire without encoding it at all.
raw_query_strings = st.text(max_size=80)

SURFACES = {
    "api": ("/api/suggest", {}),
    "partial": ("/suggest", {"HX-Request": "true"}),
    "partial-without-htmx": ("/suggest", {}),
    "page": ("/", {}),
}


def check_answer(client: Client, path: str, headers: dict[str, str], query_string: str) -> None:
    """One request: a 200 or a 4xx (JSON with an error from the API), within the time limit."""
    started = time.perf_counter()
    response = client.get(f"{path}?{query_string}", headers=headers)
    if response.status_code == 302 and path == "/suggest" and not headers:
        # Without htmx the partial sends the visitor to the page with the same parameters.
        location = response["Location"]
        assert location.startswith("/?")
        response = client.get(location)
        path = "/"
    elapsed = time.perf_counter() - started
    status = response.status_code
    assert status == 200 or 400 <= status < 500, (path, query_string, status, response.content[:500])
    assert elapsed < TIME_LIMIT_SECONDS, (path, query_string, elapsed)
    if path == "/api/suggest":
        assert response["Content-Type"] == "application/json"
        body = response.json()
        if status == 200:
            assert isinstance(body["suggestions"], list)
        else:
            assert isinstance(body["error"], str) and body["error"]
    else:
        assert response["Content-Type"].startswith("text/html")


@pytest.fixture
def warm_client(client: Client, small_corpus: Corpus) -> Client:
    """A client whose first request has loaded the index, so the time limit measures answering."""
    assert client.get("/api/suggest?q=warm+up").status_code == 200
    return client


Check = Callable[[str], None]


def _checker(client: Client, surface: str) -> Check:
    path, headers = SURFACES[surface]
    return lambda query_string: check_answer(client, path, headers, query_string)


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_arbitrary_parameters_never_give_a_server_error(warm_client: Client, surface: str) -> None:
    check = _checker(warm_client, surface)

    @FUZZ
    @given(query_strings)
    def run(query_string: str) -> None:
        check(query_string)

    run()


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_unencoded_query_strings_never_give_a_server_error(warm_client: Client, surface: str) -> None:
    check = _checker(warm_client, surface)

    @FUZZ
    @given(raw_query_strings)
    def run(query_string: str) -> None:
        check(query_string)

    run()


KNOWN_HOSTILE = [
    "q=" + "".join(HOSTILE_BYTES),
    "q=%ED%A0%80&corpus=small&k=5&encoder=minilm",
    "q=password&k=" + "9" * 5000,
    "q=password&k=-1&k=3&k=",
    "q=password&corpus=small&corpus=nope",
    "q=" + "x" * 100_000,
    "q=password&" + "&".join(f"extra{i}=1" for i in range(50)),
    "q=password&encoder=%00",
    "q=%00",
    "q&corpus&k&encoder",
    "=&==&&&",
]


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_known_hostile_query_strings(warm_client: Client, surface: str) -> None:
    check = _checker(warm_client, surface)
    for query_string in KNOWN_HOSTILE:
        check(query_string)


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_more_parameters_than_django_parses_is_a_client_error(warm_client: Client, surface: str) -> None:
    too_many = django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1
    _checker(warm_client, surface)("&".join(f"p{i}=1" for i in range(too_many)))
    if surface == "api":
        body = warm_client.get("/api/suggest?" + "&".join(f"p{i}=1" for i in range(too_many))).json()
        assert body == {"error": "Too many query parameters: send only q, corpus, k, encoder, tags and highlight."}


def test_a_lone_surrogate_is_read_as_a_replacement_character(warm_client: Client) -> None:
    body = warm_client.get("/api/suggest?q=pass%ED%A0%80word").json()
    assert body["query"] == "pass\ufffd\ufffd\ufffdword"
