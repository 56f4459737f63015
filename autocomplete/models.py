"""Corpora of QA pairs, the embeddings computed for them, and which index build is live."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from embeddings.typed_query import tokenize

from .links import HttpURLValidator

_SPACE = re.compile(r"\s+")


def normalise_question(text: str) -> str:
    """The form two questions must share to count as the same question."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SPACE.sub(" ", text).strip()
    return text.rstrip(" ?!.")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Corpus(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    default_encoder = models.CharField(
        max_length=50,
        default="ivysaur",
        help_text="Encoder that answers when a request names none.",
    )
    # Changed whenever the corpus's keys change: servers compare it to rebuild their key index.
    keys_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    is_private = models.BooleanField(
        "private",
        default=False,
        help_text="Hidden from the search page; /api/suggest answers only requests with an API key for it.",
    )
    # Where a visitor goes when no suggestion fits: offered beside the box and under the results of a search.
    handoff_text = models.CharField(
        "no-answer text",
        max_length=300,
        blank=True,
        help_text="Shown when nothing matches or the visitor searches without choosing, "
        "e.g. “Can't find it? Our support team answers within a day.” Plain text.",
    )
    handoff_url = models.URLField(
        "no-answer link",
        max_length=2000,
        blank=True,
        validators=[HttpURLValidator()],
        help_text="An http(s) address offered with that text, e.g. your contact form.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "corpora"

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A key that lets a client query private corpora; only the SHA-256 of the key is stored."""

    name = models.CharField(max_length=200, help_text="Who or what uses the key, e.g. 'help widget on example.com'.")
    corpora = models.ManyToManyField(Corpus, related_name="api_keys", help_text="The private corpora it may query.")
    prefix = models.CharField(max_length=12, editable=False, help_text="The key's first characters, to recognise it.")
    key_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="To the hour: written at most hourly, not on every request."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class QAPair(models.Model):
    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="pairs")
    external_id = models.CharField(
        max_length=200, blank=True, help_text="The id the source file gave this pair, if any."
    )
    question = models.TextField()
    normalised_question = models.TextField(editable=False)
    answer = models.TextField()
    url = models.URLField(max_length=2000, blank=True)
    tags = models.CharField(max_length=500, blank=True, help_text="Separated by |")
    is_featured = models.BooleanField(
        "featured",
        default=False,
        help_text="Offered when the search box is focused empty, until visitors' choices say what is popular.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "QA pair"
        constraints = [
            models.UniqueConstraint(fields=["corpus", "normalised_question"], name="unique_question_per_corpus"),
            models.UniqueConstraint(
                fields=["corpus", "external_id"],
                condition=~Q(external_id=""),
                name="unique_external_id_per_corpus",
            ),
        ]

    def __str__(self) -> str:
        return self.question[:80]

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.normalised_question = normalise_question(self.question)
        super().save(*args, **kwargs)


class StoredEmbedding(models.Model):
    """An encoder's vector for a text, so unchanged questions are never embedded twice."""

    encoder = models.CharField(max_length=50)
    text_sha256 = models.CharField(max_length=64)
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["encoder", "text_sha256"], name="unique_embedding")]

    def __str__(self) -> str:
        return f"{self.encoder}:{self.text_sha256[:12]}"


class IndexBuild(models.Model):
    """One index file for a corpus and encoder; at most one per pair is live."""

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="index_builds")
    encoder = models.CharField(max_length=50)
    file_name = models.CharField(max_length=300)
    kind = models.CharField(max_length=20, help_text="flat (exact search), or hnsw-sq8 or hnsw (approximate)")
    vector_count = models.PositiveIntegerField()
    dimension = models.PositiveIntegerField()
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the index file")
    is_live = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    build_seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["corpus", "encoder"],
                condition=Q(is_live=True),
                name="one_live_index_per_corpus_encoder",
            )
        ]

    def __str__(self) -> str:
        state = "live" if self.is_live else "old"
        return f"{self.corpus.slug}/{self.encoder} #{self.pk} ({state}, {self.vector_count} vectors)"


