"""A query encoder for half-typed questions: a copy of the corpus's encoder tuned on prefixes.

The corpus keeps the vectors of its encoder; the copy is fine-tuned so that a prefix of a
question (cut at 15-90 % of its characters) lands near the stored vector of the whole question,
against the other questions of its batch (in-batch negatives), while an identity term keeps each
complete question where the corpus encoder puts it. Nothing is re-indexed, and a complete query
embeds nearly as before. Training runs offline on torch and is deterministic given a seed; the
result is a sentence-transformers directory plus its ONNX int8 export, which serving loads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import EncoderSpec, OnnxEncoder, TorchEncoder

logger = logging.getLogger(__name__)

# The layout and meaning of a trained directory; a reader refuses any other.
QUERY_ENCODER_FORMAT = 1
MANIFEST_FILENAME = "query-encoder.json"
MODEL_FOLDER = "model"
ONNX_FOLDER = "onnx-int8"
# The fractions of each question's characters the loss before and after training is measured at,
# on at most this many questions (a fixed sample), so a large corpus is not embedded twice over.
PROBE_FRACTIONS = (0.25, 0.5, 0.75)
PROBE_QUESTIONS = 512

Progress = Callable[[int, int, float], None]  # step done, steps in all, that step's loss


class QueryEncoderError(Exception):
    """A query encoder cannot be trained or loaded; the message says how to fix it."""


@dataclass(frozen=True)
class TrainingConfig:
    """How the query encoder is tuned; the defaults are the recipe docs/quality.md measures."""

    steps: int = 100
    batch_size: int = 64
    learning_rate: float = 2e-5
    # Weight of the identity term (1 - cosine of a complete question to its stored vector), and the
    # share of each batch's questions it is computed on (whole questions cost the most to embed).
    identity_weight: float = 1.0
    identity_share: float = 0.25
    min_fraction: float = 0.15
    max_fraction: float = 0.9
    # Inverse temperature of the in-batch softmax (sentence-transformers' MultipleNegativesRankingLoss).
    scale: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise QueryEncoderError("Training needs at least 1 step and a batch of at least 2 questions.")
        if not 0 < self.min_fraction <= self.max_fraction <= 1:
            raise QueryEncoderError("Prefix fractions must satisfy 0 < min_fraction <= max_fraction <= 1.")


@dataclass(frozen=True)
class TrainingResult:
    """What a run did and gave, as its manifest records it."""

    questions: int
    steps: int
    seconds: float
    loss_before: float  # contrastive loss on fixed prefixes of the questions, before training
    loss_after: float
    identity_cosine: float  # mean cosine of complete questions to their stored vectors, after training
    config: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # this process's CPU time, export included: what a loaded machine cannot blur


def prefix_of(text: str, fraction: float) -> str:
    """The first max(1, round(len * fraction)) characters, as evaluation cuts queries."""
    return text[: max(1, round(len(text) * fraction))]


def distinct_questions(questions: Sequence[str], targets: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each question text once, with its target: a text twice in a batch would be its own negative."""
    seen: dict[str, int] = {}
    for row, text in enumerate(questions):
        text = " ".join(text.split())
        if text and text not in seen:
            seen[text] = row
    rows = list(seen.values())
    return list(seen), np.ascontiguousarray(targets[rows], dtype=np.float32)


