"""gunicorn settings for `make serve` and `make demo`, chosen from measurement (see README).

Sync workers of one thread each, one worker per core: each request is CPU-bound (encoder + index),
so more threads only queue inside a worker. Models load after the fork (preload_app is off:
ONNX Runtime and torch thread pools do not survive fork) and every worker warms up, loading its
encoders and live indexes and answering one query, before it takes traffic.
"""

from __future__ import annotations

import os
from typing import Any

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# gthread keeps connections alive (sync closes each one after its response); see README "Speed".
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or ("gthread" if threads > 1 else "sync")
preload_app = False
timeout = 60
graceful_timeout = 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None

# Workers x intra-op threads must not exceed the cores: one encoder/FAISS thread per worker.
for variable in ("AUTOCOMPLETE_ENCODER_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")


def post_worker_init(worker: Any) -> None:
    from autocomplete.warmup import warm_up

    warm_up()
