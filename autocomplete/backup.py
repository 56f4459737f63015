"""Backups: a consistent copy of the database and of the live index files, with a manifest of checksums.

`backup_to` writes every file first and `manifest.json` last, so a killed backup has no manifest and
`restore_from` refuses it. `restore_from` verifies the manifest and every file before it changes
anything, then puts the index files in place, replaces the database and migrates it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from django.core.management import call_command
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from embeddings.vector_index import write_atomically

from .catalog import announce_catalog_change
from .conf import app_settings
from .index_storage import IndexFetchError, fetch, is_local, replace_stored
from .lexical_store import lexical_files_of
from .models import Corpus, IndexBuild, QAPair

# Bump when the manifest's fields or the folder's layout change: restore refuses other versions.
BACKUP_FORMAT = 1
MANIFEST = "manifest.json"
INDEX_FOLDER = "indexes"
DATABASE_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


class _Cursor(Protocol):
    def execute(self, sql: str) -> Any: ...
    def fetchall(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Snapshot:
    """What the database copy holds, read inside the same snapshot the copy was taken from."""

    migrations: dict[str, list[str]]
    live_builds: list[dict[str, Any]]
    corpora: int
    pairs: int


@dataclass(frozen=True)
class RestoreReport:
    corpora: int
    pairs: int
    live_builds: list[str]
    migrations_applied: list[str]


def backup_to(directory: Path, *, force: bool = False) -> dict[str, Any]:
    """Back up the database and every live index file into `directory`; return the manifest."""
    engine = _engine()
    _prepare_directory(directory, force=force)
    database_file = DATABASE_FILES[engine]
    if engine == "sqlite":
        snapshot = _copy_sqlite(directory / database_file)
    else:
        snapshot = _dump_postgresql(directory / database_file)
    files = [_describe(directory, database_file)]
    for build in snapshot.live_builds:
        files.extend(_copy_index_files(build, directory))
    _fsync_directory(directory / INDEX_FOLDER)
    manifest = {
        "format": BACKUP_FORMAT,
        "created_at": timezone.now().isoformat(),
        "engine": engine,
        "database": database_file,
        "migrations": snapshot.migrations,
        "corpora": snapshot.corpora,
        "pairs": snapshot.pairs,
        "live_builds": snapshot.live_builds,
        "files": files,
    }
    # Last, and atomically: a backup without its manifest is incomplete, and restore refuses it.
    write_atomically(directory / MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest


def restore_from(directory: Path, *, force: bool = False) -> RestoreReport:
    """Verify the backup in `directory`, then make it this deployment's database and live index files."""
    manifest = verified_manifest(directory)
    _refuse_newer_migrations(manifest["migrations"])
    corpora_here = _corpora_in_database()
    if corpora_here and not force:
        raise BackupError(
            f"The database already holds corpora ({corpora_here}). Stop the server and the workers, then "
            "run restore again with --force to replace them with the backup."
        )
    _install_index_files(directory, manifest["files"])
    if manifest["engine"] == "sqlite":
        _restore_sqlite(directory / manifest["database"])
    else:
        _restore_postgresql(directory / manifest["database"])
    applied = _migrate()
    announce_catalog_change()
    live = IndexBuild.objects.filter(is_live=True).select_related("corpus").order_by("corpus__slug", "encoder")
    return RestoreReport(
        corpora=Corpus.objects.count(),
        pairs=QAPair.objects.count(),
        live_builds=[f"{b.corpus.slug}/{b.encoder} ({b.vector_count} vectors)" for b in live],
        migrations_applied=applied,
    )


