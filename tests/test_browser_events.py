"""The box in headless Chromium records settled queries, not keystrokes, and offers popular questions when empty.

Beside tests/test_browser.py (whose fixtures it uses): these read what the page sent to /api/events
from the database the live server writes to.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from autocomplete.models import Corpus, QAPair, SearchEvent

from .test_browser import CHROMIUM, PolicyViolations, browser, served_corpus  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")]


def wait_for_events(count: int, *, seconds: float = 10.0) -> list[SearchEvent]:
    deadline = time.monotonic() + seconds
    while SearchEvent.objects.count() < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(SearchEvent.objects.order_by("id"))


def count_beacons(page: Any) -> Callable[[], int]:
    """How many beacons the page has sent to /api/events, counted inside the page as it sends them."""
    page.add_init_script(
        "window.__beacons = 0; const send = navigator.sendBeacon.bind(navigator);"
        "navigator.sendBeacon = (url, data) => { if (String(url).endsWith('/api/events')) window.__beacons++;"
        " return send(url, data); };"
    )
    return lambda: int(page.evaluate("window.__beacons"))


def test_typed_and_chosen_is_one_settled_query_with_its_choice(
    browser: Any,  # noqa: F811
    live_server: Any,
    served_corpus: Corpus,  # noqa: F811
    configure: Callable[..., None],
) -> None:
    configure(SETTLE_SECONDS=0.4)
    page = browser.new_page()
    beacons = count_beacons(page)
    page.goto(live_server.url + "/")
    box = page.get_by_role("combobox")
    box.press_sequentially("how do i cancel my   sub", delay=30)
    page.get_by_role("option").first.wait_for()
    # The pause settles the query; the choice then completes that same event.
    assert wait_for_events(1)[0].trigger == "pause"
    box.press("ArrowDown")
    box.press("Enter")
    page.locator("#answer").wait_for(state="visible")
    page.wait_for_timeout(1000)
    assert beacons() == 2
    page.close()  # leaving with the chosen question in the box records nothing more
    (event,) = wait_for_events(2, seconds=2)
    cancel = QAPair.objects.get(corpus=served_corpus, question="How do I cancel my subscription?")
    assert (event.query, event.chosen_pair_id, event.chosen_position) == ("how do i cancel my sub", cancel.pk, 1)
    assert event.shown_ids[0] == cancel.pk and event.encoder == "minilm"


def test_leaving_the_page_records_the_text_left_in_the_box(
    browser: Any,  # noqa: F811
    live_server: Any,
    served_corpus: Corpus,  # noqa: F811
) -> None:
    page = browser.new_page()
    page.goto(live_server.url + "/")
    page.get_by_role("combobox").press_sequentially("where are my invoices", delay=30)
    page.get_by_role("option").first.wait_for()
    page.goto("about:blank")  # well before the 1.5 s pause
    (event,) = wait_for_events(1)
    assert (event.query, event.trigger, event.chosen_pair_id) == ("where are my invoices", "leave", None)
    invoices = QAPair.objects.get(corpus=served_corpus, question="Where can I download my invoices?")
    assert invoices.pk in event.shown_ids
    page.close()


def test_no_event_per_keystroke(
    browser: Any,  # noqa: F811
    live_server: Any,
    served_corpus: Corpus,  # noqa: F811
    configure: Callable[..., None],
) -> None:
    configure(SETTLE_SECONDS=0.6)
    page = browser.new_page()
    beacons = count_beacons(page)
    page.goto(live_server.url + "/")
    text = "how do i reset my password"
    # Slow typing with short pauses between keys (under the settle time): 26 keystrokes, one query.
    page.get_by_role("combobox").press_sequentially(text, delay=150)
    page.wait_for_timeout(1500)
    assert beacons() == 1
    events = wait_for_events(1)
    assert [(e.query, e.trigger) for e in events] == [(text, "pause")]
    page.close()
    assert SearchEvent.objects.count() == 1


def test_focusing_the_empty_box_shows_the_popular_questions(
    browser: Any,  # noqa: F811
    live_server: Any,
    served_corpus: Corpus,  # noqa: F811
) -> None:
    faq = list(QAPair.objects.filter(corpus=served_corpus).order_by("id"))
    for _ in range(2):
        SearchEvent.objects.create(
            corpus=served_corpus,
            encoder="minilm",
            page_view=uuid.uuid4().hex,
            query="export",
            shown_ids=[faq[4].pk],
            chosen_pair=faq[4],
            chosen_position=1,
            trigger="choice",
        )
    QAPair.objects.filter(pk=faq[7].pk).update(is_featured=True)
    page = browser.new_page()
    page.goto(live_server.url + "/")
    box = page.get_by_role("combobox")
    # The page's box is focused as it loads (autofocus): the popular questions come without a click.
    page.get_by_role("listbox", name="Popular questions").wait_for()
    box.blur()
    box.focus()
    page.get_by_role("listbox", name="Popular questions").wait_for()
    assert [o.inner_text().strip() for o in page.get_by_role("option").all()] == [faq[4].question, faq[7].question]
    page.wait_for_function("document.getElementById('suggestion-status').textContent.includes('2 popular questions')")
    # Choosing one records the choice, with an empty query: it was chosen from the empty box.
    box.press("ArrowDown")
    box.press("Enter")
    page.locator("#answer").wait_for(state="visible")
    (*_, event) = wait_for_events(3)
    assert (event.query, event.chosen_pair_id, event.trigger) == ("", faq[4].pk, "choice")
    # Clearing the box shows them again.
    box.fill("")
    page.get_by_role("listbox", name="Popular questions").wait_for()
    page.close()


def test_the_analytics_page_runs_under_the_policy(
    browser: Any,  # noqa: F811
    live_server: Any,
    served_corpus: Corpus,  # noqa: F811
) -> None:
    from django.contrib.auth.models import User

    pair = QAPair.objects.filter(corpus=served_corpus).first()
    assert pair is not None
    SearchEvent.objects.create(
        corpus=served_corpus,
        encoder="minilm",
        page_view=uuid.uuid4().hex,
        query="<img src=x onerror=alert(1)>",
        shown_ids=[pair.pk],
        shown_count=1,
        trigger="pause",
    )
    User.objects.create_superuser("admin", password="correct horse")
    page = browser.new_page()
    violations = PolicyViolations(page)
    page.goto(live_server.url + f"/admin/login/?next=/admin/autocomplete/corpus/{served_corpus.pk}/analytics/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.locator("#report-top svg").wait_for()
    # The bar's colour comes from the app's stylesheet, which the policy lets in.
    fill = page.evaluate("getComputedStyle(document.querySelector('#report-top svg rect')).fill")
    assert fill == "rgb(121, 174, 200)"
    assert "<img src=x" in page.locator("#report-top table").inner_text()
    assert violations.all() == []
    page.close()
