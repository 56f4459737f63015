"""A visitor in headless Chromium: type part of a question, pick a suggestion by keyboard, read it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus
from autocomplete.parsing import parse_qa_file

from .conftest import faq_csv

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which makes Django refuse
    # the test's own (synchronous) database setup; the server itself runs in another thread.
    mp = pytest.MonkeyPatch()
    mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
    mp.undo()


@pytest.fixture
def served_corpus(transactional_db: None, minilm: object) -> Corpus:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(faq_csv(), filename="faq.csv"))
    return corpus


def test_type_choose_with_keyboard_and_read_the_answer(browser: Any, live_server: Any,
                                                        served_corpus: Corpus) -> None:
    page = browser.new_page()
    page.goto(live_server.url + "/")
    box = page.get_by_role("combobox")
    box.press_sequentially("how do i cancel my sub", delay=30)
    listbox = page.get_by_role("listbox")
    listbox.wait_for()
    first = page.get_by_role("option").first
    assert first.inner_text().strip() == "How do I cancel my subscription?"
    assert box.get_attribute("aria-expanded") == "true"
    box.press("ArrowDown")
    assert first.get_attribute("aria-selected") == "true"
    assert box.get_attribute("aria-activedescendant") == first.get_attribute("id")
    box.press("Enter")
    answer = page.locator("#answer")
    answer.wait_for(state="visible")
    assert "Cancel plan" in answer.inner_text()
    assert box.input_value() == "How do I cancel my subscription?"
    assert box.get_attribute("aria-expanded") == "false"
    # Escape closes a reopened list without choosing.
    box.fill("")
    box.press_sequentially("invoice", delay=30)
    page.get_by_role("option").first.wait_for()
    box.press("Escape")
    assert box.get_attribute("aria-expanded") == "false"
    page.close()
