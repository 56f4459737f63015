"""gunicorn settings for `make serve` and `make demo` (the measurements behind them: docs/performance.md).

Threaded workers (gthread), one per core, each with a pool of threads: a request is CPU-bound
(encoder + index), so the threads add no speed, but a client that sends its request slowly, or
never finishes it, holds one thread instead of a whole worker, and keep-alive connections are kept.
Models load after the fork (preload_app is off:
ONNX Runtime and torch thread pools do not survive fork) and every worker warms up, loading its
encoders and live indexes and answering one query, before it takes traffic.
"""

from __future__ import annotations

import os
from typing import Any

from config.environment import env_int, env_str

bind = f"{env_str('HOST') or '127.0.0.1'}:{env_str('PORT') or '8000'}"
workers = env_int("WEB_CONCURRENCY") or os.cpu_count() or 2
# Enough threads that a few slow or stalled clients leave most of a worker free; past that, a
# reverse proxy that buffers requests (README, "Production") is the real defence.
threads = env_int("GUNICORN_THREADS") or 32
worker_class = env_str("GUNICORN_WORKER_CLASS") or ("gthread" if threads > 1 else "sync")
preload_app = False
timeout = 60
graceful_timeout = 10
accesslog = env_str("GUNICORN_ACCESS_LOG") or None

# Workers x intra-op threads must not exceed the cores: one encoder/FAISS thread per worker.
for variable in ("AUTOCOMPLETE_ENCODER_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")


def post_worker_init(worker: Any) -> None:
    from autocomplete.warmup import warm_up

    warm_up()
