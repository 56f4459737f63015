"""Admin: corpora, QA pairs, index builds and ingest jobs; upload with preview, job pages, actions."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.widgets import AdminURLFieldWidget
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from . import analytics, api_keys, gaps, health, jobs, keys, query_encoders, reachability
from .catalog import announce_catalog_change
from .conf import app_settings
from .controls import SynonymFileError, parse_synonym_csv, synonym_csv_rows
from .encoder_registry import encoder_registry
from .exporting import ControlsFileError, corpus_controls, corpus_csv_rows, import_controls
from .forms import AnalyticsRangeForm, ControlsImportForm, GapImportForm, ReindexForm, SynonymImportForm, UploadForm
from .links import HttpURLValidator
from .models import (
    ApiKey,
    ContentGap,
    Corpus,
    IndexBuild,
    IngestJob,
    PairKey,
    QAPair,
    QueryEncoder,
    ReachabilityAudit,
    Rule,
    RuleAnswer,
    Synonym,
)
from .parsing import ParseError
from .search import SearchError


def _encoder_choices() -> list[tuple[str, str]]:
    registry = encoder_registry()
    return [(key, registry.spec(key).name) for key in registry.keys]


def _can_control(request: HttpRequest) -> bool:
    """Cancelling or re-running a job takes the same permission as uploading."""
    return request.user.has_perm("autocomplete.add_corpus")


def _job_url(job: IngestJob) -> str:
    return reverse("admin:autocomplete_ingestjob_detail", args=[job.pk])


# Django's URL field takes ftp and shows any url it accepts as a link: here only http(s) does either.
HTTP_URL_FIELDS: dict[type[models.Field[Any, Any]], dict[str, Any]] = {
    models.URLField: {"widget": AdminURLFieldWidget(validator_class=HttpURLValidator), "assume_scheme": "https"}
}


class AnnouncesControlChanges:
    """Every server reads a corpus's controls again at once when they change (not after the catalog TTL)."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        announce_catalog_change()

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)  # type: ignore[misc]
        announce_catalog_change()

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        super().delete_queryset(request, queryset)  # type: ignore[misc]
        announce_catalog_change()


class SynonymInline(admin.TabularInline[Synonym, Corpus]):
    model = Synonym
    extra = 1
    fields = ["terms", "one_way_to"]


