"""Make a serving process ready before it takes traffic: threads capped, models and indexes loaded."""

from __future__ import annotations

import logging
import time

from embeddings.encoders import EncoderError
from embeddings.vector_index import set_threads

from .catalog import catalog
from .conf import app_settings
from .search import SearchError, suggestions_for

logger = logging.getLogger(__name__)


def warm_up() -> float:
    """Load every live corpus and encoder and answer one query with each; return seconds taken."""
    started = time.perf_counter()
    conf = app_settings()
    threads = conf.encoder_threads or 1
    set_threads(threads)
    if conf.encoder_backend == "torch" or any(options.get("BACKEND") == "torch" for options in conf.encoders.values()):
        import torch

        torch.set_num_threads(threads)
    for entry in catalog().corpora.values():
        for encoder in entry.live:
            try:
                suggestions_for("warm up", corpus=entry.slug, encoder=encoder, k=1)
            except (SearchError, EncoderError) as exc:
                # A broken corpus must not keep the others from serving; its requests get a 503.
                logger.error("Warm-up of %s/%s failed: %s", entry.slug, encoder, exc)
    seconds = time.perf_counter() - started
    logger.info("Warm-up done in %.2f s", seconds)
    return seconds
