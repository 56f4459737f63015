"""Keys: visitors' choices and imported wordings that find a pair besides its question."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from autocomplete.events import purge_old_events
from autocomplete.keys import learn_keys, remove_keys
from autocomplete.models import Corpus, PairKey, QAPair, SearchEvent
from autocomplete.search import suggestions_for

# A wording no question of the small FAQ resembles, and a paraphrase of it.
KEY = "my phone with the authenticator app was stolen"
PARAPHRASE = "stolen phone authenticator"


def pair(corpus: Corpus, question: str) -> QAPair:
    return QAPair.objects.get(corpus=corpus, question=question)


def choose(
    corpus: Corpus, chosen: QAPair, query: str, *, page_view: str | None = None, days_ago: float = 0
) -> SearchEvent:
    return SearchEvent.objects.create(
        corpus=corpus,
        encoder="minilm",
        page_view=page_view or uuid.uuid4().hex,
        query=query,
        shown_ids=[chosen.pk],
        shown_count=1,
        chosen_pair=chosen,
        chosen_position=1,
        trigger="pause",
        created_at=timezone.now() - datetime.timedelta(days=days_ago),
    )


def live_keys(corpus: Corpus) -> list[tuple[str, int]]:
    return list(PairKey.objects.filter(pair__corpus=corpus, removed_at__isnull=True).values_list("text", "pair_id"))


@pytest.fixture
def support(small_corpus: Corpus, configure: Callable[..., None]) -> QAPair:
    configure(KEY_MIN_PAGE_VIEWS=3, KEY_LEARN_INTERVAL_SECONDS=0)
    return pair(small_corpus, "How do I contact support?")


def test_a_choice_becomes_a_key_once_enough_distinct_page_views_made_it(small_corpus: Corpus, support: QAPair) -> None:
    first = uuid.uuid4().hex
    choose(small_corpus, support, KEY, page_view=first)
    choose(small_corpus, support, KEY.upper(), page_view=first)  # the same page view counts once
    choose(small_corpus, support, KEY)
    learn_keys(small_corpus.pk)
    assert live_keys(small_corpus) == []
    choose(small_corpus, support, f"  {KEY} ")
    report = learn_keys(small_corpus.pk)
    assert live_keys(small_corpus) == [(KEY, support.pk)]
    assert (report.added, PairKey.objects.get().page_views) == (1, 3)


def test_learnt_keys_go_with_their_events(
    small_corpus: Corpus, support: QAPair, configure: Callable[..., None]
) -> None:
    configure(EVENT_RETENTION_DAYS=30)
    for _ in range(3):
        choose(small_corpus, support, KEY, days_ago=40)
    learn_keys(small_corpus.pk)
    assert live_keys(small_corpus) == [(KEY, support.pk)]
    assert purge_old_events() == 3
    assert PairKey.objects.count() == 0


def test_a_key_the_owner_removed_is_not_learnt_again_from_the_same_events(
    small_corpus: Corpus, support: QAPair
) -> None:
    for _ in range(3):
        choose(small_corpus, support, KEY, days_ago=1)
    learn_keys(small_corpus.pk)
    assert remove_keys(PairKey.objects.all()) == 1
    choose(small_corpus, support, KEY)  # one more page view is not enough to teach it again
    learn_keys(small_corpus.pk)
    assert live_keys(small_corpus) == []
    for _ in range(2):
        choose(small_corpus, support, KEY)
    learn_keys(small_corpus.pk)  # three page views since the removal: visitors insist
    assert live_keys(small_corpus) == [(KEY, support.pk)]


def test_a_choice_posted_to_the_api_teaches_keys(client: object, small_corpus: Corpus, support: QAPair) -> None:
    from django.test import Client

    assert isinstance(client, Client)
    for _ in range(3):
        body = {
            "corpus": "small",
            "page_view": uuid.uuid4().hex,
            "query": KEY,
            "shown_ids": [support.pk],
            "chosen_id": support.pk,
            "trigger": "choice",
        }
        assert client.post("/api/events", body, content_type="application/json").status_code == 201
    assert live_keys(small_corpus) == [(KEY, support.pk)]


def test_a_key_finds_its_pair_for_a_paraphrase_and_nothing_for_unrelated_input(
    small_corpus: Corpus, support: QAPair
) -> None:
    before = [s.id for s in suggestions_for(PARAPHRASE, corpus="small", k=1).suggestions]
    assert before != [support.pk]
    unrelated = ["banana bread recipe with walnuts", "qwzx vbnm"]
    unrelated_before = {q: [s.id for s in suggestions_for(q, corpus="small", k=5).suggestions] for q in unrelated}
    for _ in range(3):
        choose(small_corpus, support, KEY)
    learn_keys(small_corpus.pk)
    assert [s.id for s in suggestions_for(PARAPHRASE, corpus="small", k=1).suggestions] == [support.pk]
    for query, shown in unrelated_before.items():
        assert [s.id for s in suggestions_for(query, corpus="small", k=5).suggestions] == shown
        assert support.pk not in shown


def test_import_keys_adds_keys_and_says_which_line_is_wrong(
    small_corpus: Corpus, support: QAPair, tmp_path: Path
) -> None:
    good = tmp_path / "tickets.csv"
    good.write_text(f"query,target_id\r\n{KEY},{support.pk}\r\n{KEY},{support.pk}\r\n", encoding="utf-8")
    call_command("import_keys", str(good), corpus="small")
    assert list(PairKey.objects.values_list("text", "source")) == [(KEY, "import")]
    assert [s.id for s in suggestions_for(PARAPHRASE, corpus="small", k=1).suggestions] == [support.pk]

    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"query,target_id\r\nfine,{support.pk}\r\nlost,999999\r\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"line 3: target_id '999999' is not a pair of corpus 'small'"):
        call_command("import_keys", str(unknown), corpus="small")
    empty = tmp_path / "empty.csv"
    empty.write_text(f"query,target_id\r\n ,{support.pk}\r\n", encoding="utf-8")
    with pytest.raises(CommandError, match="line 2: the query is empty"):
        call_command("import_keys", str(empty), corpus="small")
    columns = tmp_path / "columns.csv"
    columns.write_text("text,id\r\nx,1\r\n", encoding="utf-8")
    with pytest.raises(CommandError, match="lacks the column"):
        call_command("import_keys", str(columns), corpus="small")
    with pytest.raises(CommandError, match="Unknown corpus 'nope'"):
        call_command("import_keys", str(good), corpus="nope")
    assert PairKey.objects.count() == 1  # nothing of a bad file is kept


def test_the_owner_sees_and_removes_a_pairs_keys_in_the_admin(
    admin_client: Any, small_corpus: Corpus, support: QAPair
) -> None:
    for _ in range(3):
        choose(small_corpus, support, KEY)
    learn_keys(small_corpus.pk)
    url = f"/admin/autocomplete/qapair/{support.pk}/change/"
    assert KEY in admin_client.get(url).content.decode()
    key = PairKey.objects.get()
    form = {
        "corpus": small_corpus.pk,
        "external_id": support.external_id,
        "question": support.question,
        "answer": support.answer,
        "url": support.url,
        "tags": support.tags,
        "keys-TOTAL_FORMS": 1,
        "keys-INITIAL_FORMS": 1,
        "keys-MIN_NUM_FORMS": 0,
        "keys-MAX_NUM_FORMS": 1000,
        "keys-0-id": key.pk,
        "keys-0-pair": support.pk,
        "keys-0-DELETE": "on",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    key.refresh_from_db()
    assert key.removed_at is not None
    assert KEY not in admin_client.get(url).content.decode()
    assert [s.id for s in suggestions_for(PARAPHRASE, corpus="small", k=1).suggestions] != [support.pk]
