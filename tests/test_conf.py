"""Tests for autocomplete.conf: the AUTOCOMPLETE dict parsed into one typed settings object."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from autocomplete.conf import AutocompleteSettings, app_settings
from embeddings.vector_index import HNSWOptions


def test_keys_left_out_take_the_defaults() -> None:
    conf = AutocompleteSettings.from_dict({})
    assert conf.default_encoder == "ivysaur" and conf.fallback_encoder == "minilm"
    assert conf.ann_threshold == 20_000 and conf.hnsw == HNSWOptions(m=32, ef_construction=200, ef_search=128)
    assert conf.query_cache == "query-embeddings" and conf.max_k == 20 and conf.default_k == 5


def test_folders_follow_the_var_dir_unless_set_apart(tmp_path: Path) -> None:
    conf = AutocompleteSettings.from_dict({"VAR_DIR": str(tmp_path), "UPLOAD_DIR": str(tmp_path / "elsewhere")})
    assert conf.var_dir == tmp_path
    assert (conf.index_dir, conf.onnx_dir) == (tmp_path / "indexes", tmp_path / "onnx")
    assert conf.upload_dir == tmp_path / "elsewhere"


def test_an_empty_fallback_or_default_corpus_means_none() -> None:
    conf = AutocompleteSettings.from_dict({"FALLBACK_ENCODER": "", "DEFAULT_CORPUS": "", "QUERY_CACHE": ""})
    assert conf.fallback_encoder is None and conf.default_corpus is None
    assert conf.query_cache == ""  # the cache is off, not the default alias


def test_hnsw_is_read_from_a_dict_of_capitalised_keys() -> None:
    conf = AutocompleteSettings.from_dict({"HNSW": {"M": 16, "EF_SEARCH": 64}})
    assert conf.hnsw == HNSWOptions(m=16, ef_construction=200, ef_search=64)


def test_an_unknown_key_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match="Unknown AUTOCOMPLETE setting.*MAX_ROW.*known:.*MAX_ROWS"):
        AutocompleteSettings.from_dict({"MAX_ROW": 5})


def test_an_override_is_seen_at_once(configure) -> None:
    before = app_settings()
    configure(MAX_ROWS=5)
    assert app_settings().max_rows == 5 and app_settings() is not before