def train_query_encoder(
    base_model_dir: Path,
    questions: Sequence[str],
    targets: np.ndarray,
    out_dir: Path,
    *,
    config: TrainingConfig = TrainingConfig(),  # noqa: B008 - frozen, so one shared default is safe
    progress: Progress | None = None,
    extra: dict[str, Any] | None = None,
    threads: int = 0,
) -> TrainingResult:
    """Tune a copy of the model in `base_model_dir` so prefixes of `questions` land near `targets`.

    `targets` are the corpus encoder's stored vectors of `questions`, one row each. Writes the
    tuned model, its ONNX int8 export and a manifest to `out_dir`, replacing it whole (readers never
    see a half-written directory). `extra` is recorded in the manifest as it is. `threads` caps
    torch's threads (0: its default); the result does not depend on it.
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(base_model_dir, questions, targets, out_dir, config=config, progress=progress, extra=extra)
    finally:
        torch.set_num_threads(previous)


def _train(
    base_model_dir: Path,
    questions: Sequence[str],
    targets: np.ndarray,
    out_dir: Path,
    *,
    config: TrainingConfig,
    progress: Progress | None,
    extra: dict[str, Any] | None,
) -> TrainingResult:
    import torch
    from sentence_transformers import SentenceTransformer

    texts, target_rows = distinct_questions(questions, targets)
    if len(texts) < 2:
        raise QueryEncoderError("A query encoder needs at least 2 distinct questions to learn from.")
    started, cpu_started = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SentenceTransformer(str(base_model_dir), device="cpu", local_files_only=True)
    target = torch.from_numpy(target_rows)
    # Its own generator, so the training batches do not depend on the probe's size.
    probe = np.sort(np.random.default_rng(config.seed).permutation(len(texts))[:PROBE_QUESTIONS])
    probe_texts, probe_target = [texts[row] for row in probe], target[probe]
    loss_before = _probe_loss(model, probe_texts, probe_target, scale=config.scale)
    # The word embeddings stay as they are: most of the weights, little of what a prefix needs, and
    # their updates would cost more than the layers' on a CPU.
    model[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    batch = min(config.batch_size, len(texts))
    anchored = max(1, round(batch * config.identity_share))
    labels = torch.arange(batch)
    model.train()
    for step in range(1, config.steps + 1):
        rows = rng.choice(len(texts), size=batch, replace=False)
        fractions = rng.uniform(config.min_fraction, config.max_fraction, size=batch)
        prefixes = [prefix_of(texts[row], fraction) for row, fraction in zip(rows, fractions, strict=True)]
        # Two passes, so the short prefixes are not padded to the length of whole questions.
        typed, wanted = _embed(model, prefixes), target[rows]
        complete = _embed(model, [texts[row] for row in rows[:anchored]])
        contrastive = torch.nn.functional.cross_entropy(config.scale * typed @ wanted.T, labels)
        identity = (1 - (complete * wanted[:anchored]).sum(dim=1)).mean()
        loss = contrastive + config.identity_weight * identity
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress:
            progress(step, config.steps, float(loss.detach()))
    model.eval()
    result = TrainingResult(
        questions=len(texts),
        steps=config.steps,
        seconds=0.0,
        loss_before=loss_before,
        loss_after=_probe_loss(model, probe_texts, probe_target, scale=config.scale),
        identity_cosine=_identity_cosine(model, probe_texts, probe_target),
        config=asdict(config),
    )
    _write_directory(model, out_dir, result, extra or {}, started=(started, cpu_started))
    return read_manifest_result(out_dir)


def _embed(model: Any, texts: list[str]) -> Any:
    import torch

    features = model.preprocess(texts)
    return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=1)


def _probe_loss(model: Any, texts: list[str], target: Any, *, scale: float) -> float:
    """The in-batch contrastive loss on fixed prefixes, batches of 64, without dropout."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for fraction in PROBE_FRACTIONS:
            for start in range(0, len(texts), 64):
                chunk = texts[start : start + 64]
                if len(chunk) < 2:
                    continue
                typed = _embed(model, [prefix_of(text, fraction) for text in chunk])
                logits = scale * typed @ target[start : start + len(chunk)].T
                total += float(torch.nn.functional.cross_entropy(logits, torch.arange(len(chunk)))) * len(chunk)
                count += len(chunk)
    return round(total / max(1, count), 5)


def _identity_cosine(model: Any, texts: list[str], target: Any) -> float:
    import torch

    with torch.no_grad():
        cosines = [(_embed(model, texts[s : s + 64]) * target[s : s + 64]).sum(dim=1) for s in range(0, len(texts), 64)]
    return round(float(torch.cat(cosines).mean()), 5)


def _write_directory(
    model: Any, out_dir: Path, result: TrainingResult, extra: dict[str, Any], *, started: tuple[float, float]
) -> None:
    from .onnx_export import export_onnx, model_fingerprint

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.training-", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # serving workers may run as another user
        model.save(str(staging / MODEL_FOLDER))
        export_onnx(staging / MODEL_FOLDER, staging / ONNX_FOLDER, quantize=True)
        manifest = {
            "format": QUERY_ENCODER_FORMAT,
            "fingerprint": model_fingerprint(staging / MODEL_FOLDER),
            **asdict(result),
            "seconds": round(time.perf_counter() - started[0], 1),
            "cpu_seconds": round(time.process_time() - started[1], 1),
            **extra,
        }
        # Written last: a manifest means the directory is complete.
        (staging / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.retired-", dir=out_dir.parent))
            os.replace(out_dir, retired / out_dir.name)
            shutil.rmtree(retired, ignore_errors=True)
        os.rename(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a complete query encoder directory of this format, else None."""
    try:
        data = json.loads((Path(directory) / MANIFEST_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != QUERY_ENCODER_FORMAT:
        return None
    return data


def read_manifest_result(directory: Path) -> TrainingResult:
    """The TrainingResult a complete directory records."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise QueryEncoderError(f"No query encoder at {directory}: train one with `manage.py train_query_encoder`.")
    names = TrainingResult.__dataclass_fields__
    return TrainingResult(**{key: value for key, value in manifest.items() if key in names})


def load_query_encoder(spec: EncoderSpec, directory: Path, *, backend: str, threads: int) -> TorchEncoder | OnnxEncoder:
    """The trained query encoder in `directory`, on torch or its ONNX int8 export.

    Its vector space names the trained weights, so cached query vectors never mix with the
    corpus encoder's.
    """
    manifest = read_manifest(directory)
    if manifest is None:
        raise QueryEncoderError(
            f"No complete query encoder at {directory}: train it again with `manage.py train_query_encoder`."
        )
    trained = str(manifest["fingerprint"])[:12]
    if backend == "torch":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(Path(directory) / MODEL_FOLDER), device="cpu", local_files_only=True)
        encoder = TorchEncoder(spec, model)
        encoder.vector_space = f"torch/query-{trained}"
        return encoder
    from .onnx_session import OnnxEncoderSession

    session = OnnxEncoderSession.from_export_dir(Path(directory) / ONNX_FOLDER, threads=threads)
    return OnnxEncoder(spec, session, quantized=True, export_id=f"query-{trained}")
