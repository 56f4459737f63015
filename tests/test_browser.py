"""A visitor in headless Chromium: type part of a question, pick a suggestion by keyboard, read it;
nothing on the way is refused by the Content-Security-Policy."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches

from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus, QAPair
from autocomplete.parsing import parse_qa_file

from .conftest import SMALL_FAQ, faq_csv
from .test_hostile_content import HOSTILE, HOSTILE_PAIRS, HTTPS_WITH_MARKUP, hostile_csv

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

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


class PolicyViolations:
    """What the page's Content-Security-Policy refused: the DOM's events and the console's reports."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.__violations.push(e.effectiveDirective + ' ' + e.blockedURI));"
        )
        page.on("console", self._on_console)

    def _on_console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.console.append(message.text)

    def all(self) -> list[str]:
        return [*self.page.evaluate("window.__violations"), *self.console]

    def assert_enforced(self) -> None:
        """An inline script is refused and reported: the policy holds and this watcher sees it."""
        ran = self.page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = true';"
            " document.head.appendChild(s); return window.__ran === true; }"
        )
        assert not ran
        self.page.wait_for_function("window.__violations.length > 0")


@pytest.fixture
def served_corpus(transactional_db: None, minilm: object) -> Corpus:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(faq_csv(), filename="faq.csv"))
    return corpus


