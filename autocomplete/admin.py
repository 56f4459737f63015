"""Admin: corpora, QA pairs and index builds, and the upload of a QA file."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from embeddings.encoders import EncoderError

from .encoding import encoder_registry
from .forms import UploadForm
from .ingest import IngestReport, ingest_parsed
from .models import Corpus, IndexBuild, QAPair
from .parsing import ParseError, parse_qa_file


@admin.register(Corpus)
class CorpusAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "default_encoder", "pair_count", "live_indexes", "updated_at"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]
    change_list_template = "admin/autocomplete/corpus/change_list.html"

    @admin.display(description="QA pairs")
    def pair_count(self, corpus: Corpus) -> int:
        return corpus.pairs.count()

    @admin.display(description="Live indexes")
    def live_indexes(self, corpus: Corpus) -> str:
        live = corpus.index_builds.filter(is_active=True).values_list("encoder", flat=True)
        return ", ".join(sorted(live)) or "—"

    def get_urls(self) -> list[URLPattern]:
        upload = path("upload/", self.admin_site.admin_view(self.upload_view),
                      name="autocomplete_corpus_upload")
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        registry = encoder_registry()
        choices = [(key, registry.spec(key).name) for key in registry.keys]
        form = UploadForm(request.POST or None, request.FILES or None, encoder_choices=choices)
        report: IngestReport | None = None
        if request.method == "POST" and form.is_valid():
            report = self._ingest_upload(request, form)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Upload QA corpus", "form": form, "report": report}
        return TemplateResponse(request, "admin/autocomplete/corpus/upload.html", context)

    def _ingest_upload(self, request: HttpRequest, form: UploadForm) -> IngestReport | None:
        data = form.cleaned_data
        upload = data["file"]
        try:
            # Read from the upload handler's stream; the file is never stored under its own name.
            parsed = parse_qa_file(upload.read(), filename=upload.name)
        except ParseError as exc:
            form.add_error("file", str(exc))
            return None
        try:
            with transaction.atomic():
                corpus = data["corpus"] or Corpus.objects.create(
                    name=data["new_corpus_name"], slug=data["new_corpus_slug"],
                    default_encoder=data["encoder"])
                report = ingest_parsed(corpus, parsed, encoder_key=data["encoder"], mode=data["mode"])
        except EncoderError as exc:
            form.add_error("encoder", str(exc))
            return None
        messages.success(request, f"{upload.name} loaded into {corpus.name}: {report.summary()}.")
        return report


@admin.register(QAPair)
class QAPairAdmin(admin.ModelAdmin):
    list_display = ["question", "corpus", "external_id", "updated_at"]
    list_filter = ["corpus"]
    search_fields = ["question", "answer", "external_id"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(IndexBuild)
class IndexBuildAdmin(admin.ModelAdmin):
    list_display = ["corpus", "encoder", "is_active", "kind", "vector_count", "created_at", "build_seconds"]
    list_filter = ["corpus", "encoder", "is_active"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
