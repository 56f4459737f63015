"""Backups: a restore into a fresh deployment serves identical suggestions; damaged, incomplete, newer
and older backups, snapshots taken while an ingest job commits, and the --force rules."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client

from autocomplete import backup, jobs
from autocomplete.backup import MANIFEST, BackupError, backup_to, restore_from, verified_manifest
from autocomplete.conf import app_settings
from autocomplete.ingest import reindex
from autocomplete.models import Corpus, IndexBuild, IngestJob, QAPair

from .conftest import database_env, faq_csv, start_worker

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = ["how do I res", "cancel my", "invoices", "mobile", "card declin", "contact sup"]
DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
NEW_PAIRS = [(f"How do I set option {n} of the widget?", f"Widget option {n} is in Settings.") for n in range(40)]

# The same request as `served`, in another process configured by its environment alone.
SERVE_IN_SUBPROCESS = """
import json, sys
import django
django.setup()
from django.test import Client
from django.db.migrations.loader import MigrationLoader
client = Client()
answers = {}
for q in json.loads(sys.argv[1]):
    body = client.get("/api/suggest", {"q": q, "corpus": "small"}).json()
    answers[q] = [[s["id"], s["question"], s["score"]] for s in body["suggestions"]]
print(json.dumps(answers))
"""

pytestmark = pytest.mark.django_db(transaction=True)  # the backup reads what is committed, as in production


def served(client: Client) -> dict[str, list[list[Any]]]:
    """Ids, questions and scores /api/suggest gives for each prefix."""
    answers = {}
    for q in PREFIXES:
        body = client.get("/api/suggest", {"q": q, "corpus": "small"}).json()
        answers[q] = [[s["id"], s["question"], s["score"]] for s in body["suggestions"]]
    return answers


def database_file() -> str:
    """The name of the database's file in a backup of this test's database."""
    return backup.DATABASE_FILES[connection.vendor]


@pytest.fixture
def fresh_deployment(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a new deployment: an empty database and index directory under tmp_path/fresh.

    It shares the test run's ONNX export, which no backup holds: a deployment makes its own with
    `manage.py export_onnx`, from the same weights. On PostgreSQL its database is a new one beside
    the test database, dropped afterwards.
    """
    root = tmp_path / "fresh"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "AUTOCOMPLETE_VAR_DIR": str(root),
        "AUTOCOMPLETE_DATABASE_PATH": str(root / "db.sqlite3"),
        "AUTOCOMPLETE_INDEX_DIR": str(root / "indexes"),
        "AUTOCOMPLETE_UPLOAD_DIR": str(root / "uploads"),
        "AUTOCOMPLETE_ONNX_DIR": str(app_settings().onnx_dir),
    }
    if connection.vendor == "sqlite":
        yield env
        return
    name = f"{connection.settings_dict['NAME']}_fresh"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = database_env()["AUTOCOMPLETE_TEST_DATABASE_URL"]
    yield env | {"AUTOCOMPLETE_TEST_DATABASE_URL": f"{url.rsplit('/', 1)[0]}/{name}"}
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_in(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def served_in(env: dict[str, str]) -> dict[str, list[list[Any]]]:
    result = run_in(env, sys.executable, "-c", SERVE_IN_SUBPROCESS, json.dumps(PREFIXES))
    assert result.returncode == 0, result.stderr[-3000:]
    answers: dict[str, list[list[Any]]] = json.loads(result.stdout)
    return answers


def index_files() -> list[str]:
    return sorted(path.name for path in app_settings().index_dir.iterdir())


def restore_into_fresh_deployment(directory: Path, env: dict[str, str]) -> str:
    result = run_in(env, sys.executable, "manage.py", "restore", str(directory))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_restore_into_a_fresh_deployment_serves_identical_suggestions(
    small_corpus: Corpus, client: Client, tmp_path: Path, fresh_deployment: dict[str, str]
) -> None:
    before = served(client)
    assert all(before.values())
    out = io.StringIO()
    call_command("backup", str(tmp_path / "backup"), stdout=out)
    assert "corpora 1, pairs 10, live builds 1 (3 files" in out.getvalue()
    manifest = verified_manifest(tmp_path / "backup")
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    assert manifest["live_builds"] == [
        {
            "corpus": "small",
            "encoder": "minilm",
            "file_name": live.file_name,
            "checksum": live.checksum,
            "vector_count": 10,
            "kind": live.kind,
        }
    ]
    on_disk = sorted(name for app, name in MigrationLoader(None).disk_migrations if app == "autocomplete")
    assert manifest["migrations"]["autocomplete"] == on_disk
    backed_up = sorted(entry["name"] for entry in manifest["files"])
    assert backed_up == [database_file(), *(f"indexes/{name}" for name in index_files())]
    assert len(backed_up) == 3  # the database, the index file and its lexical file
    modes = {name: (tmp_path / "backup" / name).stat().st_mode & 0o777 for name in [*backed_up, MANIFEST]}
    assert set(modes.values()) == {0o600}, modes  # the database holds password hashes and sessions
    assert (tmp_path / "backup").stat().st_mode & 0o777 == 0o700

    env = fresh_deployment
    report = restore_into_fresh_deployment(tmp_path / "backup", env)
    assert "corpora: 1\npairs: 10\nlive builds: small/minilm (10 vectors)\n" in report
    assert served_in(env) == before
    # The lexical file was read, not rebuilt: the restored directory holds exactly the backed-up files.
    assert sorted(p.name for p in (tmp_path / "fresh" / "indexes").iterdir()) == index_files()


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:4096])


