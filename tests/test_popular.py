"""The empty box's list: the most chosen questions lately, then featured ones, counted once per cache period."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

from django.test import Client
from django.utils import timezone

from autocomplete.models import Corpus, QAPair, SearchEvent
from autocomplete.popular import forget_popular, popular_suggestions


def pairs(corpus: Corpus) -> list[QAPair]:
    return list(QAPair.objects.filter(corpus=corpus).order_by("id"))


def chose(pair: QAPair, *, times: int, days_ago: float = 1) -> None:
    for _ in range(times):
        SearchEvent.objects.create(
            corpus=pair.corpus,
            encoder="minilm",
            page_view=uuid.uuid4().hex,
            query="q",
            shown_ids=[pair.pk],
            chosen_pair=pair,
            chosen_position=1,
            trigger="choice",
            created_at=timezone.now() - datetime.timedelta(days=days_ago),
        )


def questions(corpus: Corpus, k: int = 5) -> list[str]:
    return [s.question for s in popular_suggestions(corpus.id, k=k)]


def test_the_most_chosen_lately_come_first_then_featured_ones(small_corpus: Corpus) -> None:
    faq = pairs(small_corpus)
    chose(faq[3], times=3)
    chose(faq[1], times=2)
    chose(faq[5], times=9, days_ago=31)  # older than POPULAR_DAYS (30): not counted
    QAPair.objects.filter(pk__in=[faq[8].pk, faq[1].pk]).update(is_featured=True)
    assert questions(small_corpus) == [faq[3].question, faq[1].question, faq[8].question]
    assert questions(small_corpus, k=1) == [faq[3].question]


def test_featured_ones_alone_and_none_when_neither(small_corpus: Corpus) -> None:
    assert questions(small_corpus) == []
    forget_popular()
    faq = pairs(small_corpus)
    QAPair.objects.filter(pk__in=[faq[7].pk, faq[2].pk]).update(is_featured=True)
    assert questions(small_corpus) == [faq[2].question, faq[7].question]


def test_a_pair_deleted_since_is_left_out(small_corpus: Corpus) -> None:
    faq = pairs(small_corpus)
    chose(faq[0], times=2)
    chose(faq[4], times=1)
    faq[0].delete()
    assert questions(small_corpus) == [faq[4].question]


def test_counted_once_per_cache_period(
    small_corpus: Corpus, django_assert_num_queries: Any, configure: Callable[..., None]
) -> None:
    faq = pairs(small_corpus)
    chose(faq[2], times=1)
    questions(small_corpus)
    chose(faq[6], times=5)
    with django_assert_num_queries(0):
        assert questions(small_corpus) == [faq[2].question]
    configure(POPULAR_CACHE_SECONDS=0.0)
    assert questions(small_corpus)[0] == faq[6].question


def test_the_empty_box_gets_the_popular_list(client: Client, small_corpus: Corpus) -> None:
    faq = pairs(small_corpus)
    chose(faq[4], times=2)
    response = client.get("/suggest", {"q": " ", "corpus": "small"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'aria-label="Popular questions"' in html and "data-zero-state" in html
    assert faq[4].question in html and f'data-id="{faq[4].pk}"' in html
    typed = client.get("/suggest", {"q": "invoices", "corpus": "small"}, HTTP_HX_REQUEST="true").content.decode()
    assert "data-zero-state" not in typed and 'aria-label="Suggested questions"' in typed
