"""The serving path: query-embedding cache, warm-up before traffic, ONNX export ahead of serving."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command

from autocomplete import search
from autocomplete.conf import app_settings
from autocomplete.models import Corpus
from autocomplete.warmup import warm_up
from embeddings.encoders import Encoder

pytestmark = pytest.mark.django_db


def counting(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    original = encoder.encode

    def spy(texts, **kwargs):
        calls.append(list(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", spy)
    return calls


def test_repeated_prefixes_come_from_the_cache(minilm: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(minilm, monkeypatch)
    first = search.embed_query(minilm, "how do I cancel my subscr")
    second = search.embed_query(minilm, "how do I cancel my subscr")
    assert calls == [["how do I cancel my subscr"]]
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and second.shape == (384,)


def test_whitespace_variants_share_one_vector(minilm: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tokenizer drops whitespace, so these embed alike: the cache must serve them as one.
    variants = ["how do I cancel ", "how do I cancel", "  how do  I\tcancel"]
    direct = minilm.encode(variants)
    np.testing.assert_allclose(direct[1:], np.repeat(direct[:1], 2, axis=0), atol=1e-6)
    calls = counting(minilm, monkeypatch)
    vectors = [search.embed_query(minilm, text) for text in variants]
    assert calls == [["how do I cancel"]]
    for vector in vectors:
        np.testing.assert_allclose(vector, direct[0], atol=1e-6)


def test_cache_can_be_turned_off(minilm: Encoder, monkeypatch: pytest.MonkeyPatch, configure) -> None:
    configure(QUERY_CACHE="")
    calls = counting(minilm, monkeypatch)
    search.embed_query(minilm, "refund policy")
    search.embed_query(minilm, "refund policy")
    assert len(calls) == 2


def test_warm_up_loads_every_live_index_before_traffic(small_corpus: Corpus) -> None:
    search.forget_loaded()
    assert warm_up() >= 0
    build = small_corpus.index_builds.get(is_live=True)
    assert list(search.loaded_spaces()) == [build.pk]
    assert len(search.loaded_spaces()[build.pk]) == 10


def test_warm_up_survives_a_broken_corpus(small_corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    build = small_corpus.index_builds.get(is_live=True)
    (app_settings().index_dir / build.file_name).unlink()
    warm_up()
    assert "Warm-up of small/minilm failed" in caplog.text


def test_export_onnx_command_prepares_live_encoders(small_corpus: Corpus) -> None:
    out = io.StringIO()
    call_command("export_onnx", stdout=out)
    assert out.getvalue().startswith("minilm: onnx-int8 ready in")