@admin.register(Corpus)
class CorpusAdmin(AnnouncesControlChanges, admin.ModelAdmin[Corpus]):
    formfield_overrides = HTTP_URL_FIELDS
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
    actions = ["reindex_action", "query_encoder_action", "export_csv_action", "export_controls_action"]
    inlines = [SynonymInline]

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
            path("<int:corpus_id>/gaps/", view(self.gaps_view), name="autocomplete_corpus_gaps"),
            path(
                "<int:corpus_id>/reachability/", view(self.reachability_view), name="autocomplete_corpus_reachability"
            ),
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
            for record in corpus.query_encoders.filter(is_live=True):
                reason = query_encoders.stale_reason(record)
                if reason:
                    messages.warning(
                        request,
                        f"The {record.encoder} query encoder is not used: {reason}. Choose “Train a query encoder "
                        "for selected corpora” on the corpus list to train it again.",
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

    def _analysed_corpus(self, request: HttpRequest, corpus_id: int) -> Corpus:
        """The corpus of a gaps or audit page: seen with view permission, recomputed with change."""
        corpus = get_object_or_404(Corpus, pk=corpus_id)
        if not self.has_view_permission(request, corpus):
            raise PermissionDenied
        if request.method == "POST" and not self.has_change_permission(request, corpus):
            raise PermissionDenied
        return corpus

    def gaps_view(self, request: HttpRequest, corpus_id: int) -> HttpResponse:
        """The content gaps of one corpus, largest group first; a CSV of queries queues a new grouping."""
        corpus = self._analysed_corpus(request, corpus_id)
        if request.method == "POST" and "from_events" in request.POST:
            return self._group_searched_gaps(request, corpus)
        form = GapImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                queries = gaps.read_query_counts(data["file"].read())
            except gaps.GapInputError as exc:
                form.add_error("file", f"{exc} Nothing was changed.")
            else:
                report = gaps.request_gaps(
                    corpus, start=data["start"], end=data["end"], queries=queries, source=data["file"].name
                )
                messages.info(request, f"Grouping of {len(queries)} queries for {report.start}..{report.end} queued.")
                return HttpResponseRedirect(
                    reverse("admin:autocomplete_corpus_gaps", args=[corpus.pk]) + f"?report={report.pk}"
                )
        reports = list(ContentGap.objects.filter(corpus=corpus))
        chosen = next((r for r in reports if str(r.pk) == request.GET.get("report")), reports[0] if reports else None)
        add_url = reverse("admin:autocomplete_qapair_add")
        groups = [
            {
                **group,
                "create_url": f"{add_url}?{urlencode({'corpus': corpus.pk, 'question': group['typical']})}",
                "nearest_url": _pair_url(group.get("nearest_id")),
            }
            for group in (chosen.groups if chosen is not None else [])
        ]
        context = self._context(
            request,
            f"Content gaps: {corpus.name}",
            corpus=corpus,
            form=form,
            reports=reports,
            report=chosen,
            groups=groups,
            can_change=self.has_change_permission(request, corpus),
            range_form=AnalyticsRangeForm(prefix="searched"),
        )
        return TemplateResponse(request, "admin/autocomplete/corpus/gaps.html", context)

    def _group_searched_gaps(self, request: HttpRequest, corpus: Corpus) -> HttpResponse:
        """Queue the grouping of the range's settled searches that found no suggestion or no choice."""
        if not self.has_change_permission(request, corpus):
            raise PermissionDenied
        start, end = AnalyticsRangeForm(request.POST, prefix="searched").date_range()
        queries = analytics.gap_queries(corpus, start, end)
        report = gaps.request_gaps(corpus, start=start, end=end, queries=queries, source="search events")
        messages.info(request, f"Grouping of {len(queries)} unanswered searches for {start}..{end} queued.")
        return HttpResponseRedirect(
            reverse("admin:autocomplete_corpus_gaps", args=[corpus.pk]) + f"?report={report.pk}"
        )

    def reachability_view(self, request: HttpRequest, corpus_id: int) -> HttpResponse:
        """The pairs visitors typing their own question would miss, worst first; POST queues a new audit."""
        corpus = self._analysed_corpus(request, corpus_id)
        if request.method == "POST":
            try:
                audit = reachability.request_audit(corpus)
            except SearchError as exc:
                messages.error(request, f"{exc} Index the corpus first, then audit it.")
            else:
                messages.info(request, f"Reachability audit of {corpus.slug} ({audit.encoder}) queued.")
            return HttpResponseRedirect(reverse("admin:autocomplete_corpus_reachability", args=[corpus.pk]))
        audits = list(ReachabilityAudit.objects.filter(corpus=corpus))
        findings = [
            {**finding, "edit_url": _pair_url(finding["id"]), "ranks": _ranks_text(audit, finding)}
            for audit in audits[:1]
            for finding in audit.findings
        ]
        context = self._context(
            request,
            f"Reachability audit: {corpus.name}",
            corpus=corpus,
            audit=audits[0] if audits else None,
            findings=findings,
            can_change=self.has_change_permission(request, corpus),
        )
        return TemplateResponse(request, "admin/autocomplete/corpus/reachability.html", context)

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

    @admin.action(description="Train a query encoder for selected corpora", permissions=["change"])
    def query_encoder_action(self, request: HttpRequest, queryset: QuerySet[Corpus]) -> None:
        """Queue training for each corpus's default encoder, as a background job with progress."""
        for corpus in queryset:
            key = corpus.default_encoder
            if not corpus.index_builds.filter(encoder=key, is_live=True).exists():
                messages.error(request, f"{corpus.slug} has no live {key} index: re-index it first.")
                continue
            job = jobs.create_query_encoder_job(corpus, encoder=key, user=request.user)
            messages.info(request, f"Training a {key} query encoder for {corpus.slug} queued as job {job.pk}.")

    @admin.action(description="Export selected corpus as CSV", permissions=["view"])
    def export_csv_action(self, request: HttpRequest, queryset: QuerySet[Corpus]) -> HttpResponseBase | None:
        if queryset.count() != 1:
            messages.error(request, "Choose exactly one corpus to export.")
            return None
        corpus = queryset.get()
        response = StreamingHttpResponse(corpus_csv_rows(corpus), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{corpus.slug}.csv"'
        return response

    @admin.action(description="Export selected corpus's synonyms and rules as JSON", permissions=["view"])
    def export_controls_action(self, request: HttpRequest, queryset: QuerySet[Corpus]) -> HttpResponseBase | None:
        if queryset.count() != 1:
            messages.error(request, "Choose exactly one corpus to export.")
            return None
        corpus = queryset.get()
        response = JsonResponse(corpus_controls(corpus), json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="{corpus.slug}-controls.json"'
        return response


@admin.register(Synonym)
class SynonymAdmin(AnnouncesControlChanges, admin.ModelAdmin[Synonym]):
    """Synonyms of every corpus, filtered by corpus; CSV import and export."""

    list_display = ["terms", "one_way_to", "corpus", "updated_at"]
    list_filter = ["corpus"]
    search_fields = ["terms", "one_way_to"]
    change_list_template = "admin/autocomplete/synonym/change_list.html"
    actions = ["export_csv_action"]

    def save_model(self, request: HttpRequest, obj: Synonym, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        announce_catalog_change()

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [path("import/", view(self.import_view), name="autocomplete_synonym_import"), *super().get_urls()]

    @admin.action(description="Export selected synonyms as CSV", permissions=["view"])
    def export_csv_action(self, request: HttpRequest, queryset: QuerySet[Synonym]) -> HttpResponse:
        rows = queryset.order_by("corpus", "id").values_list("terms", "one_way_to")
        response = HttpResponse("".join(synonym_csv_rows(rows)), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="synonyms.csv"'
        return response

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """A synonyms CSV into a corpus, added to its synonyms or replacing them; nothing written on an error."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = SynonymImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            corpus = form.cleaned_data["corpus"]
            try:
                entries = parse_synonym_csv(form.cleaned_data["file"].read())
            except SynonymFileError as exc:
                form.add_error("file", f"{exc} Nothing was written.")
            else:
                with transaction.atomic():
                    if form.cleaned_data["replace"]:
                        corpus.synonyms.all().delete()
                    Synonym.objects.bulk_create(Synonym(corpus=corpus, terms=t, one_way_to=o) for t, o in entries)
                announce_catalog_change()
                messages.success(request, f"{len(entries)} synonym entries imported into {corpus.slug}.")
                changelist = reverse("admin:autocomplete_synonym_changelist")
                return HttpResponseRedirect(f"{changelist}?corpus__id__exact={corpus.pk}")
        return _controls_import_page(
            self,
            request,
            form,
            title="Import synonyms from CSV",
            intro="One entry per row: a terms column (“wifi, wi-fi, wireless”: each finds the others) and "
            "optionally one_way_to (“laptop” one way to “notebook”), as “Export selected synonyms as CSV” "
            "writes them.",
        )


def _controls_import_page(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, form: forms.Form, *, title: str, intro: str
) -> TemplateResponse:
    """The import form of a control (synonyms, rules) in the admin's frame."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": title,
        "form": form,
        "intro": intro,
    }
    return TemplateResponse(request, "admin/autocomplete/controls_import.html", context)


class RuleAnswerFormSet(forms.BaseInlineFormSet):  # type: ignore[type-arg]
    """A rule's answers must be pairs of the rule's corpus (as submitted: a new rule has no row yet)."""

    def clean(self) -> None:
        super().clean()
        corpus_id = self.instance.corpus_id
        for form in self.forms:
            chosen = form.cleaned_data.get("pair") if hasattr(form, "cleaned_data") else None
            if chosen is not None and corpus_id is not None and chosen.corpus_id != corpus_id:
                form.add_error("pair", "This pair belongs to another corpus: choose one of the rule's corpus.")


class RuleAnswerInline(admin.TabularInline[RuleAnswer, Rule]):
    model = RuleAnswer
    formset = RuleAnswerFormSet
    extra = 1
    raw_id_fields = ["pair"]


@admin.register(Rule)
class RuleAdmin(AnnouncesControlChanges, admin.ModelAdmin[Rule]):
    """Pinned and hidden answers: typed text that matches a rule pins or hides its pairs."""

    list_display = ["text", "match", "corpus", "starts_at", "ends_at", "answer_summary"]
    list_filter = ["corpus", "match"]
    search_fields = ["text"]
    inlines = [RuleAnswerInline]
    change_list_template = "admin/autocomplete/rule/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [path("import/", view(self.import_view), name="autocomplete_rule_import"), *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """A controls export (synonyms and rules) added to a corpus; nothing written when it is refused."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ControlsImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            corpus = form.cleaned_data["corpus"]
            try:
                synonyms, rules, missing = import_controls(corpus, form.cleaned_data["file"].read())
            except ControlsFileError as exc:
                form.add_error("file", f"{exc} Nothing was written.")
            else:
                announce_catalog_change()
                messages.success(request, f"{synonyms} synonym entries and {rules} rules imported into {corpus.slug}.")
                if missing:
                    shown = "; ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
                    messages.warning(request, f"{len(missing)} answers name questions {corpus.slug} lacks: {shown}")
                changelist = reverse("admin:autocomplete_rule_changelist")
                return HttpResponseRedirect(f"{changelist}?corpus__id__exact={corpus.pk}")
        return _controls_import_page(
            self,
            request,
            form,
            title="Import synonyms and rules from JSON",
            intro="The file of the corpus action “Export selected corpus's synonyms and rules as JSON”, "
            "from this or another deployment: its synonyms and rules are added to the corpus chosen, each "
            "answer found by its source id or question text.",
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Rule]:
        return super().get_queryset(request).prefetch_related("answers")

    @admin.display(description="Answers")
    def answer_summary(self, rule: Rule) -> str:
        answers = list(rule.answers.all())
        pins = sum(answer.action == RuleAnswer.Action.PIN for answer in answers)
        return f"{pins} pinned, {len(answers) - pins} hidden"


def _pair_url(pair_id: int | None) -> str | None:
    return reverse("admin:autocomplete_qapair_change", args=[pair_id]) if pair_id is not None else None


def _ranks_text(audit: ReachabilityAudit, finding: dict[str, Any]) -> list[str]:
    """Each prefix's share and the pair's place there, as the audit page lists them: '50 %: —'."""
    return [
        f"{round(fraction * 100)} %: {place if place is not None else '—'}"
        for fraction, place in zip(audit.fractions, finding["ranks"], strict=False)
    ]


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
    formfield_overrides = HTTP_URL_FIELDS
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


@admin.register(QueryEncoder)
class QueryEncoderAdmin(admin.ModelAdmin[QueryEncoder]):
    """Trained query encoders; whether each is used, and why not when it is stale."""

    list_display = [
        "corpus",
        "encoder",
        "is_live",
        "state",
        "questions",
        "steps",
        "loss_before",
        "loss_after",
        "identity_cosine",
        "created_at",
    ]
    list_filter = ["corpus", "encoder", "is_live"]

    @admin.display(description="State")
    def state(self, record: QueryEncoder) -> str:
        if not record.is_live:
            return "superseded"
        reason = query_encoders.stale_reason(record)
        return f"stale: {reason}" if reason else "used for queries"

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
            "example_url": request.build_absolute_uri(reverse("autocomplete:api-suggest")) + "?q=how&corpus=SLUG",
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
