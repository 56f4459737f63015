"""POST /api/events: good events are stored without personal data, bad ones get a 400 and store nothing."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from autocomplete import api_keys
from autocomplete.conf import app_settings
from autocomplete.ingest import ingest_parsed
from autocomplete.models import ApiKey, Corpus, QAPair, SearchEvent
from autocomplete.parsing import parse_qa_file
from tests.conftest import faq_csv


def ids(corpus: Corpus, count: int = 3) -> list[int]:
    return list(QAPair.objects.filter(corpus=corpus).order_by("id").values_list("id", flat=True)[:count])


def event(corpus: Corpus, **fields: Any) -> dict[str, Any]:
    return {
        "corpus": corpus.slug,
        "encoder": "minilm",
        "page_view": uuid.uuid4().hex,
        "query": "  reset   my password ",
        "shown_ids": ids(corpus),
        "trigger": "pause",
    } | fields


def post(client: Client, body: Any, **headers: Any) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/api/events", data, content_type="application/json", **headers)


def test_a_settled_query_is_stored_normalised_and_without_personal_data(client: Client, small_corpus: Corpus) -> None:
    response = post(client, event(small_corpus), HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 201, response.content
    stored = SearchEvent.objects.get()
    assert stored.query == "reset my password"
    assert stored.shown_ids == ids(small_corpus)
    assert (stored.chosen_pair_id, stored.chosen_position, stored.trigger) == (None, None, "pause")
    assert response.json() == {"id": stored.pk}
    assert "Set-Cookie" not in response
    row = json.dumps(list(SearchEvent.objects.values()), default=str)
    assert "203.0.113.9" not in row and "Mozilla" not in row


def test_a_choice_completes_the_settled_query_of_its_page_view(client: Client, small_corpus: Corpus) -> None:
    settled = event(small_corpus)
    assert post(client, settled).status_code == 201
    shown = settled["shown_ids"]
    choice = settled | {"trigger": "choice", "chosen_id": shown[1], "chosen_position": 2}
    assert post(client, choice).status_code == 201
    stored = SearchEvent.objects.get()
    assert (stored.chosen_pair_id, stored.chosen_position, stored.trigger) == (shown[1], 2, "pause")
    # Another page view's choice of the same text is its own settled query.
    assert post(client, choice | {"page_view": uuid.uuid4().hex}).status_code == 201
    assert SearchEvent.objects.count() == 2


def test_a_choice_from_the_empty_box_needs_no_query(client: Client, small_corpus: Corpus) -> None:
    shown = ids(small_corpus)
    response = post(client, event(small_corpus, query="", trigger="choice", chosen_id=shown[0], encoder=None))
    assert response.status_code == 201, response.content
    assert SearchEvent.objects.get().encoder == "minilm"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trigger": "keystroke"}, "trigger must be one of"),
        ({"query": ""}, "query is empty"),
        ({"query": "x" * 201}, "at most 200"),
        ({"query": 5}, "query must be"),
        ({"page_view": "short"}, "page_view must be"),
        ({"page_view": "../../etc/passwd"}, "page_view must be"),
        ({"shown_ids": [1, 1]}, "none twice"),
        ({"shown_ids": ["1"]}, "shown_ids must be a list"),
        ({"shown_ids": [True]}, "shown_ids must be a list"),
        ({"shown_ids": list(range(1, 30))}, "at most 20"),
        ({"chosen_id": 10**9, "trigger": "choice"}, "chosen_id must be one of shown_ids"),
        ({"chosen_id": None, "trigger": "choice"}, "chosen_id is required"),
        ({"corpus": "nope"}, "Unknown corpus"),
        ({"corpus": 3}, "corpus must be"),
        ({"encoder": "ivysaur"}, "has no index for encoder"),
        ({"ip": "203.0.113.9"}, "Unknown field(s) ip"),
    ],
)
def test_a_bad_event_is_400_with_the_fix_and_nothing_is_stored(
    client: Client, small_corpus: Corpus, change: dict[str, Any], message: str
) -> None:
    response = post(client, event(small_corpus) | change)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not SearchEvent.objects.exists()


def test_a_wrong_position_a_missing_field_or_not_json_is_400(client: Client, small_corpus: Corpus) -> None:
    shown = ids(small_corpus)
    wrong = event(small_corpus, trigger="choice", chosen_id=shown[0], chosen_position=3)
    assert "shown at position 1" in post(client, wrong).json()["error"]
    missing = event(small_corpus)
    del missing["shown_ids"]
    assert "Missing field(s): shown_ids" in post(client, missing).json()["error"]
    assert "not JSON" in post(client, b"{nope").json()["error"]
    assert "JSON object" in post(client, "[1, 2]").json()["error"]
    assert "at most 4,096" in post(client, event(small_corpus, query="x" * 5000)).json()["error"]
    assert not SearchEvent.objects.exists()


def test_ids_of_another_corpus_are_refused(client: Client, small_corpus: Corpus) -> None:
    other = Corpus.objects.create(name="Other", slug="other", default_encoder="minilm")
    ingest_parsed(
        other, parse_qa_file(faq_csv([("Where is the office?", "Berlin.")]), filename="o.csv"), encoder_key="minilm"
    )
    response = post(client, event(small_corpus, shown_ids=ids(other)))
    assert response.status_code == 400
    assert "not QA pairs of corpus 'small'" in response.json()["error"]


def test_a_page_view_past_the_cap_is_refused(
    client: Client, small_corpus: Corpus, configure: Callable[..., None]
) -> None:
    configure(EVENTS_PER_PAGE_VIEW=2)
    page_view = uuid.uuid4().hex
    statuses = [post(client, event(small_corpus, page_view=page_view, query=f"q {n}")).status_code for n in range(4)]
    assert statuses == [201, 201, 429, 429]
    assert SearchEvent.objects.count() == 2
    assert post(client, event(small_corpus)).status_code == 201


def test_a_private_corpus_takes_events_only_with_its_key(client: Client, small_corpus: Corpus) -> None:
    private = Corpus.objects.create(name="Internal", slug="internal", default_encoder="minilm", is_private=True)
    ingest_parsed(
        private, parse_qa_file(faq_csv([("Book a room?", "Rooms tab.")]), filename="i.csv"), encoder_key="minilm"
    )
    api_keys.forget_grants()
    body = event(private, shown_ids=ids(private))
    assert post(client, body).status_code == 401
    key, digest = api_keys.new_key()
    ApiKey.objects.create(name="widget", key_sha256=digest, prefix=key[:9]).corpora.set([private])
    assert post(client, body, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 201
    assert SearchEvent.objects.get().corpus == private


def test_only_post_and_only_when_events_are_on(
    client: Client, small_corpus: Corpus, configure: Callable[..., None]
) -> None:
    response = client.get("/api/events")
    assert (response.status_code, response["Allow"]) == (405, "POST")
    configure(EVENTS=False)
    response = post(client, event(small_corpus))
    assert response.status_code == 404 and "AUTOCOMPLETE_EVENTS=0" in response.json()["error"]
    assert not SearchEvent.objects.exists()


def test_a_pair_deleted_later_keeps_its_past_choices(client: Client, small_corpus: Corpus) -> None:
    shown = ids(small_corpus)
    post(client, event(small_corpus, trigger="choice", chosen_id=shown[0]))
    QAPair.objects.filter(pk=shown[0]).delete()
    assert SearchEvent.objects.get().chosen_pair_id == shown[0]


# --- retention -------------------------------------------------------------------------------------


def stored(corpus: Corpus, *, days_ago: float) -> SearchEvent:
    return SearchEvent.objects.create(
        corpus=corpus,
        encoder="minilm",
        page_view=uuid.uuid4().hex,
        query="old",
        trigger="pause",
        created_at=timezone.now() - datetime.timedelta(days=days_ago),
    )


def test_events_past_the_retention_are_deleted_by_the_command(
    small_corpus: Corpus, configure: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    configure(EVENT_RETENTION_DAYS=30)
    kept, _ = stored(small_corpus, days_ago=29), stored(small_corpus, days_ago=31)
    call_command("purge_events")
    assert list(SearchEvent.objects.all()) == [kept]
    assert "Deleted 1 search event" in capsys.readouterr().out


def test_the_first_event_of_a_day_queues_the_purge(client: Client, small_corpus: Corpus) -> None:
    old = stored(small_corpus, days_ago=91)
    caches[app_settings().rate_limit_cache].clear()  # as on a new day
    assert post(client, event(small_corpus)).status_code == 201
    assert not SearchEvent.objects.filter(pk=old.pk).exists()
    again = stored(small_corpus, days_ago=91)
    assert post(client, event(small_corpus)).status_code == 201
    # Once a day, not per event: the second one's purge waits for tomorrow.
    assert SearchEvent.objects.filter(pk=again.pk).exists()