class QueryEncoder(models.Model):
    """A query encoder trained for a corpus's encoder (embeddings/query_encoder.py); one live per pair.

    It answers that corpus's queries only while the corpus encoder still produces the vectors it
    was trained to meet (`vector_space`): after the encoder or its export changes, it is stale and
    the corpus encoder answers alone until it is trained again.
    """

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="query_encoders")
    encoder = models.CharField(max_length=50, help_text="The corpus encoder it was trained for.")
    vector_space = models.CharField(max_length=200, help_text="That encoder's vectors when it was trained.")
    content_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the questions it was trained on.")
    directory = models.CharField(max_length=300, help_text="Folder name in AUTOCOMPLETE_QUERY_ENCODER_DIR.")
    questions = models.PositiveIntegerField(help_text="Distinct questions trained on, extra files included.")
    extra_files = models.JSONField(default=list, blank=True, help_text="Question files added to the corpus's own.")
    steps = models.PositiveIntegerField()
    seed = models.IntegerField()
    loss_before = models.FloatField(help_text="Contrastive loss on prefixes of the questions before training.")
    loss_after = models.FloatField()
    identity_cosine = models.FloatField(help_text="Mean cosine of complete questions to their stored vectors.")
    train_seconds = models.FloatField(default=0)
    is_live = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["corpus", "encoder"],
                condition=Q(is_live=True),
                name="one_live_query_encoder_per_corpus_encoder",
            )
        ]

    def __str__(self) -> str:
        state = "live" if self.is_live else "old"
        return f"{self.corpus.slug}/{self.encoder} query encoder #{self.pk} ({state})"


class IngestJob(models.Model):
    """One upload (or re-index, or query encoder training) of a corpus, run in the background, with its progress."""

    class Kind(models.TextChoices):
        UPLOAD = "upload", "Upload"
        REINDEX = "reindex", "Re-index"
        QUERY_ENCODER = "query-encoder", "Train query encoder"

    class Status(models.TextChoices):
        PREVIEW = "preview", "Awaiting confirmation"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        INTERRUPTED = "interrupted", "Interrupted"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)

    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.UPLOAD)
    corpus = models.ForeignKey(
        Corpus,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="jobs",
        help_text="Empty until a job for a new corpus has created it.",
    )
    new_corpus_name = models.CharField(max_length=200, blank=True)
    new_corpus_slug = models.SlugField(max_length=100, blank=True)
    mode = models.CharField(max_length=10, default="merge")
    encoders = models.JSONField(default=list)
    original_name = models.CharField(max_length=255, blank=True, help_text="Shown only; never used as a path.")
    stored_file = models.CharField(max_length=100, blank=True, help_text="Random name in AUTOCOMPLETE_UPLOAD_DIR.")
    file_format = models.CharField(max_length=10, blank=True)
    preview = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PREVIEW)
    stage = models.CharField(max_length=50, blank=True)
    cancel_requested = models.BooleanField(default=False)
    rows_total = models.PositiveIntegerField(default=0)
    rows_parsed = models.PositiveIntegerField(default=0)
    embed_total = models.PositiveIntegerField(default=0)
    rows_embedded = models.PositiveIntegerField(default=0)
    index_total = models.PositiveIntegerField(default=0)
    rows_indexed = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker_host = models.CharField(max_length=255, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The database's clock when the job joined its corpus's line: jobs of one corpus run in this order.
    queued_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "ingest job"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} → {self.corpus_label} ({self.get_status_display()})"

    @property
    def corpus_label(self) -> str:
        return self.corpus.slug if self.corpus is not None else self.new_corpus_slug

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class AnalysisStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ContentGap(models.Model):
    """The latest grouping by meaning of a corpus's unanswered queries over a date range."""

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="content_gaps")
    start = models.DateField()
    end = models.DateField()
    source = models.CharField(max_length=200, blank=True, help_text="Where the queries came from.")
    encoder = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=10, choices=AnalysisStatus.choices, default=AnalysisStatus.QUEUED)
    error = models.TextField(blank=True)
    similarity = models.FloatField(default=0.0, help_text="Mean cosine above which groups were merged.")
    wordings = models.PositiveIntegerField(default=0, help_text="Distinct queries grouped.")
    searches = models.PositiveIntegerField(default=0, help_text="Sum of their counts.")
    # [{"size", "wordings", "typical", "examples", "nearest_id", "nearest_question", "nearest_cosine"}],
    # largest first (autocomplete/gaps.py).
    groups = models.JSONField(default=list, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-end", "-start"]
        verbose_name = "content gap report"
        constraints = [models.UniqueConstraint(fields=["corpus", "start", "end"], name="one_gap_report_per_range")]

    def __str__(self) -> str:
        return f"{self.corpus.slug} gaps {self.start}..{self.end}"


class ReachabilityAudit(models.Model):
    """The latest audit of which pairs a visitor typing their own question does not reach."""

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="reachability_audits")
    encoder = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=AnalysisStatus.choices, default=AnalysisStatus.QUEUED)
    error = models.TextField(blank=True)
    k = models.PositiveIntegerField(default=5)
    fractions = models.JSONField(default=list, blank=True)
    shadow_similarity = models.FloatField(default=0.0)
    pair_count = models.PositiveIntegerField(default=0)
    # [{"id", "question", "ranks", "reach", "shadowed_by"}], worst first (autocomplete/reachability.py).
    findings = models.JSONField(default=list, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-requested_at"]
        verbose_name = "reachability audit"
        constraints = [models.UniqueConstraint(fields=["corpus", "encoder"], name="one_audit_per_corpus_encoder")]

    def __str__(self) -> str:
        return f"{self.corpus.slug}/{self.encoder} reachability"


class SearchEvent(models.Model):
    """One settled query in the search box (and the suggestion chosen for it, if any), without personal data.

    No address, user agent, cookie or account is kept: `page_view` is a random id the page makes for
    itself, so a query can be tied to its choice and nothing to a person.
    """

    class Trigger(models.TextChoices):
        PAUSE = "pause", "Pause"
        SUBMIT = "submit", "Submit"
        CHOICE = "choice", "Choice"
        LEAVE = "leave", "Leave"

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="search_events")
    encoder = models.CharField(max_length=50)
    page_view = models.CharField(max_length=64, db_index=True)
    query = models.CharField(max_length=500, blank=True, help_text="The settled text, whitespace collapsed.")
    shown_ids = models.JSONField(default=list, help_text="Ids of the QA pairs shown, best first.")
    # len(shown_ids), kept as a column so "no suggestion" is an indexed comparison, not a JSON one.
    shown_count = models.PositiveSmallIntegerField(default=0)
    # No database constraint and no SET_NULL: a pair deleted later (a replace upload) must not turn
    # its past choices into "no choice", which would corrupt the choice rate.
    chosen_pair = models.ForeignKey(
        QAPair, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    chosen_position = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 for the first shown.")
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["corpus", "created_at"], name="search_event_corpus_time")]

    def __str__(self) -> str:
        return f"{self.corpus_id} {self.trigger}: {self.query[:60]}"


