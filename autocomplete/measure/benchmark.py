"""`manage.py bench`: build a corpus, serve it with the real stack, replay typing, compare with a naive baseline.

Everything happens in a temporary directory (its own SQLite database, index and upload folders),
never in the project's database. The corpus is built by the real ingest code in a subprocess, and
the server is gunicorn with config/gunicorn.py, as `make serve` runs it. The naive baseline is the
same stack configured with sentence-transformers on torch fp32, exact FAISS search, no query cache
and one worker.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings

from ..conf import app_settings
from ..models import normalise_question
from .loadtest import replay, replay_paired, suggest_path, typing_prefixes

CORPUS_SLUG = "bench"
CORPUS_FILES = ("medquad", "nq-open", "insuranceqa-dupes", "stackfaq", "deepset-covid")
QUERY_FILES = ("stackfaq", "deepset-covid")
# One key for the whole run: the settings refuse to start without one, and the ingest subprocess and
# the servers must agree on it (it signs the lexical index files they share).
_RUN_SECRET_KEY = secrets.token_urlsafe(50)
# Some datasets hold questions without answers; ingest requires one, so these get a stand-in.
NO_ANSWER = "(The source dataset has no answer for this question.)"
EXACT_SEARCH = str(10**9)  # an ANN threshold no corpus reaches
TARGETS = {"p50_ms": 3.0, "p50_ratio": 0.2, "p99_ms": 10.0, "rps_at_8": 400.0, "ingest": 1000.0}
TARGETS |= {"cold_start_s": 5.0, "memory_mb": 500.0, "filtered_p50_ratio": 1.5}
# Each pair is tagged with its dataset's name; filtered runs ask for a small subset (searched in a
# copy of its vectors) and a large one (searched through the graph with a selector).
FILTERS = {"small": "stackfaq,deepset-covid", "large": "medquad"}

# Run in a subprocess with the temporary directory's settings: time the real ingest, model load apart.
_INGEST_SCRIPT = """
import json, sys, time
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from autocomplete.measure.benchmark import timed_ingest
print(json.dumps(timed_ingest(sys.argv[1], encoder=sys.argv[2], slug=sys.argv[3])))
"""


class BenchError(RuntimeError):
    """The benchmark cannot run: missing data, a server that never answers, a failed subprocess."""


@dataclass
class Options:
    corpus_size: int | None = None
    concurrency: Sequence[int] = (8,)
    seconds: float = 10.0
    baseline_ingest_sample: int = 3000
    chart: Path | None = None
    data_dir: Path = field(default_factory=lambda: Path(settings.BASE_DIR).parent / "shared" / "data")
    workers: int | None = None
    # Threads per gunicorn worker for our stack (1: sync workers); None: config/gunicorn.py's.
    threads: int | None = None
    # Both stacks run this encoder: ours exported to ONNX int8, the baseline on torch fp32.
    encoder: str = "minilm"


def corpus_rows(data_dir: Path, limit: int | None = None) -> list[tuple[str, str, str]]:
    """Distinct (question, answer, tag) rows from every dataset's corpus.csv, up to `limit`; the tag is the dataset."""
    seen: set[str] = set()
    rows: list[tuple[str, str, str]] = []
    for name in CORPUS_FILES:
        path = data_dir / name / "corpus.csv"
        if not path.is_file():
            raise BenchError(f"{path} is missing: the benchmark reads ../shared/data (see its README).")
        with path.open(encoding="utf-8", newline="") as handle:
            for record in csv.DictReader(handle):
                question = record["question"].strip()
                key = normalise_question(question)
                if not question or key in seen or len(question) > app_settings().max_question_length:
                    continue
                seen.add(key)
                answer = (record.get("answer") or "").strip()[: app_settings().max_answer_length]
                rows.append((question, answer or NO_ANSWER, name))
                if limit is not None and len(rows) >= limit:
                    return rows
    return rows


def held_out_queries(data_dir: Path) -> list[str]:
    """The labelled queries of stackfaq and deepset-covid (never corpus questions), shuffled once."""
    queries: dict[str, None] = {}
    for name in QUERY_FILES:
        with (data_dir / name / "queries.csv").open(encoding="utf-8", newline="") as handle:
            queries.update((record["query"].strip(), None) for record in csv.DictReader(handle))
    ordered = [query for query in queries if query]
    random.Random(5).shuffle(ordered)  # noqa: S311 - a fixed order, not a secret
    return ordered