def verified_manifest(directory: Path) -> dict[str, Any]:
    """The backup's manifest, once every file it lists is present with its size and SHA-256."""
    path = directory / MANIFEST
    if not path.is_file():
        raise BackupError(
            f"{directory} holds no {MANIFEST}: it is not a backup, or its backup was interrupted before "
            "it finished. Nothing was changed; restore another backup."
        )
    try:
        manifest = json.loads(path.read_bytes())
        version, engine, files = manifest["format"], manifest["engine"], manifest["files"]
        builds, database, migrations = manifest["live_builds"], manifest["database"], manifest["migrations"]
        shapes = [(files, list), (builds, list), (migrations, dict), *((entry, dict) for entry in files + builds)]
        if not all(isinstance(value, kind) for value, kind in shapes):
            raise TypeError("unexpected structure")
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{MANIFEST} in {directory} is damaged ({exc}). Nothing was changed.") from exc
    if version != BACKUP_FORMAT:
        raise BackupError(
            f"The backup has format {version}; this version of the code reads format {BACKUP_FORMAT}. "
            "Restore it with the version of the code that made it."
        )
    if engine != _engine():
        raise BackupError(
            f"The backup is of a {engine} database and this deployment uses {_engine()}: restore it into "
            f"a deployment configured for {engine}."
        )
    if database != DATABASE_FILES[engine]:
        raise BackupError(f"{MANIFEST} names an unexpected database file {database!r}. Nothing was changed.")
    checksums = {}
    for entry in files:
        _verify_file(directory, entry)
        checksums[entry["name"]] = entry["sha256"]
    if database not in checksums:
        raise BackupError(f"{MANIFEST} does not list the database file {database}. Nothing was changed.")
    for build in builds:
        name = f"{INDEX_FOLDER}/{build['file_name']}"
        if checksums.get(name) != build["checksum"]:
            raise BackupError(
                f"{name}, the live index of {build['corpus']}/{build['encoder']}, is missing from the backup "
                "or differs from the file its build recorded. Nothing was changed; restore another backup."
            )
    return dict(manifest)


def postgresql_tool(name: str) -> str:
    """The path of a PostgreSQL client program (pg_dump, pg_restore), or an error that says how to get it."""
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} was not found on PATH. Install PostgreSQL's client programs of the server's major "
            "version (Debian and Ubuntu: apt-get install postgresql-client), then run again."
        )
    return found


def _engine() -> str:
    if connection.vendor not in DATABASE_FILES:
        raise BackupError(
            f"Backups support SQLite and PostgreSQL; this deployment's database is {connection.vendor}. "
            "Use that database's own backup tools, and copy the index directory beside it."
        )
    return connection.vendor


def _prepare_directory(directory: Path, *, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise BackupError(f"{directory} is a file: name a folder for the backup.")
    # The database holds password hashes and session keys: the backup is private to its owner.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not any(directory.iterdir()):
        return
    if not force:
        raise BackupError(f"{directory} is not empty: name a new folder, or pass --force to replace the backup in it.")
    # The manifest goes first, so an interrupted replacement never looks like a complete backup.
    (directory / MANIFEST).unlink(missing_ok=True)
    _fsync_directory(directory)
    for name in DATABASE_FILES.values():
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / INDEX_FOLDER, ignore_errors=True)


def _copy_sqlite(target: Path) -> Snapshot:
    source = Path(str(connection.settings_dict["NAME"]))
    if not source.is_file():
        raise BackupError(f"The database {source} does not exist: run `manage.py migrate` first.")
    _create_private(target)
    with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(target)) as dst:
        # One step copies every page under one read transaction: a snapshot of what was committed,
        # taken without blocking writers (WAL), however long an ingest holds its write lock.
        src.backup(dst)
        # The copy becomes one self-contained file, without -wal and -shm beside it.
        dst.execute("PRAGMA journal_mode=DELETE")
        snapshot = _read_snapshot(dst.cursor())
    _fsync_file(target)
    return snapshot