def _delete(path: Path) -> None:
    path.unlink()


def _backed_up(manifest: dict[str, Any], which: str) -> str:
    names: list[str] = [entry["name"] for entry in manifest["files"]]
    if which == "database":
        return database_file()
    lexical = [name for name in names if ".lexical-" in name]
    return lexical[0] if which == "lexical" else next(n for n in names if n.endswith(".faiss"))


@pytest.mark.parametrize(
    ("damage", "which"),
    [(_flip_a_byte, "index"), (_truncate, "database"), (_delete, "index"), (_flip_a_byte, "lexical")],
    ids=["index-byte-flipped", "database-truncated", "index-deleted", "lexical-byte-flipped"],
)
def test_a_damaged_backup_is_refused_with_the_file_named_and_nothing_changed(
    small_corpus: Corpus, client: Client, tmp_path: Path, damage: Callable[[Path], None], which: str
) -> None:
    manifest = backup_to(tmp_path / "backup")
    name = _backed_up(manifest, which)
    damage(tmp_path / "backup" / name)
    Corpus.objects.create(name="Made after the backup", slug="later")
    before, files = served(client), index_files()

    with pytest.raises(BackupError, match=name.replace(".", r"\.")) as refused:
        restore_from(tmp_path / "backup", force=True)
    assert "Nothing was changed" in str(refused.value)
    assert Corpus.objects.filter(slug="later").exists() and QAPair.objects.count() == 10
    assert index_files() == files and served(client) == before


def test_a_backup_that_did_not_finish_has_no_manifest_and_is_refused(
    small_corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(index_file: str) -> list[Path]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backup, "lexical_files_of", disk_full)
    with pytest.raises(OSError, match="No space left"):
        backup_to(tmp_path / "backup")
    assert (tmp_path / "backup" / database_file()).is_file() and not (tmp_path / "backup" / MANIFEST).exists()
    with pytest.raises(BackupError, match=f"holds no {MANIFEST}.*interrupted"):
        restore_from(tmp_path / "backup", force=True)

    monkeypatch.undo()
    with pytest.raises(BackupError, match="not empty.*--force"):
        backup_to(tmp_path / "backup")
    backup_to(tmp_path / "backup", force=True)
    assert verified_manifest(tmp_path / "backup")["pairs"] == 10


def test_force_replaces_a_backup_and_keeps_files_it_did_not_write(small_corpus: Corpus, tmp_path: Path) -> None:
    first = backup_to(tmp_path / "backup")
    (tmp_path / "backup" / "NOTES.txt").write_text("kept by the operator")
    small_corpus.pairs.filter(question__startswith="Is there").delete()
    reindex(small_corpus, encoder_key="minilm")
    with pytest.raises(BackupError, match="not empty"):
        backup_to(tmp_path / "backup")
    second = backup_to(tmp_path / "backup", force=True)
    assert (first["pairs"], second["pairs"]) == (10, 9)
    assert (tmp_path / "backup" / "NOTES.txt").read_text() == "kept by the operator"
    listed = {entry["name"] for entry in second["files"]}
    on_disk = {f"indexes/{p.name}" for p in (tmp_path / "backup" / "indexes").iterdir()}
    assert on_disk == listed - {database_file()}  # the first backup's index files are gone
    assert first["live_builds"][0]["file_name"] != second["live_builds"][0]["file_name"]


