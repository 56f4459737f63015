"""Validation of what a visitor or API client sends, shared by the HTML and JSON views."""

from __future__ import annotations

import datetime
from typing import Any, cast

from django import forms
from django.utils import timezone

from .conf import app_settings
from .controls import MAX_TAGS, parse_tags
from .encoder_registry import unavailable_reason
from .models import Corpus


class _SharedFields(dict[str, forms.Field]):
    """Form fields that every instance may share: deep-copying them returns them as they are."""

    def __deepcopy__(self, memo: dict[int, object]) -> _SharedFields:
        return self


class SuggestForm(forms.Form):
    q = forms.CharField(required=False, strip=False, max_length=app_settings().max_query_length)
    corpus = forms.SlugField(required=False, max_length=100)
    encoder = forms.CharField(required=False, max_length=50)
    k = forms.IntegerField(required=False, min_value=1, max_value=app_settings().max_k)
    # A choice rather than a BooleanField, which reads "0" as true.
    highlight = forms.ChoiceField(required=False, choices=[("0", "0"), ("1", "1")])
    tags = forms.CharField(required=False, max_length=500)

    def clean_k(self) -> int:
        return self.cleaned_data["k"] or app_settings().default_k

    def clean_highlight(self) -> bool:
        return bool(self.cleaned_data["highlight"] == "1")

    def clean_tags(self) -> tuple[str, ...] | None:
        """None when no tag is asked for; else the tags, one of which each suggestion must carry."""
        tags = parse_tags(self.cleaned_data["tags"])
        if len(tags) > MAX_TAGS:
            raise forms.ValidationError(f"Ask for at most {MAX_TAGS} tags, separated by commas.")
        return tags or None

    def error_message(self) -> str:
        """All field errors as one sentence, for a JSON body or an inline message."""
        return " ".join(f"{name}: {message}" for name, messages in self.errors.items() for message in messages)


# A form deep-copies its fields per instance so that one request's changes to them cannot leak
# into the next; this one never changes its fields, and it is built on every keystroke, where the
# copy is a large share of Django's own work around a suggestion.
SuggestForm.base_fields = _SharedFields(SuggestForm.base_fields)


def _initial_encoder() -> str:
    """The default encoder, or the open fallback where the default has no weights here."""
    default = app_settings().default_encoder
    fallback = app_settings().fallback_encoder
    return fallback if fallback and unavailable_reason(default) else default


class UploadForm(forms.Form):
    """Admin upload of a QA file into an existing or a new corpus, with encoders and mode."""

    file = forms.FileField(help_text="CSV, TSV, semicolon-separated, JSON (array of objects) or JSONL; UTF-8.")
    corpus = forms.ModelChoiceField(queryset=Corpus.objects.all(), required=False, empty_label="(new corpus)")
    new_corpus_name = forms.CharField(required=False, max_length=200)
    new_corpus_slug = forms.SlugField(required=False, max_length=100)
    encoders = forms.MultipleChoiceField(
        choices=(), widget=forms.CheckboxSelectMultiple, help_text="Index with one encoder or several."
    )
    mode = forms.ChoiceField(
        choices=[
            ("merge", "Merge: add new questions, update changed answers"),
            ("replace", "Replace: the corpus becomes exactly the file"),
        ],
        initial="merge",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args: Any, encoder_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        encoders = cast(forms.MultipleChoiceField, self.fields["encoders"])
        encoders.choices = encoder_choices
        encoders.initial = [_initial_encoder()]

    def clean_encoders(self) -> list[str]:
        keys: list[str] = self.cleaned_data["encoders"]
        problems = [reason for reason in map(unavailable_reason, keys) if reason]
        if problems:
            raise forms.ValidationError(problems)
        return keys

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("corpus"):
            slug = data.get("new_corpus_slug")
            if not slug or not data.get("new_corpus_name"):
                raise forms.ValidationError("Choose a corpus, or give a name and slug for a new one.")
            if Corpus.objects.filter(slug=slug).exists():
                self.add_error("new_corpus_slug", "A corpus with this slug exists: choose it above.")
        upload = data.get("file")
        limit = app_settings().max_upload_bytes
        if upload is not None and upload.size > limit:
            self.add_error(
                "file",
                f"The file is {upload.size:,} bytes; the limit is {limit:,} (AUTOCOMPLETE_MAX_UPLOAD_BYTES).",
            )
        return data


class ReindexForm(forms.Form):
    """The encoder a re-index action rebuilds with."""

    encoder = forms.ChoiceField(choices=())

    def __init__(self, *args: Any, encoder_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["encoder"]).choices = encoder_choices


class GapImportForm(forms.Form):
    """A CSV of query,count (a support log, or an export of unanswered searches) to group for a range."""

    start = forms.DateField(help_text="First day the queries cover (YYYY-MM-DD).")
    end = forms.DateField(help_text="Last day they cover.")
    file = forms.FileField(help_text="CSV with a `query` column and an optional `count` column, UTF-8.")

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        limit = app_settings().max_upload_bytes
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {limit:,} (AUTOCOMPLETE_MAX_UPLOAD_BYTES)."
            )
        return upload

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("The range starts after it ends: swap the dates.")
        return data


class AnalyticsRangeForm(forms.Form):
    """The days an analytics page covers, both included; the last 30 days when none are given."""

    DEFAULT_DAYS = 30

    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        today = timezone.localdate()
        data["end"] = data.get("end") or today
        data["start"] = data.get("start") or data["end"] - datetime.timedelta(days=self.DEFAULT_DAYS - 1)
        if data["start"] > data["end"]:
            raise forms.ValidationError("The start date is after the end date: swap them.")
        return data

    def date_range(self) -> tuple[datetime.date, datetime.date]:
        """The valid range, or the default one beside the form's errors."""
        if self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"]
        today = timezone.localdate()
        return today - datetime.timedelta(days=self.DEFAULT_DAYS - 1), today


class SynonymImportForm(forms.Form):
    """A synonyms CSV for one corpus (autocomplete/controls.py reads it)."""

    corpus = forms.ModelChoiceField(queryset=Corpus.objects.all())
    file = forms.FileField(help_text="UTF-8 CSV with a 'terms' column and optionally 'one_way_to', as exported.")
    replace = forms.BooleanField(required=False, help_text="Delete the corpus's synonyms first.")


class ControlsImportForm(forms.Form):
    """A controls JSON (synonyms and rules, as the corpus action exports them) for one corpus."""

    corpus = forms.ModelChoiceField(queryset=Corpus.objects.all())
    file = forms.FileField(help_text="The JSON that “Export selected corpus's synonyms and rules as JSON” wrote.")
