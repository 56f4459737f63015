"""The catalog while the database is away: the last snapshot keeps serving, a failure is never kept."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection

from autocomplete import catalog as catalog_module
from autocomplete.catalog import catalog, invalidate_catalog
from autocomplete.models import Corpus

pytestmark = pytest.mark.django_db


def database_down(*args: object) -> None:
    raise OperationalError("could not connect to server: Connection refused")


def test_without_a_snapshot_an_outage_raises_and_the_next_read_succeeds(small_corpus: Corpus) -> None:
    invalidate_catalog()
    with connection.execute_wrapper(database_down), pytest.raises(OperationalError):
        catalog()
    assert catalog_module._catalog is None  # nothing of the failure is kept
    assert list(catalog().corpora) == ["small"]


def test_the_last_snapshot_serves_through_an_outage_then_the_database_is_read_again(
    small_corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    known = catalog()  # the test settings make every call past the TTL (0 s): each one reads again
    with connection.execute_wrapper(database_down):
        assert catalog() is known and catalog() is known
    assert caplog.text.count("The database cannot be reached") == 1  # once per outage, not per request
    Corpus.objects.create(name="New", slug="new")
    assert sorted(catalog().corpora) == ["new", "small"]
    assert "The database is back" in caplog.text
