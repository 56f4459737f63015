"""Query encoders of live corpora: trained by command or admin job, served only for their own vector space."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from autocomplete import jobs, reachability, search
from autocomplete.catalog import catalog, invalidate_catalog
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus, IngestJob, QueryEncoder
from autocomplete.parsing import parse_qa_file
from autocomplete.query_encoders import (
    changed_enough,
    forget_loaded_query_encoders,
    query_encoder_for,
    questions_sha256,
    stale_reason,
)
from embeddings.encoders import Encoder
from embeddings.query_encoder import read_manifest_result

from .conftest import SMALL_FAQ, faq_csv

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_query_encoder_dir(configure: Callable[..., None], tmp_path: Path) -> None:
    configure(QUERY_ENCODER_DIR=tmp_path / "query-encoders")
    forget_loaded_query_encoders()


def register(corpus: Corpus, trained: Path, tmp_path: Path, *, vector_space: str) -> QueryEncoder:
    """A live record for a copy of an already trained directory (training is tested elsewhere)."""
    shutil.copytree(trained, tmp_path / "query-encoders" / "copy")
    result = read_manifest_result(trained)
    record = QueryEncoder.objects.create(
        corpus=corpus,
        encoder="minilm",
        vector_space=vector_space,
        content_sha256=questions_sha256([]),
        directory="copy",
        questions=result.questions,
        steps=result.steps,
        seed=3,
        loss_before=result.loss_before,
        loss_after=result.loss_after,
        identity_cosine=result.identity_cosine,
        is_live=True,
    )
    invalidate_catalog()
    return record


def test_the_command_trains_registers_and_serving_uses_it(small_corpus: Corpus, minilm: Encoder) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("train_query_encoder", "small", "--steps", "2", stdout=out, stderr=err)
    record = QueryEncoder.objects.get(corpus=small_corpus, is_live=True)
    assert "query encoder live" in out.getvalue() and "step 2/2" in err.getvalue()
    assert record.encoder == "minilm" and record.vector_space == minilm.vector_space and record.questions == 10
    entry = catalog().corpora["small"]
    queries = query_encoder_for(entry, "minilm", minilm)
    assert queries is not minilm and queries.vector_space != minilm.vector_space
    result = search.suggestions_for("How do I cancel my subscription?", corpus="small", k=3)
    assert result.suggestions[0].question == "How do I cancel my subscription?"


def test_only_its_own_corpus_and_vector_space_use_it(
    small_corpus: Corpus, minilm: Encoder, trained_query_encoder: Path, tmp_path: Path
) -> None:
    other = Corpus.objects.create(name="Other", slug="other", default_encoder="minilm")
    ingest_parsed(other, parse_qa_file(faq_csv(), filename="faq.csv"), encoder_key="minilm")
    register(small_corpus, trained_query_encoder, tmp_path, vector_space=minilm.vector_space)
    served = query_encoder_for(catalog().corpora["small"], "minilm", minilm)
    assert served is not minilm
    assert query_encoder_for(catalog().corpora["other"], "minilm", minilm) is minilm
    # The query vector cache keeps the two apart.
    typed = "how do i canc"
    assert not np.allclose(search.embed_query(served, typed), search.embed_query(minilm, typed))


def test_the_reachability_audit_embeds_prefixes_with_the_query_encoder_as_served(
    small_corpus: Corpus,
    minilm: Encoder,
    trained_query_encoder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = search.served_space("small")
    assert before.queries is before.encoder and before.encoder.vector_space == minilm.vector_space
    register(small_corpus, trained_query_encoder, tmp_path, vector_space=minilm.vector_space)
    served = search.served_space("small")
    assert served.encoder.vector_space == minilm.vector_space != served.queries.vector_space
    audited_with: list[str] = []
    real_audit = reachability.audit_space

    def recording(space: search.SearchSpace, encoder: Encoder, *args: object) -> list[reachability.PairReach]:
        audited_with.append(encoder.vector_space)
        return real_audit(space, encoder, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(reachability, "audit_space", recording)
    audit = reachability.audit_now(small_corpus)
    assert audit.status == "done" and audit.pair_count == 10
    assert audited_with == [served.queries.vector_space]


def test_a_stale_query_encoder_is_not_used_and_the_admin_says_why(
    small_corpus: Corpus, minilm: Encoder, trained_query_encoder: Path, tmp_path: Path, admin_client: Client
) -> None:
    record = register(small_corpus, trained_query_encoder, tmp_path, vector_space="onnx-int8/f3-0123456789ab")
    assert query_encoder_for(catalog().corpora["small"], "minilm", minilm) is minilm
    reason = stale_reason(record)
    assert reason is not None and "vectors changed" in reason
    page = admin_client.get(f"/admin/autocomplete/corpus/{small_corpus.pk}/change/").content.decode()
    assert "query encoder is not used" in page
    listing = admin_client.get("/admin/autocomplete/queryencoder/").content.decode()
    assert "stale:" in listing
    QueryEncoder.objects.filter(pk=record.pk).update(vector_space=minilm.vector_space)
    record.refresh_from_db()
    assert stale_reason(record) is None


def test_the_admin_action_trains_as_a_job_with_progress(
    admin_client: Client, small_corpus: Corpus, configure: Callable[..., None]
) -> None:
    configure(QUERY_ENCODER_STEPS=1)
    response = admin_client.post(
        "/admin/autocomplete/corpus/", {"action": "query_encoder_action", "_selected_action": [small_corpus.pk]}
    )
    assert response.status_code == 302
    job = IngestJob.objects.get(kind="query-encoder")
    assert job.status == "succeeded", job.error
    assert (job.rows_indexed, job.index_total) == (1, 1)
    assert job.report["query_encoder"]["steps"] == 1
    page = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert 'id="query-encoder-report"' in page and "Training steps" in page
    assert QueryEncoder.objects.filter(corpus=small_corpus, is_live=True).count() == 1


def test_an_ingest_that_changes_enough_retrains(small_corpus: Corpus, configure: Callable[..., None]) -> None:
    configure(QUERY_ENCODER_RETRAIN_SHARE=0.2)
    assert not changed_enough(small_corpus, 1)
    assert changed_enough(small_corpus, 2)
    configure(QUERY_ENCODER_RETRAIN_SHARE=0)
    assert not changed_enough(small_corpus, 10)


def test_an_upload_that_changes_enough_trains_the_live_query_encoder_again(
    small_corpus: Corpus, minilm: Encoder, trained_query_encoder: Path, tmp_path: Path, configure: Callable[..., None]
) -> None:
    configure(QUERY_ENCODER_STEPS=1, QUERY_ENCODER_RETRAIN_SHARE=0.2)
    old = register(small_corpus, trained_query_encoder, tmp_path, vector_space=minilm.vector_space)
    added = [("Do you offer student discounts?", "Yes, 30 %."), ("Can I pause my plan?", "Yes, for 3 months.")]
    data = faq_csv(SMALL_FAQ + added + [("Is my data encrypted?", "Yes, at rest and in transit.")])
    upload = jobs.confirm_upload(
        jobs.create_upload_preview(data, filename="faq.csv", corpus=small_corpus, mode="merge", encoders=["minilm"])
    )
    assert upload.status == "succeeded", upload.error
    retrain = IngestJob.objects.get(kind="query-encoder")
    assert upload.report["query_encoder_jobs"] == [retrain.pk] and retrain.status == "succeeded", retrain.error
    live = QueryEncoder.objects.get(corpus=small_corpus, is_live=True)
    assert live.pk != old.pk and live.questions == 13
    assert not QueryEncoder.objects.filter(pk=old.pk).exists()


def test_the_command_refuses_what_it_cannot_train(small_corpus: Corpus, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Unknown corpus"):
        call_command("train_query_encoder", "nope")
    with pytest.raises(CommandError, match="no live ivysaur index"):
        call_command("train_query_encoder", "small", "--encoder", "ivysaur")
    bad = tmp_path / "questions.csv"
    bad.write_text("q\nx\n")
    with pytest.raises(CommandError, match="no 'question' column"):
        call_command("train_query_encoder", "small", "--questions", str(bad))
    with pytest.raises(CommandError, match="cannot be read"):
        call_command("train_query_encoder", "small", "--questions", str(tmp_path / "missing.txt"))
    assert not QueryEncoder.objects.exists()
