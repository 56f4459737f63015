"""The `autocomplete` template library: highlighting that escapes first, and the reusable box."""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils.html import escape

from autocomplete.models import Corpus
from autocomplete.templatetags.autocomplete import highlight


def test_highlight_escapes_every_part_and_marks_only_matches() -> None:
    text = "How do I use <script>alert('x')</script> & <b>tags</b>?"
    html = highlight(text, "script ta")
    assert html == (
        "How do I use &lt;<mark>script</mark>&gt;alert(&#x27;x&#x27;)&lt;/<mark>script</mark>&gt; "
        "&amp; &lt;b&gt;<mark>ta</mark>gs&lt;/b&gt;?"
    )
    assert highlight("<i>no match</i>", "zebra ") == "&lt;i&gt;no match&lt;/i&gt;"


def test_the_filter_output_is_not_escaped_twice_in_a_template() -> None:
    template = Template("{% load autocomplete %}{{ question|highlight:query }}")
    html = template.render(Context({"question": "Fish & chips?", "query": "chip"}))
    assert html == "Fish &amp; <mark>chip</mark>s?"


@pytest.mark.django_db
def test_the_box_tag_renders_the_page_box_for_one_corpus(small_corpus: Corpus) -> None:
    template = Template(
        '{% load autocomplete %}{% autocomplete_box corpus="small" encoder="minilm" label="Ask us" '
        'placeholder=example tags="billing,account" %}'
    )
    html = template.render(Context({"example": "e.g. <invoices>"}))
    assert '<input type="hidden" name="corpus" value="small">' in html
    assert '<input type="hidden" name="encoder" value="minilm">' in html
    assert '<label for="q">Ask us</label>' in html and 'placeholder="e.g. &lt;invoices&gt;"' in html
    assert 'data-tags="billing,account"' in html
    assert f'hx-get="{reverse("autocomplete:suggest")}"' in html
    assert f'action="{reverse("autocomplete:search")}"' in html
    assert "/static/autocomplete/combobox.js" in html and "/static/autocomplete/box.css" in html
    assert 'role="combobox"' in html and 'id="handoff"' in html and 'class="error"' not in html
    # A page that loads htmx and the box's files itself asks for the markup alone.
    bare = Template('{% load autocomplete %}{% autocomplete_box corpus="small" assets=False %}').render(Context({}))
    assert "<script" not in bare and "<link" not in bare and 'role="combobox"' in bare


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "reason"),
    [('corpus="nope"', "Unknown corpus 'nope'."), ('corpus="small" encoder="ivysaur"', "has no index for encoder")],
)
def test_a_box_that_cannot_answer_says_why_instead_of_breaking_the_page(
    small_corpus: Corpus, arguments: str, reason: str
) -> None:
    html = Template(f"{{% load autocomplete %}}{{% autocomplete_box {arguments} %}}").render(Context({}))
    assert 'role="combobox"' in html and '<p class="error" role="alert">' in html and escape(reason) in html