def test_type_choose_with_keyboard_and_read_the_answer(browser: Any, live_server: Any, served_corpus: Corpus) -> None:
    page = browser.new_page()
    violations = PolicyViolations(page)
    # Any console error (a resource the page asked for and did not get, such as its icon; a script error).
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    response = page.goto(live_server.url + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
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
    # Typing, htmx swaps and choosing ran under the policy without a single refusal.
    assert violations.all() == []
    assert errors == []
    violations.assert_enforced()  # injects a script that must be refused: after the error check
    page.close()


def test_over_the_rate_limit_the_box_says_so(
    browser: Any, live_server: Any, served_corpus: Corpus, configure: Callable[..., None]
) -> None:
    configure(RATE_LIMIT=True, RATE_LIMIT_PER_SECOND=0.01, RATE_LIMIT_BURST=2)
    caches["default"].clear()
    page = browser.new_page()
    page.goto(live_server.url + "/")
    box = page.get_by_role("combobox")
    for text in ("inv", "invoice", "invoices"):  # a pause after each: one request apiece
        box.fill(text)
        page.wait_for_timeout(400)
    alert = page.locator("#suggestions .suggest-error")
    alert.wait_for()
    assert alert.inner_text().startswith("Too many requests from your address: wait ")
    assert box.get_attribute("aria-expanded") == "true"
    caches["default"].clear()
    page.close()


@pytest.mark.slow
def test_admin_uploads_a_file_and_watches_the_job_finish(
    browser: Any, live_server: Any, transactional_db: None, minilm: object, settings: Any, tmp_path: Any, configure
) -> None:
    from django.contrib.auth.models import User

    from autocomplete.models import IngestJob

    from .conftest import SMALL_FAQ, start_worker

    # The web server queues the job in the database; a real worker process runs it.
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    configure(UPLOAD_DIR=tmp_path / "uploads")
    User.objects.create_superuser("admin", password="correct horse")
    source = tmp_path / "faq.csv"
    source.write_bytes(faq_csv([*SMALL_FAQ, ("", "orphan answer")]))
    worker = start_worker("--max-tasks", "1", "--interval", "0.2", slow=True)
    try:
        page = browser.new_page()
        violations = PolicyViolations(page)
        page.goto(live_server.url + "/admin/login/?next=/admin/autocomplete/corpus/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "correct horse")
        page.click("input[type=submit]")
        page.get_by_role("link", name="Upload QA corpus").click()
        page.set_input_files("#id_file", str(source))
        page.fill("#id_new_corpus_name", "Help centre")
        page.fill("#id_new_corpus_slug", "help")
        page.click("text=Check file and preview")
        assert page.inner_text("#preview-format") == "CSV"
        assert page.inner_text('#preview-counts [data-count="added"]') == "10"
        assert "Line 12: question is empty" in page.inner_text("ul.rejected")
        page.click("text=Confirm and ingest")
        progress = page.locator("#job-progress")
        assert progress.get_attribute("data-status") in ("queued", "running")
        # HTMX polls the progress partial every second until the job ends.
        page.locator('#job-progress[data-status="running"]').wait_for(timeout=60_000)
        page.locator('#job-progress[data-status="succeeded"]').wait_for(timeout=120_000)
        assert page.inner_text('#job-report [data-count="added"]') == "10"
        assert page.inner_text('#job-report [data-count="rejected"]') == "1"
        assert page.inner_text("#rows-embedded") == "10 / 10"
        # The admin's pages and its htmx polling need no inline script or style either.
        assert violations.all() == []
        page.close()
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    job = IngestJob.objects.get()
    assert job.status == "succeeded" and job.worker_pid == worker.pid


def test_hostile_questions_run_no_script_while_typing_or_reading(
    browser: Any, live_server: Any, transactional_db: None, minilm: object
) -> None:
    corpus = Corpus.objects.create(name=f"Help {HOSTILE}", slug="hostile", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(hostile_csv(), filename="hostile.csv"))
    for question, _, url in HOSTILE_PAIRS:
        QAPair.objects.filter(corpus=corpus, question=question).update(url=url)
    dialogs: list[str] = []
    page = browser.new_page()

    def record(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    page.goto(live_server.url + "/")
    box = page.get_by_role("combobox")
    box.press_sequentially("how do i reset my pass", delay=30)
    first = page.get_by_role("option").first
    first.wait_for()
    assert (page.evaluate("window.__xss"), dialogs) == (None, [])
    assert first.inner_text().strip() == HOSTILE_PAIRS[0][0]  # the markup is shown as text
    for option in page.get_by_role("option").all():
        option.hover()
    box.focus()
    box.press("ArrowDown")
    box.press("Enter")
    page.locator("#answer").wait_for(state="visible")
    assert "<img src=x onerror=" in page.inner_text("#answer-text")
    assert page.locator("#answer-link").is_hidden()  # a javascript: link is never offered
    # The one https link is offered as it is; a hostile query typed into the box stays text too.
    box.fill("")
    box.press_sequentially("mobile app", delay=30)
    page.get_by_role("option").first.wait_for()
    box.press("ArrowDown")
    box.press("Enter")
    assert page.get_attribute("#answer-link a", "href") == HTTPS_WITH_MARKUP
    box.fill("")
    box.press_sequentially(HOSTILE[:60], delay=5)
    page.wait_for_timeout(500)
    assert page.evaluate("window.__xss") is None
    page.goto(live_server.url + "/?q=reset+password")  # the no-JavaScript results page
    page.hover("summary")
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    page.close()


# --- the box: highlighting, the hand-off, the template tag, accessibility and narrow screens -----

AXE = Path(__file__).resolve().parent.parent / "var/node_modules/axe-core/axe.min.js"
LONG_WORD = "Supercalifragilistic" * 12
BOX_PAIRS = [
    *SMALL_FAQ,
    ("How do I use <script>window.__xss=1</script> tags?", "Never <b>trust</b> input."),
    (f"What does {LONG_WORD} mean?", f"It means {LONG_WORD} and https://example.com/{'a' * 200}."),
]


@pytest.fixture
def box_corpus(transactional_db: None, minilm: object) -> Corpus:
    """A corpus with a question holding markup, one with a word too long for a phone, and a hand-off."""
    corpus = Corpus.objects.create(
        name="Box FAQ",
        slug="box",
        default_encoder="minilm",
        handoff_text="Still stuck? Ask our support team",
        handoff_url="https://example.com/contact",
    )
    ingest_parsed(corpus, parse_qa_file(faq_csv(BOX_PAIRS), filename="faq.csv"))
    return corpus


def axe_violations(page: Any, base_url: str) -> list[str]:
    """axe-core's violations on the page as it is now, injected from this origin so the CSP stays on."""
    if not AXE.exists():
        pytest.skip(f"axe-core is not installed at {AXE}: `make axe` installs it where npm is available")
    page.route("**/__axe.min.js", lambda route: route.fulfill(path=str(AXE), content_type="text/javascript"))
    page.add_script_tag(url=base_url + "/__axe.min.js")
    results = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [f"{v['id']}: {[node['target'] for node in v['nodes']]}" for v in results]


def marked_words(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("#suggestions [role=option]").first.locator("mark").all_inner_texts()]


def test_the_box_highlights_matches_and_offers_the_hand_off(browser: Any, live_server: Any, box_corpus: Corpus) -> None:
    page = browser.new_page()
    violations = PolicyViolations(page)
    page.goto(live_server.url + "/")
    box = page.get_by_role("combobox")
    box.press_sequentially("how do i cancel my sub", delay=30)
    page.get_by_role("option").first.wait_for()
    assert marked_words(page) == ["How", "do", "I", "cancel", "my", "sub"]
    assert axe_violations(page, live_server.url) == []  # with suggestions open
    # The scan does see a fault: an image without a text alternative, put in and taken out again.
    page.evaluate("document.querySelector('h1').insertAdjacentHTML('afterend', '<img id=probe src=/x.png>')")
    found = page.evaluate("async () => (await axe.run('#probe')).violations.map((v) => v.id)")
    assert "image-alt" in found
    page.evaluate("document.getElementById('probe').remove()")
    # Markup in a question is shown as text around the marks, and never runs.
    box.fill("")
    box.press_sequentially("script tags", delay=30)
    page.locator('#suggestions-list[data-query="script tags"]').wait_for()
    first = page.get_by_role("option").first
    assert first.inner_text().strip() == BOX_PAIRS[10][0]
    assert first.locator("script").count() == 0 and page.evaluate("window.__xss") is None
    # Nothing fits: the hand-off is offered beside the box; something fits again: it goes.
    handoff = page.locator("#handoff .handoff a")
    box.fill("")
    box.press_sequentially("zqxj vvvv", delay=30)
    handoff.wait_for()
    assert handoff.inner_text() == "Still stuck? Ask our support team"
    assert handoff.get_attribute("href") == "https://example.com/contact"
    box.fill("")
    box.press_sequentially("invoices", delay=30)
    page.locator('#suggestions-list[data-query="invoices"] [role=option]').first.wait_for()
    handoff.wait_for(state="detached")
    # Searching without choosing a suggestion offers it under the results.
    box.press("Enter")
    page.wait_for_url("**/?*q=invoices*")
    assert page.locator(".results .handoff a").get_attribute("href") == "https://example.com/contact"
    assert page.locator(".results summary mark").first.inner_text() == "invoices"
    assert violations.all() == []
    page.close()


@pytest.mark.urls("tests.box_urls")
def test_the_template_tag_box_works_on_another_project_s_page_under_a_prefix(
    browser: Any, live_server: Any, box_corpus: Corpus
) -> None:
    page = browser.new_page()
    violations = PolicyViolations(page)
    # Anything the box asked for and did not get (the host page's own missing icon aside).
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "favicon" not in r.url else None)
    page.goto(live_server.url + "/help/")
    box = page.get_by_role("combobox", name="Search our help")
    assert box.get_attribute("placeholder") == "e.g. cancel my plan"
    box.press_sequentially("where can i download my inv", delay=30)
    page.get_by_role("option").first.wait_for()
    assert marked_words(page)[-1] == "inv"
    assert axe_violations(page, live_server.url) == []
    box.press("ArrowDown")
    box.press("Enter")
    page.locator("#answer").wait_for(state="visible")
    assert "one PDF per month" in page.inner_text("#answer-text")
    # A submit goes to the app's own results page, under the prefix, with the hand-off.
    box.fill("zqxj vvvv")
    box.press("Enter")
    page.wait_for_url("**/autocomplete/?*q=zqxj*")
    assert page.locator(".results .handoff a").inner_text() == "Still stuck? Ask our support team"
    assert violations.all() == [] and failed == []
    violations.assert_enforced()
    page.close()


def test_long_words_wrap_inside_the_panel_on_a_phone(browser: Any, live_server: Any, box_corpus: Corpus) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(live_server.url + "/")
    box = page.get_by_role("combobox")
    box.press_sequentially("what does supercalifragilistic", delay=20)
    option = page.get_by_role("option").first
    option.wait_for()
    assert LONG_WORD in option.inner_text()
    overflow = "(selector) => { const e = document.querySelector(selector); return [e.scrollWidth, e.clientWidth]; }"
    scroll, client = page.evaluate(overflow, "#suggestions")
    assert scroll <= client, f"the suggestions overflow: {scroll} > {client} px"
    box.press("ArrowDown")
    box.press("Enter")
    page.locator("#answer").wait_for(state="visible")
    for selector in ("#answer", "#answer-question", "#answer-text"):
        scroll, client = page.evaluate(overflow, selector)
        assert scroll <= client, f"{selector} overflows: {scroll} > {client} px"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()


@pytest.fixture
def tagged_corpus(transactional_db: None, minilm: object) -> Corpus:
    from .test_controls import tagged_csv

    corpus = Corpus.objects.create(name="Tagged FAQ", slug="tagged", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(tagged_csv(), filename="faq.csv"))
    return corpus


def test_the_box_filters_by_topic_or_data_tags_and_shows_pinned_answers(
    browser: Any, live_server: Any, tagged_corpus: Corpus
) -> None:
    from autocomplete.catalog import announce_catalog_change
    from autocomplete.models import Rule, RuleAnswer

    from .test_controls import TAGS

    billing = {q for q, tags in TAGS.items() if "billing" in tags}
    account = {q for q, tags in TAGS.items() if "account" in tags.lower()}
    page = browser.new_page()
    violations = PolicyViolations(page)
    page.goto(live_server.url + "/")
    page.get_by_label("Topic").select_option("billing")
    box = page.get_by_role("combobox", name="Type your question")

    def suggested(typed: str) -> list[str]:
        box.fill("")
        box.press_sequentially(typed, delay=30)
        page.locator('#suggestions [role="option"]').first.wait_for()
        page.wait_for_function(
            "(typed) => document.querySelector('#suggestions-list')?.dataset.query === typed", arg=typed
        )
        return [text.strip() for text in page.locator(".question").all_inner_texts()]

    assert set(suggested("how do i")) <= billing
    # A box embedded elsewhere says its tags in data-tags; the page's own select, when set, wins.
    page.get_by_label("Topic").select_option("")
    page.locator("#q").evaluate("(box) => box.setAttribute('data-tags', 'account')")
    assert set(suggested("how do i ")) <= account
    rule = Rule.objects.create(corpus=tagged_corpus, match="prefix", text="how do i")
    RuleAnswer.objects.create(rule=rule, pair=QAPair.objects.get(question="How do I delete my account?"), position=1)
    announce_catalog_change()
    assert suggested("how do i c")[0] == "How do I delete my account?"
    assert page.locator('#suggestions [role="option"]').first.get_attribute("data-pinned") == "true"
    assert violations.all() == []
    page.close()