def _dump_postgresql(target: Path) -> Snapshot:
    pg_dump = postgresql_tool("pg_dump")
    _create_private(target)  # pg_dump keeps the mode of the file it overwrites
    connection.ensure_connection()
    with transaction.atomic(), connection.cursor() as cursor:
        # pg_dump reads the snapshot this transaction exports, so the manifest and the dump agree.
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SELECT pg_export_snapshot()")
        ((snapshot_id,),) = cursor.fetchall()
        snapshot = _read_snapshot(cursor)
        _run_postgresql_tool(pg_dump, ["--format=custom", f"--snapshot={snapshot_id}", f"--file={target}"])
    _fsync_file(target)
    return snapshot


def _read_snapshot(cursor: _Cursor) -> Snapshot:
    builds, corpora, pairs = IndexBuild._meta.db_table, Corpus._meta.db_table, QAPair._meta.db_table
    cursor.execute("SELECT app, name FROM django_migrations ORDER BY app, name")
    migrations: dict[str, list[str]] = {}
    for app, name in cursor.fetchall():
        migrations.setdefault(app, []).append(name)
    # Table names come from the models' metadata, never from input.
    cursor.execute(
        f"SELECT c.slug, b.encoder, b.file_name, b.checksum, b.vector_count, b.kind FROM {builds} b "  # noqa: S608
        f"JOIN {corpora} c ON c.id = b.corpus_id WHERE b.is_live ORDER BY c.slug, b.encoder"
    )
    fields = ("corpus", "encoder", "file_name", "checksum", "vector_count", "kind")
    live = [dict(zip(fields, row, strict=True)) for row in cursor.fetchall()]
    cursor.execute(f"SELECT (SELECT COUNT(*) FROM {corpora}), (SELECT COUNT(*) FROM {pairs})")  # noqa: S608
    ((corpus_count, pair_count),) = cursor.fetchall()
    return Snapshot(migrations=migrations, live_builds=live, corpora=int(corpus_count), pairs=int(pair_count))


def _copy_index_files(build: Mapping[str, Any], directory: Path) -> list[dict[str, Any]]:
    fix = f"run `manage.py reindex {build['corpus']} --encoder {build['encoder']}`, then back up again"
    missing = f"{build['file_name']}, a live index of {build['corpus']}, is not in {_where()}: {fix}."
    try:
        source = fetch(build["file_name"])
    except FileNotFoundError:
        raise BackupError(missing) from None
    except IndexFetchError as exc:
        raise BackupError(f"{build['file_name']}, a live index of {build['corpus']}: {exc.reason}.") from exc
    if not source.is_file():
        raise BackupError(missing)
    entry = _copy_file(source, directory / INDEX_FOLDER)
    if entry["sha256"] != build["checksum"]:
        raise BackupError(f"{build['file_name']} differs from the file its build recorded (damaged on disk): {fix}.")
    entries = [entry]
    # The lexical files beside it, whatever their format: a serving process rebuilds one that is absent.
    for name in lexical_files_of(build["file_name"]):
        entries.append(_copy_file(fetch(name), directory / INDEX_FOLDER))
    return entries


def _where() -> str:
    """The index storage, as an administrator names it."""
    return str(app_settings().index_dir) if is_local() else f"the index storage ({app_settings().index_storage})"