class Synonym(models.Model):
    """Words or phrases a corpus treats as one on the lexical side (autocomplete/controls.py)."""

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="synonyms")
    terms = models.CharField(
        max_length=500,
        help_text="Words or phrases separated by commas, e.g. 'wifi, wi-fi, wireless': each finds the others.",
    )
    one_way_to = models.CharField(
        "one way to",
        max_length=500,
        blank=True,
        help_text="When set, the terms also find these (comma-separated) but not the reverse: "
        "terms 'laptop', one way to 'notebook'.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["corpus", "terms"]

    def __str__(self) -> str:
        return f"{self.terms} → {self.one_way_to}" if self.one_way_to else self.terms


class Rule(models.Model):
    """Typed text that pins chosen pairs to positions or hides pairs, optionally between two dates."""

    class Match(models.TextChoices):
        EXACT = "exact", "Is exactly"
        PREFIX = "prefix", "Starts with"
        CONTAINS = "contains", "Contains"

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="rules")
    match = models.CharField(max_length=10, choices=Match.choices, default=Match.EXACT)
    text = models.CharField(
        max_length=200,
        help_text="Compared as the lexical side reads text: case, accents and punctuation ignored.",
    )
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Empty: already in force.")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never ends.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["corpus", "text"]

    def __str__(self) -> str:
        return f"{self.get_match_display()} “{self.text}”"

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The end must come after the start."})
        if not tokenize(self.text):
            raise ValidationError({"text": "Give at least one word or number: punctuation alone matches nothing."})


class RuleAnswer(models.Model):
    """One pair a rule pins to a position, or hides."""

    class Action(models.TextChoices):
        PIN = "pin", "Pin"
        HIDE = "hide", "Hide"

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="answers")
    pair = models.ForeignKey(QAPair, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.PIN)
    position = models.PositiveSmallIntegerField(default=1, help_text="1 = first; pins only.")

    class Meta:
        ordering = ["rule", "position"]
        constraints = [models.UniqueConstraint(fields=["rule", "pair"], name="one_action_per_rule_pair")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} #{self.pair_id}"


class PairKey(models.Model):
    """Another wording of a pair's question (a visitors' settled query, or imported) that finds it too.

    A removed learnt key stays as a row with `removed_at` set, so the events that taught it cannot
    teach it again; it goes when those events expire.
    """

    class Source(models.TextChoices):
        CHOICES = "choices", "Visitors' choices"
        IMPORT = "import", "Imported"

    pair = models.ForeignKey(QAPair, on_delete=models.CASCADE, related_name="keys")
    text = models.CharField(max_length=500, help_text="Lower case, whitespace collapsed.")
    source = models.CharField(max_length=10, choices=Source.choices)
    page_views = models.PositiveIntegerField(
        default=0, help_text="Distinct page views that chose the pair after this query (0 for imported keys)."
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["pair", "text"]
        verbose_name = "key"
        constraints = [models.UniqueConstraint(fields=["pair", "text"], name="one_key_per_pair_text")]

    def __str__(self) -> str:
        return self.text[:80]
