"""Validation of what a visitor or API client sends, shared by the HTML and JSON views."""

from __future__ import annotations

from django import forms
from django.conf import settings


class _SharedFields(dict[str, forms.Field]):
    """Form fields that every instance may share: deep-copying them returns them as they are."""

    def __deepcopy__(self, memo: dict[int, object]) -> _SharedFields:
        return self


class SuggestForm(forms.Form):
    q = forms.CharField(required=False, strip=False, max_length=settings.AUTOCOMPLETE_MAX_QUERY_LENGTH)
    corpus = forms.SlugField(required=False, max_length=100)
    encoder = forms.CharField(required=False, max_length=50)
    k = forms.IntegerField(required=False, min_value=1, max_value=settings.AUTOCOMPLETE_MAX_K)

    def clean_k(self) -> int:
        return self.cleaned_data["k"] or settings.AUTOCOMPLETE_DEFAULT_K

    def error_message(self) -> str:
        """All field errors as one sentence, for a JSON body or an inline message."""
        return " ".join(f"{name}: {message}" for name, messages in self.errors.items() for message in messages)


# A form deep-copies its fields per instance so that one request's changes to them cannot leak
# into the next; this one never changes its fields, and it is built on every keystroke, where the
# copy cost 0.16 ms of the ~0.45 ms Django spends around a suggestion (profiled at 67k questions).
SuggestForm.base_fields = _SharedFields(SuggestForm.base_fields)


def _initial_encoder() -> str:
    """The default encoder, or the open fallback where the default has no weights here."""
    from .encoding import unavailable_reason

    default = settings.AUTOCOMPLETE_DEFAULT_ENCODER
    fallback = settings.AUTOCOMPLETE_FALLBACK_ENCODER
    return fallback if fallback and unavailable_reason(default) else default


class UploadForm(forms.Form):
    """Admin upload of a QA file into an existing or a new corpus, with encoders and mode."""

    file = forms.FileField(help_text="CSV, TSV, semicolon-separated, JSON (array of objects) or JSONL; UTF-8.")
    corpus = forms.ModelChoiceField(queryset=None, required=False, empty_label="(new corpus)")
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

    def __init__(self, *args: object, encoder_choices: list[tuple[str, str]], **kwargs: object) -> None:
        from .models import Corpus

        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["corpus"].queryset = Corpus.objects.all()  # type: ignore[attr-defined]
        self.fields["encoders"].choices = encoder_choices  # type: ignore[attr-defined]
        self.fields["encoders"].initial = [_initial_encoder()]

    def clean_encoders(self) -> list[str]:
        from .encoding import unavailable_reason

        keys: list[str] = self.cleaned_data["encoders"]
        problems = [reason for reason in map(unavailable_reason, keys) if reason]
        if problems:
            raise forms.ValidationError(problems)
        return keys

    def clean(self) -> dict[str, object]:
        from .models import Corpus

        data = super().clean() or {}
        if not data.get("corpus"):
            slug = data.get("new_corpus_slug")
            if not slug or not data.get("new_corpus_name"):
                raise forms.ValidationError("Choose a corpus, or give a name and slug for a new one.")
            if Corpus.objects.filter(slug=slug).exists():
                self.add_error("new_corpus_slug", "A corpus with this slug exists: choose it above.")
        upload = data.get("file")
        limit = settings.AUTOCOMPLETE_MAX_UPLOAD_BYTES
        if upload is not None and upload.size > limit:
            self.add_error(
                "file",
                f"The file is {upload.size:,} bytes; the limit is {limit:,} (AUTOCOMPLETE_MAX_UPLOAD_BYTES).",
            )
        return data


class ReindexForm(forms.Form):
    """The encoder a re-index action rebuilds with."""

    encoder = forms.ChoiceField(choices=())

    def __init__(self, *args: object, encoder_choices: list[tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["encoder"].choices = encoder_choices  # type: ignore[attr-defined]
