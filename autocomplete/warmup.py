"""Make a serving process ready before it takes traffic: threads capped, models and indexes loaded.

Warm-up never raises, whatever a corpus, an encoder or the database does: a process that cannot
warm a corpus still starts, that corpus answers 503 and /readyz names it, and every other corpus
serves.
"""

from __future__ import annotations

import logging
import time

from embeddings.vector_index import set_threads

from .catalog import catalog
from .conf import app_settings
from .search import IndexUnavailableError, suggestions_for

logger = logging.getLogger(__name__)


def warm_up() -> float:
    """Load every live corpus and encoder and answer one query with each; return seconds taken."""
    started = time.perf_counter()
    try:
        _cap_threads()
    except Exception:
        logger.exception("Warm-up could not cap the encoder threads")
    try:
        corpora = list(catalog().corpora.values())
    except Exception:
        logger.exception("Warm-up skipped: the catalog cannot be read; corpora load on their first request.")
        corpora = []
    for entry in corpora:
        for encoder in entry.live:
            try:
                suggestions_for("warm up", corpus=entry.slug, encoder=encoder, k=1)
            except IndexUnavailableError as exc:
                # Already logged with its details where it was found.
                logger.error("Warm-up of %s/%s failed: %s", entry.slug, encoder, exc.reason)
            except Exception:
                # A broken corpus must not keep the others from serving; its requests get a 503.
                logger.exception("Warm-up of %s/%s failed", entry.slug, encoder)
    seconds = time.perf_counter() - started
    logger.info("Warm-up done in %.2f s", seconds)
    return seconds


def _cap_threads() -> None:
    conf = app_settings()
    threads = conf.encoder_threads or 1
    set_threads(threads)
    if conf.encoder_backend == "torch" or any(options.get("BACKEND") == "torch" for options in conf.encoders.values()):
        import torch

        torch.set_num_threads(threads)
