"""The `autocomplete` template library: highlighting that escapes first, and the reusable box."""

from __future__ import annotations

from django.template import Context, Template

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
