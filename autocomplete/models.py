"""Corpora of QA pairs, the embeddings computed for them, and which index build is live."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from django.db import models
from django.db.models import Q

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
    is_private = models.BooleanField(
        "private",
        default=False,
        help_text="Hidden from the search page; /api/suggest answers only requests with an API key for it.",
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