def test_restoring_over_corpora_needs_force_and_then_brings_the_backup_back(
    small_corpus: Corpus, client: Client, tmp_path: Path
) -> None:
    handoff = {"handoff_text": "Ask our team", "handoff_url": "https://example.com/contact"}
    Corpus.objects.filter(pk=small_corpus.pk).update(**handoff)
    before = served(client)
    backup_to(tmp_path / "backup")
    Corpus.objects.filter(pk=small_corpus.pk).update(handoff_text="", handoff_url="")
    QAPair.objects.filter(question__startswith="How do I cancel").delete()
    reindex(small_corpus, encoder_key="minilm")
    Corpus.objects.create(name="Made after the backup", slug="later")
    changed = served(client)
    assert changed != before

    with pytest.raises(BackupError, match=r"already holds corpora \(2\).*Stop the server and the workers.*--force"):
        restore_from(tmp_path / "backup")
    assert served(client) == changed and Corpus.objects.filter(slug="later").exists()

    report = restore_from(tmp_path / "backup", force=True)
    assert (report.corpora, report.pairs, report.live_builds) == (1, 10, ["small/minilm (10 vectors)"])
    assert report.migrations_applied == []
    assert served(client) == before
    # The corpus's settings come back with its pairs: the no-answer hand-off too.
    assert Corpus.objects.filter(slug="small", **handoff).exists()