def write_corpus_csv(rows: Sequence[tuple[str, str] | tuple[str, str, str]], path: Path) -> None:
    """(question, answer) or (question, answer, tags) rows as an ingestible CSV."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "tags"])
        writer.writerows((*row, "")[:3] for row in rows)


def timed_ingest(csv_path: str, *, encoder: str, slug: str) -> dict[str, float]:
    """Ingest a CSV into a new corpus (in this process's database); pairs/s excludes model loading."""
    from ..encoder_registry import encoder_registry
    from ..ingest import ingest_parsed
    from ..models import Corpus
    from ..parsing import parse_qa_file

    started = time.perf_counter()
    encoder_registry().get(encoder)
    loaded = time.perf_counter()
    parsed = parse_qa_file(Path(csv_path).read_bytes(), filename="bench.csv")
    corpus = Corpus.objects.create(slug=slug, name="Benchmark", default_encoder=encoder)
    report = ingest_parsed(corpus, parsed, encoder_key=encoder)
    seconds = time.perf_counter() - loaded
    return {
        "pairs": report.added,
        "seconds": round(seconds, 2),
        "pairs_per_second": round(report.added / seconds, 1),
        "encoder_load_seconds": round(loaded - started, 2),
    }


# --- the server stack -------------------------------------------------------------------------


def stack_env(var_dir: Path, *, encoder: str, **overrides: str) -> dict[str, str]:
    """The environment of a process that must use `var_dir` alone, with production settings.

    Only the encoders' weight locations (AUTOCOMPLETE_<KEY>_PATH) are kept from this process's
    AUTOCOMPLETE_ settings: where the weights are is not part of what is measured.
    """
    from ..encoder_registry import encoder_registry

    registry = encoder_registry()
    weights = {registry.spec(key).env_var for key in registry.keys}
    env = {
        key: value
        for key, value in os.environ.items()
        if key in weights
        or (
            not key.startswith(("AUTOCOMPLETE_", "GUNICORN_", "DJANGO_"))
            and key not in ("WEB_CONCURRENCY", "PORT", "DATABASE_URL")
        )
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "AUTOCOMPLETE_VAR_DIR": str(var_dir),
        "AUTOCOMPLETE_DATABASE_PATH": str(var_dir / "db.sqlite3"),
        "AUTOCOMPLETE_INDEX_DIR": str(var_dir / "indexes"),
        "AUTOCOMPLETE_UPLOAD_DIR": str(var_dir / "uploads"),
        # The exported model is shared: it is a cache of the weights, not data.
        "AUTOCOMPLETE_ONNX_DIR": str(app_settings().onnx_dir),
        "AUTOCOMPLETE_DEFAULT_ENCODER": encoder,
        "AUTOCOMPLETE_DEFAULT_CORPUS": CORPUS_SLUG,
        # The typists all type from this one address, far faster than the limit lets one visitor.
        "AUTOCOMPLETE_RATE_LIMIT": "0",
        "DJANGO_SECRET_KEY": _RUN_SECRET_KEY,
        "HF_HUB_OFFLINE": "1",
    }
    return env | overrides


def _run(args: Sequence[str], env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(args[:3])} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def ingest_into(var_dir: Path, csv_path: Path, env: dict[str, str]) -> dict[str, float]:
    var_dir.mkdir(parents=True, exist_ok=True)
    encoder = env["AUTOCOMPLETE_DEFAULT_ENCODER"]
    output = _run([sys.executable, "-c", _INGEST_SCRIPT, str(csv_path), encoder, CORPUS_SLUG], env)
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database in WAL mode (the backup API, not a file copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    cold_start_s: float
    log: Path


def _answers(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@contextmanager
def running_server(env: dict[str, str], log: Path, *, timeout: float = 180) -> Iterator[Server]:
    """gunicorn with config/gunicorn.py on a free port; cold start is spawn to first 200 answer."""
    port = free_port()
    env = env | {"HOST": "127.0.0.1", "PORT": str(port)}
    args = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    started = time.perf_counter()
    with log.open("wb") as handle:
        process = subprocess.Popen(args, cwd=settings.BASE_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        probe = suggest_path("warm", corpus=CORPUS_SLUG)
        while not _answers(port, probe):
            if process.poll() is not None or time.perf_counter() - started > timeout:
                raise BenchError(f"The server never answered; its log ({log}):\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        yield Server(process, port, round(time.perf_counter() - started, 2), log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_memory(master_pid: int) -> dict[str, float]:
    """Resident (VmRSS) and proportional (Pss) memory of the master's worker processes, largest worker."""
    rss: list[float] = []
    pss: list[float] = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["PPid"]) != master_pid:
                continue
            rss.append(int(fields["VmRSS"].split()[0]) / 1024)
            rollup = (status.parent / "smaps_rollup").read_text().splitlines()
            pss.extend(int(line.split()[1]) / 1024 for line in rollup if line.startswith("Pss:"))
        except (OSError, KeyError, ValueError):
            continue  # a process that ended while being read
    return {
        "workers": len(rss),
        "rss_mb_per_worker": round(max(rss, default=0.0), 1),
        "pss_mb_per_worker": round(max(pss, default=0.0), 1),
    }


def measure_stacks(
    stacks: dict[str, tuple[dict[str, str], Path]], paths: Sequence[str], options: Options
) -> dict[str, dict[str, Any]]:
    """Cold start of each stack, one typist paired across all of them, then each concurrency per stack.

    The stacks are started one after another (each cold start on an otherwise idle machine) and
    stay up together: the one-typist figures come from `replay_paired`, every prefix sent to each
    server in turn, so the latency ratios compare the same prefixes at the same moments. Under
    concurrency each stack is loaded alone (the others idle). Memory is read after the load.
    """
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(running_server(env, log)) for name, (env, log) in stacks.items()}
        # Twice the window: it is shared between the servers.
        single = replay_paired(paths, ports=[s.port for s in servers.values()], seconds=options.seconds * len(servers))
        figures: dict[str, dict[str, Any]] = {
            name: {"cold_start_s": server.cold_start_s, "runs": [result.summary()]}
            for (name, server), result in zip(servers.items(), single, strict=True)
        }
        figures["ours"]["filtered"] = measure_filters(paths, port=servers["ours"].port, seconds=options.seconds)
        for concurrency in options.concurrency:
            if concurrency == 1:
                continue
            for name, server in servers.items():
                load = replay(paths, port=server.port, concurrency=concurrency, seconds=options.seconds)
                figures[name]["runs"].append(load.summary())
        for name, server in servers.items():
            figures[name]["memory"] = worker_memory(server.process.pid)
    return figures


def measure_filters(paths: Sequence[str], *, port: int, seconds: float) -> dict[str, Any]:
    """One typist, unfiltered and with each of FILTERS, paired on one server: latency and p50 ratio to unfiltered."""
    suffixes = ["", *(f"&tags={quote(tags, safe=',')}" for tags in FILTERS.values())]
    results = replay_paired(paths, ports=[port] * len(suffixes), seconds=seconds * len(suffixes), suffixes=suffixes)
    summaries = dict(zip(["unfiltered", *FILTERS], (result.summary() for result in results), strict=True))
    base = summaries["unfiltered"]["p50_ms"]
    return {
        "tags": dict(FILTERS),
        "runs": summaries,
        "p50_ratio": {name: round(summaries[name]["p50_ms"] / base, 3) if base else None for name in FILTERS},
    }


# --- the whole run ----------------------------------------------------------------------------


def run_bench(options: Options, *, progress: Any = None) -> dict[str, Any]:
    """Build, serve and measure our stack and the naive baseline; return every figure."""

    def say(message: str) -> None:
        if progress:
            progress(message)

    _check_encoder(options.encoder)
    rows = corpus_rows(options.data_dir, options.corpus_size)
    paths = [suggest_path(prefix, corpus=CORPUS_SLUG) for prefix in typing_prefixes(held_out_queries(options.data_dir))]
    workdir = Path(tempfile.mkdtemp(prefix="autocomplete-bench-"))
    try:
        full_csv, sample_csv = workdir / "corpus.csv", workdir / "sample.csv"
        write_corpus_csv(rows, full_csv)
        write_corpus_csv(rows[: options.baseline_ingest_sample], sample_csv)
        ours_dir, baseline_dir = workdir / "ours", workdir / "baseline"
        serving = {"WEB_CONCURRENCY": str(options.workers)} if options.workers else {}
        if options.threads:
            serving["GUNICORN_THREADS"] = str(options.threads)
        ours_env = stack_env(ours_dir, encoder=options.encoder, **serving)
        baseline_env = stack_env(
            baseline_dir,
            encoder=options.encoder,
            AUTOCOMPLETE_ENCODER_BACKEND="torch",
            AUTOCOMPLETE_ANN_THRESHOLD=EXACT_SEARCH,
            AUTOCOMPLETE_QUERY_CACHE="",
            WEB_CONCURRENCY="1",
        )
        say(f"ingesting {len(rows)} pairs (onnx-int8)")
        ours: dict[str, Any] = {"ingest": ingest_into(ours_dir, full_csv, ours_env)}
        sample = min(len(rows), options.baseline_ingest_sample)
        say(f"baseline ingest of the first {sample} pairs (torch fp32, exact)")
        baseline: dict[str, Any] = {"ingest": ingest_into(workdir / "baseline-ingest", sample_csv, baseline_env)}
        # The baseline serves the same corpus from an exact index (stored vectors reused, no re-embedding).
        copy_database(ours_dir / "db.sqlite3", baseline_dir / "db.sqlite3")
        flat_env = baseline_env | {"AUTOCOMPLETE_ENCODER_BACKEND": "onnx-int8"}
        _run([sys.executable, "manage.py", "reindex", CORPUS_SLUG, "--encoder", options.encoder], flat_env)
        say("serving ours and the baseline (one typist paired across both, then each under load)")
        served = measure_stacks(
            {"ours": (ours_env, workdir / "ours.log"), "baseline": (baseline_env, workdir / "baseline.log")},
            paths,
            options,
        )
        ours |= served["ours"]
        baseline |= served["baseline"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figure_ratios = ratios(ours, baseline)
    report: dict[str, Any] = {
        "encoder": options.encoder,
        "corpus_size": len(rows),
        "baseline_ingest_sample": sample,
        "typing_requests_available": len(paths),
        "seconds": options.seconds,
        "concurrency": list(options.concurrency),
        "cores": os.cpu_count(),
        "ours": ours,
        "baseline": baseline,
        "ratios": figure_ratios,
        "targets": targets(ours, figure_ratios),
    }
    if options.chart:
        write_chart(report, options.chart)
        report["chart"] = str(options.chart)
    return report


def _check_encoder(key: str) -> None:
    """Refuse at once, with the fix, an encoder that cannot load here (not after minutes of setup)."""
    from embeddings.encoders import EncoderError

    from ..encoder_registry import unavailable_reason

    try:
        reason = unavailable_reason(key)
    except EncoderError as exc:
        raise BenchError(str(exc)) from exc
    if reason:
        raise BenchError(reason)


def run_at(figures: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """The run at `concurrency`, else the last one."""
    runs: list[dict[str, Any]] = figures["runs"]
    return next((run for run in runs if run["concurrency"] == concurrency), runs[-1])


def ratios(ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """Ours divided by the baseline, per figure (below 1 is better for times, above 1 for rates)."""

    def ratio(mine: float, theirs: float) -> float | None:
        return round(mine / theirs, 3) if theirs else None

    single, single_base = run_at(ours, 1), run_at(baseline, 1)
    loaded, loaded_base = ours["runs"][-1], baseline["runs"][-1]
    return {
        "p50_ms": ratio(single["p50_ms"], single_base["p50_ms"]),
        "p95_ms": ratio(single["p95_ms"], single_base["p95_ms"]),
        "p99_ms": ratio(single["p99_ms"], single_base["p99_ms"]),
        "requests_per_second": ratio(loaded["requests_per_second"], loaded_base["requests_per_second"]),
        "ingest_pairs_per_second": ratio(ours["ingest"]["pairs_per_second"], baseline["ingest"]["pairs_per_second"]),
        "cold_start_s": ratio(ours["cold_start_s"], baseline["cold_start_s"]),
        "rss_mb_per_worker": ratio(ours["memory"]["rss_mb_per_worker"], baseline["memory"]["rss_mb_per_worker"]),
    }


def targets(ours: dict[str, Any], ratio: dict[str, float | None]) -> dict[str, bool]:
    """The issue's targets, met or not, by this run's figures."""
    single, loaded = run_at(ours, 1), run_at(ours, 8)
    return {
        "p50": single["p50_ms"] <= TARGETS["p50_ms"] and (ratio["p50_ms"] or 1.0) <= TARGETS["p50_ratio"],
        "p99": single["p99_ms"] <= TARGETS["p99_ms"],
        "rps_at_8": loaded["concurrency"] == 8
        and loaded["requests_per_second"] >= TARGETS["rps_at_8"]
        and loaded["errors"] == 0,
        "ingest": ours["ingest"]["pairs_per_second"] >= TARGETS["ingest"],
        "cold_start": ours["cold_start_s"] <= TARGETS["cold_start_s"],
        "memory": ours["memory"]["rss_mb_per_worker"] <= TARGETS["memory_mb"],
        "filtered": all(
            ratio is not None and ratio <= TARGETS["filtered_p50_ratio"]
            for ratio in ours.get("filtered", {}).get("p50_ratio", {}).values()
        ),
    }


def write_chart(report: dict[str, Any], path: Path) -> None:
    """Latency percentiles for one typist and requests/s by concurrency, ours beside the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    for offset, (name, label) in enumerate((("ours", "ours (ONNX int8, HNSW)"), ("baseline", "naive baseline"))):
        single = run_at(report[name], 1)
        values = [single["p50_ms"], single["p95_ms"], single["p99_ms"]]
        left.bar([i + offset * width for i in range(3)], values, width, label=label)
        runs = report[name]["runs"]
        right.plot([r["concurrency"] for r in runs], [r["requests_per_second"] for r in runs], marker="o", label=label)
    left.set_xticks([i + width / 2 for i in range(3)], ["p50", "p95", "p99"])
    left.set_ylabel("ms per keystroke request (one typist)")
    left.set_title(f"Latency over HTTP, {report['corpus_size']:,} questions, {report['encoder']}")
    right.set_xlabel("concurrent typists")
    right.set_ylabel("requests/s")
    right.set_title(f"Throughput on {report['cores']} cores")
    for axis in (left, right):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
