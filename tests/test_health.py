"""Health: /healthz and /readyz, a broken index file that takes down its corpus alone, the admin's
re-index hint, a re-index that repairs it, and visitors never shown a server path."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import Client

from autocomplete import search
from autocomplete.catalog import invalidate_catalog
from autocomplete.conf import app_settings
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus, IndexBuild
from autocomplete.parsing import parse_qa_file
from autocomplete.warmup import warm_up
from embeddings import vector_index

from .conftest import faq_csv

OTHER_FAQ = [
    ("How long does delivery take?", "Three to five working days."),
    ("Can I return a product?", "Yes, within thirty days of delivery."),
    ("Do you ship abroad?", "We ship to every country in the EU."),
]


@pytest.fixture
def two_corpora(small_corpus: Corpus) -> tuple[Corpus, Corpus]:
    """`small` and `shop`, both indexed with minilm."""
    shop = Corpus.objects.create(name="Shop", slug="shop", default_encoder="minilm")
    ingest_parsed(shop, parse_qa_file(faq_csv(OTHER_FAQ), filename="shop.csv"), encoder_key="minilm")
    invalidate_catalog()
    return small_corpus, shop


def index_path(corpus: Corpus) -> Path:
    return app_settings().index_dir / IndexBuild.objects.get(corpus=corpus, is_live=True).file_name


def valid_container_faiss_cannot_read(path: Path) -> None:
    """Rewrite an index file with a right header and checksum around a payload faiss cannot parse."""
    data = path.read_bytes()
    offset = len(vector_index.MAGIC)
    (length,) = struct.unpack_from("<I", data, offset)
    header = json.loads(data[offset + 4 : offset + 4 + length])
    payload = b"\x00garbage" * (header["payload_bytes"] // 8)
    header |= {"payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    raw = json.dumps(header).encode()
    path.write_bytes(vector_index.MAGIC + struct.pack("<I", len(raw)) + raw + payload)


def unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The session runs as root, which chmod does not stop: the refusal is injected at the read.
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


def directory_in_its_place(path: Path) -> None:
    path.unlink()
    path.mkdir()  # IsADirectoryError: an OSError that root meets too


BREAKAGES: dict[str, tuple[Callable[[Path, pytest.MonkeyPatch], object], str]] = {
    "truncated": (lambda p, _: p.write_bytes(p.read_bytes()[:-100]), "the index file is truncated"),
    "corrupt": (lambda p, _: p.write_bytes(p.read_bytes()[:-5] + b"XXXXX"), "the index file is corrupt"),
    "missing": (lambda p, _: p.unlink(), "the index file is missing"),
    "not an index": (lambda p, _: p.write_bytes(b"garbage"), "the index file is not in the format of this application"),
    "unreadable": (unreadable, "the index file cannot be read (permission denied)"),
    "a directory": (lambda p, _: directory_in_its_place(p), "the index file cannot be read (is a directory)"),
    "faiss cannot parse": (lambda p, _: valid_container_faiss_cannot_read(p), "the index file is corrupt"),
}


# --- /healthz ------------------------------------------------------------------------------------


def test_healthz_answers_without_database_session_or_host_check(client: Client) -> None:
    # No `db` fixture: pytest-django fails any database access in this test.
    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert response["Cache-Control"].startswith("max-age=0") and "no-store" in response["Cache-Control"]
    assert not hasattr(response.wsgi_request, "session")
    assert client.post("/healthz").status_code == 405


# --- /readyz -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_lists_corpora_when_every_live_index_is_loaded(
    client: Client, two_corpora: tuple[Corpus, Corpus], django_assert_max_num_queries: Any
) -> None:
    search.forget_loaded()
    response = client.get("/readyz")  # loads what warm-up would have: a process joining later gets ready
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "corpora": {"shop": {"minilm": "ready"}, "small": {"minilm": "ready"}},
    }
    assert not hasattr(response.wsgi_request, "session")
    # Once loaded: the ping and at most a catalog read (corpora, live builds, synonyms, rules, query encoders).
    with django_assert_max_num_queries(6):
        assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_503_while_the_database_is_unreachable_and_recovers(client: Client, small_corpus: Corpus) -> None:
    assert client.get("/readyz").status_code == 200
    with connection.execute_wrapper(database_down):
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200
    assert (response.status_code, response.json()["reason"]) == (503, "The database cannot be reached.")
    assert client.get("/readyz").status_code == 200


def database_down(*args: object) -> None:
    raise OperationalError("could not connect to server: Connection refused")


@pytest.mark.django_db
def test_readyz_names_an_encoder_that_cannot_load_without_its_path(
    client: Client, small_corpus: Corpus, configure: Callable[..., None], tmp_path: Path
) -> None:
    weights = tmp_path / "private-weights-dir-5e1f"
    configure(ENCODERS={**app_settings().encoders, "minilm": {"BACKEND": "onnx-int8", "PATH": str(weights)}})
    search.forget_loaded()
    ready = client.get("/readyz")
    suggest = client.get("/api/suggest", {"q": "password"})
    assert ready.status_code == 503 and suggest.status_code == 503
    assert "corpus 'small' (minilm): the encoder cannot be loaded" in ready.json()["reason"]
    assert "encoder 'minilm' cannot be loaded" in suggest.json()["error"]
    for response in (ready, suggest, client.get("/", {"q": "password"})):
        assert str(weights) not in response.content.decode()
        assert str(tmp_path) not in response.content.decode()


# --- a broken index file -------------------------------------------------------------------------


@pytest.fixture
def distinctive_index_dir(configure: Callable[..., None], tmp_path: Path) -> Iterator[Path]:
    """An index directory whose path no answer may show."""
    directory = tmp_path / "srv-secret-location-7c2d" / "indexes"
    configure(INDEX_DIR=directory)
    search.forget_loaded()
    yield directory


@pytest.mark.django_db
@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_index_takes_down_its_corpus_alone_until_reindexed(
    breakage: str,
    distinctive_index_dir: Path,
    two_corpora: tuple[Corpus, Corpus],
    client: Client,
    admin_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    small, shop = two_corpora
    path = index_path(shop)
    breaks, reason = BREAKAGES[breakage]
    search.forget_loaded()
    breaks(path, monkeypatch)

    assert warm_up() >= 0  # never raises; the healthy corpus is loaded
    api = client.get("/api/suggest", {"q": "delivery", "corpus": "shop"})
    assert api.status_code == 503 and reason in api.json()["error"] and "re-index" in api.json()["error"]
    assert client.get("/api/suggest", {"q": "reset my password", "corpus": "small"}).status_code == 200
    partial = client.get("/suggest", {"q": "delivery", "corpus": "shop"}, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and reason in partial.content.decode()
    page = client.get("/", {"q": "delivery", "corpus": "shop"})
    assert page.status_code == 503 and reason in page.content.decode()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"] == f"Cannot serve corpus 'shop' (minilm): {reason}."
    assert ready.json()["corpora"] == {"shop": {"minilm": reason}, "small": {"minilm": "ready"}}
    for response in (api, partial, page, ready):
        assert str(distinctive_index_dir) not in response.content.decode()
        assert "srv-secret-location" not in response.content.decode()
    assert str(distinctive_index_dir) in caplog.text  # the log keeps the details

    changelist = admin_client.get("/admin/autocomplete/corpus/").content.decode()
    assert f"minilm: needs re-index ({reason})" in changelist
    change = admin_client.get(f"/admin/autocomplete/corpus/{shop.pk}/change/").content.decode()
    assert f"The minilm index needs a re-index: {reason}." in change

    monkeypatch.undo()
    if path.is_dir():
        path.rmdir()
    call_command("reindex", "shop", stdout=io.StringIO())
    assert client.get("/api/suggest", {"q": "delivery", "corpus": "shop"}).status_code == 200
    assert client.get("/readyz").status_code == 200
    assert "needs re-index" not in admin_client.get("/admin/autocomplete/corpus/").content.decode()


@pytest.mark.django_db
def test_a_broken_file_is_not_read_again_on_every_request(
    client: Client, small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = index_path(small_corpus)
    path.write_bytes(path.read_bytes()[:-100])
    search.forget_loaded()
    reads: list[Path] = []
    original = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    for _ in range(5):
        assert client.get("/api/suggest", {"q": "password"}).status_code == 503
    assert reads.count(path) == 1
    path.write_bytes(b"restored, but still no index")  # a changed file is tried again
    assert client.get("/api/suggest", {"q": "password"}).status_code == 503
    assert reads.count(path) == 2


@pytest.mark.django_db
def test_the_admin_check_reads_the_header_only(small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    from autocomplete.health import corpus_index_problems

    def no_full_read(self: Path) -> bytes:
        raise AssertionError("the admin loaded a whole index file")

    monkeypatch.setattr(Path, "read_bytes", no_full_read)
    assert corpus_index_problems(small_corpus) == {}


# --- warm-up ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_warm_up_never_raises_whatever_fails(
    small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    search.forget_loaded()
    with connection.execute_wrapper(database_down):
        assert warm_up() >= 0
    assert "Warm-up skipped: the catalog cannot be read" in caplog.text

    def unexpected(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr("autocomplete.warmup.suggestions_for", unexpected)
    assert warm_up() >= 0
    assert "Warm-up of small/minilm failed" in caplog.text and "something nobody foresaw" in caplog.text