def _copy_file(source: Path, folder: Path) -> dict[str, Any]:
    """Copy a file into `folder`, flushed to disk; its manifest entry (name, size, SHA-256)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    copy = os.open(folder / source.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with source.open("rb") as reader, os.fdopen(copy, "wb") as writer:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return {"name": f"{folder.name}/{source.name}", "size": size, "sha256": digest.hexdigest()}


def _describe(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    return {"name": name, "size": path.stat().st_size, "sha256": _sha256_of(path)}


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_file(directory: Path, entry: Mapping[str, Any]) -> None:
    name = entry.get("name")
    if not isinstance(name, str) or not _is_backup_member(name):
        raise BackupError(f"{MANIFEST} lists {name!r}, which no backup holds. Nothing was changed.")
    path = directory / name
    if not path.is_file():
        raise BackupError(f"{name} is missing from the backup in {directory}. Nothing was changed.")
    if path.stat().st_size != entry.get("size") or _sha256_of(path) != entry.get("sha256"):
        raise BackupError(
            f"{name} in the backup is damaged (its size or SHA-256 differs from the manifest). Nothing was "
            "changed; restore another backup."
        )


def _is_backup_member(name: str) -> bool:
    # Only names a backup writes: a crafted manifest must not reach outside the two folders.
    if name in DATABASE_FILES.values():
        return True
    folder, _, file_name = name.partition("/")
    plain = file_name not in ("", ".", "..") and "/" not in file_name and "\\" not in file_name
    return folder == INDEX_FOLDER and plain


def _refuse_newer_migrations(applied: Mapping[str, Iterable[str]]) -> None:
    known = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    unknown = sorted(f"{app}.{name}" for app, names in applied.items() for name in names if (app, name) not in known)
    if unknown:
        raise BackupError(
            f"The backup was made by newer code (migrations {', '.join(unknown)} are unknown here). Nothing "
            "was changed; upgrade this deployment to that version, then restore."
        )


def _corpora_in_database() -> int:
    if Corpus._meta.db_table not in connection.introspection.table_names():
        return 0
    return Corpus.objects.count()


def _install_index_files(directory: Path, files: Iterable[Mapping[str, Any]]) -> None:
    for entry in files:
        folder, _, name = str(entry["name"]).partition("/")
        if folder == INDEX_FOLDER:
            replace_stored(name, directory / str(entry["name"]))


def _restore_sqlite(source: Path) -> None:
    target = Path(str(connection.settings_dict["NAME"]))
    connections.close_all()
    target.parent.mkdir(parents=True, exist_ok=True)
    # The backup API writes through SQLite's own locking and journal, so a stale -wal beside the
    # target can never be replayed onto the restored pages (a file rename could not promise that).
    with (
        closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target, timeout=30)) as dst,
    ):
        src.backup(dst)


def _restore_postgresql(source: Path) -> None:
    pg_restore, psql = postgresql_tool("pg_restore"), postgresql_tool("psql")
    # Every table goes, not only those the dump holds (pg_restore --clean): one that a newer migration
    # made would otherwise stay and stop the migrations that bring an older backup up to date.
    drops = "".join(f"DROP TABLE IF EXISTS {connection.ops.quote_name(t)} CASCADE;\n" for t in _table_names())
    script = subprocess.run([pg_restore, "--no-owner", "--file=-", str(source)], capture_output=True, check=False)
    if script.returncode != 0:
        raise BackupError(f"pg_restore failed: {script.stderr.decode(errors='replace').strip()}")
    connections.close_all()
    # One transaction: a restore that fails leaves the database as it was.
    arguments = ["--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1", "--file=-"]
    _run_postgresql_tool(psql, arguments, stdin=drops.encode() + script.stdout)


def _table_names() -> list[str]:
    """The tables in the deployment's database."""
    return connection.introspection.table_names()


def _run_postgresql_tool(program: str, arguments: list[str], stdin: bytes | None = None) -> None:
    database = connection.settings_dict
    options: list[str] = []
    for flag, key in (("--username", "USER"), ("--host", "HOST"), ("--port", "PORT")):
        if database.get(key):
            options += [flag, str(database[key])]
    options += [f"--dbname={database['NAME']}"]
    env = dict(os.environ)
    if database.get("PASSWORD"):
        env["PGPASSWORD"] = str(database["PASSWORD"])
    result = subprocess.run([program, *options, *arguments], env=env, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(program).name} failed: {result.stderr.decode(errors='replace').strip()}")


def _migrate() -> list[str]:
    """Apply the migrations the restored database lacks (a backup older than the code)."""
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        call_command("migrate", interactive=False, verbosity=0)
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


def _create_private(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    if path.is_dir():
        _fsync_file(path)
