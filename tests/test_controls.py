"""The owner's controls through the JSON endpoint: tag filters, pinned and hidden answers, synonyms."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from autocomplete import search
from autocomplete.catalog import announce_catalog_change
from autocomplete.controls import (
    SynonymFileError,
    normalise_typed,
    parse_synonym_csv,
    parse_tags,
    synonym_csv_rows,
)
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus, QAPair, Rule, RuleAnswer, Synonym
from autocomplete.parsing import parse_qa_file
from embeddings.encoders import Encoder

from .conftest import SMALL_FAQ

pytestmark = pytest.mark.django_db

# Billing questions carry "billing", account questions "account"; one carries both.
TAGS = {
    "How do I reset my password?": "account",
    "How can I change my email address?": "Account",
    "Where can I download my invoices?": "billing",
    "How do I cancel my subscription?": "billing|account",
    "What payment methods do you accept?": "billing",
    "Why was my card declined?": "billing",
    "How do I delete my account?": "account",
}


def tagged_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "answer", "tags"])
    writer.writerows([question, answer, TAGS.get(question, "")] for question, answer in SMALL_FAQ)
    return out.getvalue().encode()


@pytest.fixture
def tagged_corpus(db: None, minilm: Encoder) -> Corpus:
    corpus = Corpus.objects.create(name="Tagged FAQ", slug="tagged", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(tagged_csv(), filename="faq.csv"), encoder_key="minilm")
    return corpus


def suggest(client: Client, q: str, **params: str) -> list[dict[str, object]]:
    response = client.get("/api/suggest", {"q": q, "corpus": "tagged", "k": "5", **params})
    assert response.status_code == 200, response.content
    suggestions: list[dict[str, object]] = response.json()["suggestions"]
    return suggestions


def questions(client: Client, q: str, **params: str) -> list[object]:
    return [s["question"] for s in suggest(client, q, **params)]


def first_is_pinned(client: Client, q: str) -> bool:
    got = suggest(client, q)
    return bool(got) and got[0].get("pinned") is True


def pair(question: str) -> QAPair:
    return QAPair.objects.get(question=question)


def changed() -> None:
    """What the admin does after a change: every process reads the controls again."""
    announce_catalog_change()


# --- tags ------------------------------------------------------------------------------------------


def test_tags_restrict_suggestions_to_pairs_with_any_of_them(client: Client, tagged_corpus: Corpus) -> None:
    unfiltered = questions(client, "how do i")
    billing = questions(client, "how do i", tags="billing")
    assert billing and set(billing) <= {q for q, t in TAGS.items() if "billing" in t}
    assert set(billing) != set(unfiltered)
    either = questions(client, "how do i", tags="BILLING, account")
    assert set(billing) <= set(either) or len(either) == 5
    assert set(either) <= set(TAGS)


def test_a_filter_finds_its_pairs_even_when_others_rank_higher(client: Client, tagged_corpus: Corpus) -> None:
    # The password question ranks first unfiltered; filtered on billing it must not appear at all,
    # and billing's best match for the words still does.
    assert questions(client, "reset my password")[0] == "How do I reset my password?"
    filtered = questions(client, "reset my password card", tags="billing")
    assert "How do I reset my password?" not in filtered
    assert "Why was my card declined?" in filtered


def test_unknown_tags_give_an_empty_list_not_an_error(client: Client, tagged_corpus: Corpus) -> None:
    assert suggest(client, "how do i", tags="no-such-tag") == []
    got = questions(client, "invoices", tags="no-such-tag,billing")
    assert got[0] == "Where can I download my invoices?"
    assert set(got) <= {q for q, t in TAGS.items() if "billing" in t}


def test_an_empty_tags_parameter_filters_nothing(client: Client, tagged_corpus: Corpus) -> None:
    assert questions(client, "is there a mobile", tags=" , ") == questions(client, "is there a mobile")


def test_too_many_tags_are_refused_with_the_limit(client: Client, tagged_corpus: Corpus) -> None:
    response = client.get("/api/suggest", {"q": "x", "tags": ",".join(f"t{n}" for n in range(21))})
    assert response.status_code == 400
    assert response.json() == {"error": "tags: Ask for at most 20 tags, separated by commas."}


def test_parse_tags_normalises_and_sorts() -> None:
    assert parse_tags(" Billing,account,,billing ") == ("account", "billing")


def test_the_search_page_offers_the_corpus_tags(client: Client, tagged_corpus: Corpus) -> None:
    page = client.get("/", {"corpus": "tagged"}).content.decode()
    assert '<select id="tags" name="tags">' in page
    assert '<option value="account">account</option>' in page and '<option value="billing">' in page
    partial = client.get("/suggest", {"q": "how do i", "tags": "billing"}, headers={"HX-Request": "true"})
    assert "reset my password" not in partial.content.decode()


# --- rules -----------------------------------------------------------------------------------------


def make_rule(
    corpus: Corpus,
    text: str,
    *,
    match: str = "exact",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
) -> Rule:
    return Rule.objects.create(corpus=corpus, text=text, match=match, starts_at=starts_at, ends_at=ends_at)


def test_a_pin_puts_the_pair_at_its_position_and_says_so(client: Client, tagged_corpus: Corpus) -> None:
    rule = make_rule(tagged_corpus, "How do I", match="prefix")
    mobile = pair("Is there a mobile app?")
    RuleAnswer.objects.create(rule=rule, pair=mobile, action="pin", position=1)
    changed()
    got = suggest(client, "how do i cancel")
    assert got[0]["question"] == "Is there a mobile app?" and got[0]["pinned"] is True
    assert all("pinned" not in s for s in got[1:])
    assert len(got) == 5
    # Another typed text, and the rule does not fire.
    assert all("pinned" not in s for s in suggest(client, "where can i download"))


def test_a_pin_to_a_later_position_moves_an_already_suggested_pair(client: Client, tagged_corpus: Corpus) -> None:
    rule = make_rule(tagged_corpus, "cancel", match="contains")
    cancel = pair("How do I cancel my subscription?")
    RuleAnswer.objects.create(rule=rule, pair=cancel, action="pin", position=3)
    changed()
    got = suggest(client, "how do I CANCEL my sub")
    assert [s["question"] for s in got].count(cancel.question) == 1
    assert got[2]["question"] == cancel.question and got[2]["pinned"] is True


def test_a_hidden_pair_is_never_suggested_and_the_list_stays_full(client: Client, tagged_corpus: Corpus) -> None:
    before = questions(client, "how do i reset my password")
    rule = make_rule(tagged_corpus, "reset", match="contains")
    RuleAnswer.objects.create(rule=rule, pair=pair(str(before[0])), action="hide")
    changed()
    after = questions(client, "how do i reset my password")
    assert before[0] not in after
    assert len(after) == min(5, len(before)) or len(after) == len(before) - 1
    assert before[0] in questions(client, "how do i change my password")  # "reset" not typed


def test_rules_match_exactly_by_prefix_or_inside_as_normalised(client: Client, tagged_corpus: Corpus) -> None:
    assert normalise_typed("  Wi-Fi, PASSWORD?! ") == "wi fi password"
    app = pair("Is there a mobile app?")
    for match, text in (("exact", "Refund?"), ("prefix", "money"), ("contains", "my refund")):
        rule = make_rule(tagged_corpus, text, match=match)
        RuleAnswer.objects.create(rule=rule, pair=app, action="pin", position=1)
    changed()
    typed = ["refund", "REFUND!", "refunds", "money back please", "give money", "where is my refund now", "myrefund"]
    pinned = {q: first_is_pinned(client, q) for q in typed}
    assert pinned == {
        "refund": True,
        "REFUND!": True,
        "refunds": False,
        "money back please": True,
        "give money": False,
        "where is my refund now": True,
        "myrefund": False,
    }


def test_a_rule_fires_only_between_its_dates(client: Client, tagged_corpus: Corpus) -> None:
    now = timezone.now()
    app = pair("Is there a mobile app?")
    day = timedelta(days=1)
    for text, starts_at, ends_at in (
        ("past", None, now - day),
        ("future", now + day, None),
        ("current", now - day, now + day),
    ):
        rule = make_rule(tagged_corpus, text, starts_at=starts_at, ends_at=ends_at)
        RuleAnswer.objects.create(rule=rule, pair=app, action="pin")
    changed()
    assert [first_is_pinned(client, q) for q in ("past", "future", "current")] == [False, False, True]


def test_a_pin_outside_the_tag_filter_is_not_shown(client: Client, tagged_corpus: Corpus) -> None:
    rule = make_rule(tagged_corpus, "invoices", match="contains")
    RuleAnswer.objects.create(rule=rule, pair=pair("Is there a mobile app?"), action="pin")
    changed()
    assert suggest(client, "invoices")[0]["pinned"] is True
    assert all("pinned" not in s for s in suggest(client, "invoices", tags="billing"))


def test_rules_cost_no_query_per_keystroke(
    client: Client, tagged_corpus: Corpus, django_assert_num_queries: object, configure: Callable[..., None]
) -> None:
    configure(CATALOG_TTL_SECONDS=60.0)  # as served: the catalog, rules included, is read once a while
    rule = make_rule(tagged_corpus, "how", match="prefix")
    RuleAnswer.objects.create(rule=rule, pair=pair("Is there a mobile app?"), action="pin")
    changed()
    suggest(client, "how do")  # loads the catalog and the space
    with django_assert_num_queries(0):  # type: ignore[operator]
        assert suggest(client, "how do i")[0]["pinned"] is True


# --- synonyms --------------------------------------------------------------------------------------


def test_a_synonym_group_finds_texts_in_either_word(client: Client, tagged_corpus: Corpus) -> None:
    assert "Where can I download my invoices?" not in questions(client, "receipts")
    Synonym.objects.create(corpus=tagged_corpus, terms="invoice, invoices, receipts, bill")
    changed()
    assert questions(client, "receipts")[0] == "Where can I download my invoices?"
    assert questions(client, "where are my recei")[0] == "Where can I download my invoices?"


def test_a_one_way_synonym_finds_only_one_way(client: Client, tagged_corpus: Corpus) -> None:
    Synonym.objects.create(corpus=tagged_corpus, terms="smartphone", one_way_to="mobile")
    changed()
    assert questions(client, "smartphone")[0] == "Is there a mobile app?"
    space = next(iter(search.loaded_spaces().values()))
    assert "smartphone" in space.lexical.vocabulary
    # Texts saying "smartphone" would not gain "mobile": the lexical index never adds it.
    assert space.lexical.search("mobile", limit=3)[0][0] == pair("Is there a mobile app?").pk


def test_synonym_csv_round_trips_and_refuses_bad_files() -> None:
    entries = [("wifi, wi-fi, wireless", ""), ("=laptop", "notebook")]
    data = "".join(synonym_csv_rows(entries)).encode()
    assert parse_synonym_csv(data) == entries
    with pytest.raises(SynonymFileError, match="'terms' column"):
        parse_synonym_csv(b"words\nwifi, wireless\n")
    with pytest.raises(SynonymFileError, match="Line 2: a two-way group needs at least two terms"):
        parse_synonym_csv(b"terms,one_way_to\nwifi,\n")
    with pytest.raises(SynonymFileError, match="not UTF-8"):
        parse_synonym_csv(b"terms\n\xff\xfe\n")


def test_readiness_checks_the_space_requests_use_and_loads_no_other(client: Client, tagged_corpus: Corpus) -> None:
    Synonym.objects.create(corpus=tagged_corpus, terms="invoices, receipts")
    changed()
    assert questions(client, "receipts")[0] == "Where can I download my invoices?"
    (space,) = search.loaded_spaces().values()
    assert client.get("/readyz").status_code == 200
    assert list(search.loaded_spaces().values()) == [space]
    assert questions(client, "receipts")[0] == "Where can I download my invoices?"
    assert list(search.loaded_spaces().values()) == [space]
