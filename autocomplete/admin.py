"""Admin: corpora, QA pairs, index builds and ingest jobs; upload with preview, job pages, actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.widgets import AdminURLFieldWidget
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from . import analytics, api_keys, health, jobs, keys
from .conf import app_settings
from .encoder_registry import encoder_registry
from .exporting import corpus_csv_rows
from .forms import AnalyticsRangeForm, ReindexForm, UploadForm
from .links import HttpURLValidator
from .models import ApiKey, Corpus, IndexBuild, IngestJob, PairKey, QAPair
from .parsing import ParseError


def _encoder_choices() -> list[tuple[str, str]]:
    registry = encoder_registry()
    return [(key, registry.spec(key).name) for key in registry.keys]


def _can_control(request: HttpRequest) -> bool:
    """Cancelling or re-running a job takes the same permission as uploading."""
    return request.user.has_perm("autocomplete.add_corpus")


def _job_url(job: IngestJob) -> str:
    return reverse("admin:autocomplete_ingestjob_detail", args=[job.pk])


@admin.register(Corpus)
class CorpusAdmin(admin.ModelAdmin[Corpus]):
    list_display = [
        "name",
        "slug",
        "is_private",
        "default_encoder",
        "pair_count",
        "live_indexes",
        "index_health",
        "analytics_link",
        "updated_at",
    ]
    list_filter = ["is_private"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]
    change_list_template = "admin/autocomplete/corpus/change_list.html"
    change_form_template = "admin/autocomplete/corpus/change_form.html"
    actions = ["reindex_action", "export_csv_action"]

    @admin.display(description="QA pairs")
    def pair_count(self, corpus: Corpus) -> int:
        return corpus.pairs.count()

    @admin.display(description="Live indexes")
    def live_indexes(self, corpus: Corpus) -> str:
        live = corpus.index_builds.filter(is_live=True).values_list("encoder", flat=True)
        return ", ".join(sorted(live)) or "—"

    @admin.display(description="Index health")
    def index_health(self, corpus: Corpus) -> str:
        problems = health.corpus_index_problems(corpus)
        return "; ".join(f"{encoder}: needs re-index ({problem})" for encoder, problem in problems.items()) or "ok"

    @admin.display(description="Analytics")
    def analytics_link(self, corpus: Corpus) -> str:
        return format_html('<a href="{}">Reports</a>', reverse("admin:autocomplete_corpus_analytics", args=[corpus.pk]))

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:corpus_id>/analytics/", view(self.analytics_view), name="autocomplete_corpus_analytics"),
            path("upload/", view(self.upload_view), name="autocomplete_corpus_upload"),
            path("upload/<int:job_id>/preview/", view(self.preview_view), name="autocomplete_corpus_preview"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        history = IngestJob.objects.filter(corpus_id=object_id).exclude(status=IngestJob.Status.PREVIEW)
        jobs.refresh_running_jobs(history)
        history = history[:50]
        corpus = self.get_object(request, object_id)
        if request.method == "GET" and corpus is not None:
            for encoder, problem in health.corpus_index_problems(corpus).items():
                messages.warning(
                    request,
                    f"The {encoder} index needs a re-index: {problem}. Choose “Re-index selected corpora with an "
                    "encoder” on the corpus list to repair it.",
                )
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "job_history": history})

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title, **extra}

    def analytics_view(self, request: HttpRequest, corpus_id: int) -> HttpResponseBase:
        """What visitors settled on, found and chose in a date range; ?report=KEY&format=csv downloads one report."""
        corpus = get_object_or_404(Corpus, pk=corpus_id)
        if not self.has_view_permission(request, corpus):
            raise PermissionDenied
        form = AnalyticsRangeForm(request.GET)
        start, end = form.date_range()
        report = analytics.REPORTS.get(request.GET.get("report", ""))
        if report is not None and request.GET.get("format") == "csv":
            table = report(corpus, start, end, limit=analytics.CSV_ROWS)
            response = StreamingHttpResponse(analytics.table_csv_rows(table), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{corpus.slug}-{table.key}-{start}-{end}.csv"'
            return response
        tables = analytics_tables(request, analytics.all_tables(corpus, start, end))
        overview = analytics.summary(corpus, start, end)
        context = self._context(
            request,
            f"Search analytics: {corpus.name}",
            corpus=corpus,
            form=form,
            start=start,
            end=end,
            summary=overview,
            daily_chart=analytics.daily_chart(overview.days),
            position_chart=analytics.bars_svg(overview.positions, title="Chosen positions"),
            tables=tables,
        )
        return TemplateResponse(request, "admin/autocomplete/corpus/analytics.html", context)

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        """Upload form; a valid upload is parsed and planned, then shown as a preview."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = UploadForm(request.POST or None, request.FILES or None, encoder_choices=_encoder_choices())
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            upload = data["file"]
            try:
                job = jobs.create_upload_preview(
                    upload.read(),
                    filename=upload.name,
                    corpus=data["corpus"],
                    new_corpus_name=data["new_corpus_name"],
                    new_corpus_slug=data["new_corpus_slug"],
                    mode=data["mode"],
                    encoders=data["encoders"],
                    user=request.user,
                )
            except ParseError as exc:
                form.add_error("file", f"{exc} Nothing was written.")
            else:
                return HttpResponseRedirect(reverse("admin:autocomplete_corpus_preview", args=[job.pk]))
        context = self._context(request, "Upload QA corpus", form=form)
        return TemplateResponse(request, "admin/autocomplete/corpus/upload.html", context)

    def preview_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        """What the upload would change; Confirm queues the job, Cancel forgets the file."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        job = get_object_or_404(IngestJob, pk=job_id, kind=IngestJob.Kind.UPLOAD)
        if request.method == "POST":
            try:
                if "confirm" in request.POST:
                    job = jobs.confirm_upload(job)
                    return HttpResponseRedirect(_job_url(job))
                jobs.discard_preview(job)
            except jobs.JobStateError as exc:
                messages.error(request, str(exc))
                return HttpResponseRedirect(_job_url(job))
            messages.info(request, f"Upload of {job.original_name} cancelled; nothing was written.")
            return HttpResponseRedirect(reverse("admin:autocomplete_corpus_changelist"))
        if job.status != IngestJob.Status.PREVIEW:
            return HttpResponseRedirect(_job_url(job))
        context = self._context(request, f"Preview: {job.original_name}", job=job, preview=job.preview)
        return TemplateResponse(request, "admin/autocomplete/corpus/preview.html", context)

    @admin.action(description="Re-index selected corpora with an encoder", permissions=["change"])
    def reindex_action(self, request: HttpRequest, queryset: QuerySet[Corpus]) -> HttpResponse | None:
        form = ReindexForm(request.POST if "encoder" in request.POST else None, encoder_choices=_encoder_choices())
        if form.is_valid():
            for corpus in queryset:
                job = jobs.create_reindex_job(corpus, encoder=form.cleaned_data["encoder"], user=request.user)
                messages.info(request, f"Re-index of {corpus.slug} with {job.encoders[0]} queued as job {job.pk}.")
            return None
        context = self._context(
            request,
            "Re-index corpora",
            form=form,
            corpora=queryset,
            action_checkbox_name=ACTION_CHECKBOX_NAME,
        )
        return TemplateResponse(request, "admin/autocomplete/corpus/reindex.html", context)

    @admin.action(description="Export selected corpus as CSV", permissions=["view"])
    def export_csv_action(self, request: HttpRequest, queryset: QuerySet[Corpus]) -> HttpResponseBase | None:
        if queryset.count() != 1:
            messages.error(request, "Choose exactly one corpus to export.")
            return None
        corpus = queryset.get()
        response = StreamingHttpResponse(corpus_csv_rows(corpus), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{corpus.slug}.csv"'
        return response


def analytics_tables(request: HttpRequest, tables: list[analytics.Table]) -> list[dict[str, Any]]:
    """Each report with its chart, its CSV link and its column headers as sort links (?sort=KEY:COLUMN&order=)."""
    sort_key, _, sort_column = request.GET.get("sort", "").partition(":")
    descending = request.GET.get("order") == "desc"
    shown = []
    for table in tables:
        if table.key == sort_key:
            table = analytics.sorted_table(table, sort_column, descending=descending)
        headers = []
        for column in table.columns:
            current = table.key == sort_key and column == sort_column
            order = "asc" if current and descending else "desc"
            query = request.GET.copy()
            query["sort"], query["order"] = f"{table.key}:{column}", order
            query.pop("format", None)
            aria = ("descending" if descending else "ascending") if current else "none"
            headers.append({"label": column, "url": "?" + query.urlencode(), "aria_sort": aria})
        csv_query = request.GET.copy()
        csv_query["report"], csv_query["format"] = table.key, "csv"
        shown.append(
            {
                "table": table,
                "headers": headers,
                "chart": analytics.bar_chart(table),
                "csv_url": "?" + csv_query.urlencode(),
            }
        )
    return shown


@admin.register(IngestJob)
class IngestJobAdmin(admin.ModelAdmin[IngestJob]):
    """Job history (filter by corpus), each job's live page, cancel and run again."""

    list_display = ["id", "kind", "corpus_label", "original_name", "status", "created_at", "finished_at"]
    list_filter = ["status", "kind", "corpus"]
    list_display_links = ["id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may see corpora may follow their jobs.
        user = request.user
        return super().has_view_permission(request, obj) or user.has_perm("autocomplete.view_corpus")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:job_id>/", view(self.detail_view), name="autocomplete_ingestjob_detail"),
            path("<int:job_id>/progress/", view(self.progress_view), name="autocomplete_ingestjob_progress"),
            path("<int:job_id>/control/", view(require_POST(self.control_view)), name="autocomplete_ingestjob_control"),
            *super().get_urls(),
        ]

    def _job(self, request: HttpRequest, job_id: int) -> IngestJob:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return jobs.refresh_liveness(get_object_or_404(IngestJob, pk=job_id))

    def detail_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        job = self._job(request, job_id)
        if job.status == IngestJob.Status.PREVIEW:
            return HttpResponseRedirect(reverse("admin:autocomplete_corpus_preview", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            # The status lives in the polled progress panel; a static title would go stale.
            "title": f"{job.get_kind_display()} #{job.pk} → {job.corpus_label}",
            "job": job,
            "progress": jobs.job_progress(job),
            "can_control": _can_control(request),
        }
        return TemplateResponse(request, "admin/autocomplete/ingestjob/detail.html", context)

    def progress_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        """The progress partial that the job page polls through HTMX until the job ends."""
        job = self._job(request, job_id)
        context = {"job": job, "progress": jobs.job_progress(job), "can_control": _can_control(request)}
        return TemplateResponse(request, "admin/autocomplete/ingestjob/_progress.html", context)

    def control_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        job = self._job(request, job_id)
        if not _can_control(request):
            raise PermissionDenied
        try:
            if request.POST.get("action") == "cancel":
                job = jobs.request_cancel(job)
                messages.info(request, "Cancel requested." if job.status == "running" else "Job cancelled.")
            elif request.POST.get("action") == "rerun":
                job = jobs.run_again(job)
                messages.info(request, f"Job {job.pk} queued again.")
        except jobs.JobStateError as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(_job_url(job))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        jobs.refresh_running_jobs(IngestJob.objects.all())
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:autocomplete_ingestjob_detail", args=[object_id]))


class PairKeyInline(admin.TabularInline[PairKey, QAPair]):
    """The pair's keys: wordings that find it besides its question (autocomplete/keys.py)."""

    model = PairKey
    extra = 0
    fields = ["text", "source", "page_views", "created_at", "last_seen_at"]
    readonly_fields = ["source", "page_views", "created_at", "last_seen_at"]
    verbose_name_plural = "keys (other wordings that find this pair; removed learnt keys are not learnt again)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[PairKey]:
        return super().get_queryset(request).filter(removed_at__isnull=True)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a key is added or removed; editing one would make it another key


@admin.register(QAPair)
class QAPairAdmin(admin.ModelAdmin[QAPair]):
    list_display = ["question", "corpus", "external_id", "is_featured", "updated_at"]
    list_filter = ["corpus", "is_featured"]
    list_editable = ["is_featured"]
    search_fields = ["question", "answer", "external_id"]
    readonly_fields = ["created_at", "updated_at"]
    # Django's URL field takes ftp and shows any url it accepts as a link: here only http(s) does either.
    formfield_overrides = {
        models.URLField: {"widget": AdminURLFieldWidget(validator_class=HttpURLValidator), "assume_scheme": "https"}
    }
    inlines = [PairKeyInline]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not PairKey:
            super().save_formset(request, form, formset, change)
            return
        added = formset.save(commit=False)
        for key in added:
            # Written by the owner: kept like an imported wording, whatever the events say.
            key.text = keys.key_text(key.text)
            key.source = PairKey.Source.IMPORT
            key.save()
        keys.remove_keys(formset.deleted_objects)
        if added:
            keys.mark_keys_changed(form.instance.corpus_id)

    def formfield_for_dbfield(self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if isinstance(db_field, models.URLField) and field is not None:
            field.validators.append(HttpURLValidator())
        return field


@admin.register(IndexBuild)
class IndexBuildAdmin(admin.ModelAdmin[IndexBuild]):
    list_display = ["corpus", "encoder", "is_live", "kind", "vector_count", "created_at", "build_seconds"]
    list_filter = ["corpus", "encoder", "is_live"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    """Keys for private corpora: the key is shown once, on the page after it is created."""

    list_display = ["name", "prefix", "corpus_list", "created_at", "last_used_at", "is_revoked"]
    list_filter = ["corpora"]
    search_fields = ["name", "prefix"]
    fields = ["name", "corpora", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    filter_horizontal = ["corpora"]
    actions = ["revoke_action"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).prefetch_related("corpora")

    @admin.display(description="Corpora")
    def corpus_list(self, key: ApiKey) -> str:
        return ", ".join(corpus.slug for corpus in key.corpora.all()) or "—"

    @admin.display(description="Revoked", boolean=True)
    def is_revoked(self, key: ApiKey) -> bool:
        return key.is_revoked

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            key, obj.key_sha256 = api_keys.new_key()
            obj.prefix = key[: len(api_keys.KEY_PREFIX) + 6]
            # Held for response_add alone: the key itself is never stored.
            request._created_api_key = key  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        api_keys.forget_grants()  # a narrower scope applies at once in this process

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        """The one page that ever shows the key."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"API key created: {obj.name}",
            "api_key": obj,
            "key": getattr(request, "_created_api_key", ""),
            "example_url": request.build_absolute_uri(reverse("api-suggest")) + "?q=how&corpus=SLUG",
        }
        return TemplateResponse(request, "admin/autocomplete/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = api_keys.revoke(queryset)
        delay = app_settings().api_key_cache_seconds
        messages.success(
            request, f"{count} key(s) revoked: refused here at once, by every other server within {delay:g} s."
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        super().delete_queryset(request, queryset)
        api_keys.forget_grants()

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        super().delete_model(request, obj)
        api_keys.forget_grants()