def _edit_manifest(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    edit(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_a_backup_made_by_newer_code_is_refused(small_corpus: Corpus, tmp_path: Path) -> None:
    backup_to(tmp_path / "backup")
    _edit_manifest(tmp_path / "backup", lambda m: m["migrations"]["autocomplete"].append("0099_from_the_future"))
    files = index_files()
    with pytest.raises(BackupError, match=r"newer code \(migrations autocomplete\.0099_from_the_future"):
        restore_from(tmp_path / "backup", force=True)
    assert index_files() == files


def test_a_backup_older_than_the_code_is_migrated(small_corpus: Corpus, client: Client, tmp_path: Path) -> None:
    """An older backup, made here by removing the sessions app's migration from a copy."""
    before = served(client)
    backup_to(tmp_path / "backup")
    database = tmp_path / "backup" / database_file()
    if connection.vendor == "sqlite":
        with closing(sqlite3.connect(database)) as older:
            older.execute("DROP TABLE django_session")
            older.execute("DELETE FROM django_migrations WHERE app = 'sessions'")
            older.commit()
    else:
        _make_pgdump_older(database)

    def older_code(manifest: dict[str, Any]) -> None:
        del manifest["migrations"]["sessions"]
        entry = next(e for e in manifest["files"] if e["name"] == database_file())
        entry["size"], entry["sha256"] = database.stat().st_size, backup._sha256_of(database)

    _edit_manifest(tmp_path / "backup", older_code)
    report = restore_from(tmp_path / "backup", force=True)
    assert report.migrations_applied == ["sessions.0001_initial"]
    assert "django_session" in connection.introspection.table_names()
    assert served(client) == before


def _make_pgdump_older(dump: Path) -> None:
    """The dump without the sessions app's migration, through a scratch database it is restored into."""
    scratch = f"{connection.settings_dict['NAME']}_older"
    url = f"{database_env()['AUTOCOMPLETE_TEST_DATABASE_URL'].rsplit('/', 1)[0]}/{scratch}"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
        cursor.execute(f'CREATE DATABASE "{scratch}"')
    try:
        subprocess.run(["pg_restore", "--no-owner", f"--dbname={url}", str(dump)], check=True, capture_output=True)
        sql = "DROP TABLE django_session; DELETE FROM django_migrations WHERE app = 'sessions';"
        subprocess.run(["psql", "--quiet", f"--dbname={url}", "-c", sql], check=True, capture_output=True)
        subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", url], check=True, capture_output=True)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def test_a_manifest_cannot_name_files_outside_the_backup(small_corpus: Corpus, tmp_path: Path) -> None:
    backup_to(tmp_path / "backup")
    (tmp_path / "outside").write_bytes(b"x")
    entry = {"name": "indexes/../../outside", "size": 1, "sha256": backup._sha256_of(tmp_path / "outside")}
    _edit_manifest(tmp_path / "backup", lambda m: m["files"].append(entry))
    with pytest.raises(BackupError, match="which no backup holds"):
        restore_from(tmp_path / "backup", force=True)


@pytest.mark.parametrize("manifest", ['{"format": 1, "engi', '{"format": 1}', "[]"], ids=["cut", "short", "list"])
def test_a_damaged_manifest_is_refused(small_corpus: Corpus, tmp_path: Path, manifest: str) -> None:
    backup_to(tmp_path / "backup")
    (tmp_path / "backup" / MANIFEST).write_text(manifest)
    with pytest.raises(BackupError, match=f"{MANIFEST} in .* is damaged"):
        restore_from(tmp_path / "backup", force=True)


def test_a_missing_pg_dump_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match=r"pg_dump was not found on PATH.*apt-get install postgresql-client"):
        backup.postgresql_tool("pg_dump")


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"worker exited early: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the worker")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_backup_taken_while_an_ingest_job_commits_is_a_snapshot(
    small_corpus: Corpus,
    client: Client,
    settings: Any,
    configure: Callable[..., None],
    tmp_path: Path,
    fresh_deployment: dict[str, str],
) -> None:
    settings.TASKS = DATABASE_TASKS
    configure(UPLOAD_DIR=tmp_path / "uploads")
    before = served(client)
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    preview = jobs.create_upload_preview(
        faq_csv(NEW_PAIRS), filename="more.csv", corpus=small_corpus, mode="merge", encoders=["minilm"]
    )
    job = jobs.confirm_upload(preview)

    def new_index_written() -> bool:
        return any(p.suffix == ".faiss" and p.name != live.file_name for p in app_settings().index_dir.iterdir())

    process = start_worker("--batch", slow=True)
    try:
        # The job's write transaction is open: its pairs are added and its new index file is written.
        _wait_for(lambda: IngestJob.objects.get(pk=job.pk).stage == "indexing" and new_index_written(), process)
        manifest = backup_to(tmp_path / "backup")
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert QAPair.objects.count() == 50 and served(client) != before
    # The backup is the state before the commit, whole: its pairs and its live index agree.
    assert manifest["pairs"] == 10 and manifest["live_builds"][0]["file_name"] == live.file_name
    env = fresh_deployment
    report = restore_into_fresh_deployment(tmp_path / "backup", env)
    assert "pairs: 10\nlive builds: small/minilm (10 vectors)" in report
    assert served_in(env) == before


def test_a_restore_brings_back_the_corpus_controls(small_corpus: Corpus, client: Client, tmp_path: Path) -> None:
    from autocomplete.catalog import announce_catalog_change
    from autocomplete.exporting import corpus_controls
    from autocomplete.models import Rule, RuleAnswer, Synonym

    Synonym.objects.create(corpus=small_corpus, terms="receipts", one_way_to="invoices")
    rule = Rule.objects.create(corpus=small_corpus, text="mobile", match="contains")
    RuleAnswer.objects.create(rule=rule, pair=QAPair.objects.get(question="How do I contact support?"))
    announce_catalog_change()

    def answers() -> tuple[str | None, bool]:
        found = client.get("/api/suggest", {"q": "receipts", "corpus": "small"}).json()["suggestions"]
        pinned = client.get("/api/suggest", {"q": "mobile", "corpus": "small"}).json()["suggestions"][0]
        return (found[0]["question"] if found else None), pinned.get("pinned", False)

    assert answers() == ("Where can I download my invoices?", True)
    exported = corpus_controls(small_corpus)
    backup_to(tmp_path / "backup")
    Synonym.objects.all().delete()
    Rule.objects.all().delete()
    announce_catalog_change()
    assert answers() == (None, False)
    restore_from(tmp_path / "backup", force=True)
    assert corpus_controls(Corpus.objects.get(slug="small")) == exported
    assert answers() == ("Where can I download my invoices?", True)
