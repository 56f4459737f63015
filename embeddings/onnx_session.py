"""Query-time ONNX encoding: open an export with onnxruntime and tokenizers, and read its manifest.

Never imports torch, even indirectly, so a process that only serves queries stays small and starts fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

__all__ = [
    "MANIFEST_FILENAME",
    "MAX_POSITIONS",
    "OnnxEncoderSession",
    "OnnxExportError",
    "inference_session",
    "read_manifest",
    "session_options",
]

MANIFEST_FILENAME = "manifest.json"
# BERT-style position embeddings stop at 512; the graph's sequence axis is declared up to this.
MAX_POSITIONS = 512

Float32Array = npt.NDArray[np.float32]

# onnxruntime's CPU SkipLayerNormalization kernel (residual add + layer norm in one) is slower than
# the Add and LayerNormalization it replaces, so the export does not fuse it and sessions are told
# not to fuse it when they load the graph either.
_SLOW_FUSIONS = ("SkipLayerNormFusion",)


class OnnxExportError(RuntimeError):
    """The model cannot be exported, its export does not match the torch model, or there is no export."""


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished export in `out_dir`, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class OnnxEncoderSession:
    """Thread-safe text -> unit-norm float32 embeddings with onnxruntime on the CPU.

    `threads` is how many cores one call may use. A long `encode` deals its batches out to that
    many single-threaded inference sessions running side by side, rather than splitting each
    batch's operators over threads: one short batch leaves little to split, and every operator
    would wait for the slowest thread. Each session holds its own copy of the weights.
    """

    def __init__(self, onnx_path: Path, tokenizer_path: Path, *, max_length: int = 256, threads: int = 1) -> None:
        if not 1 <= max_length <= MAX_POSITIONS:
            raise ValueError(f"max_length must be in 1..{MAX_POSITIONS}, got {max_length}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._max_length = max_length
        self._tokenizer = _load_tokenizer(Path(tokenizer_path), max_length)
        self._pad_id = _pad_id(self._tokenizer)
        self._sessions = tuple(inference_session(Path(onnx_path)) for _ in range(threads))
        self._input_names = tuple(node.name for node in self._sessions[0].get_inputs())
        self._output_name = self._sessions[0].get_outputs()[0].name
        self._dimension = self._probe_dimension()

    @classmethod
    def from_export_dir(cls, out_dir: Path, *, threads: int = 1) -> OnnxEncoderSession:
        """Open the export `export_onnx` wrote to `out_dir`, with its recorded max_seq_length."""
        manifest = read_manifest(Path(out_dir))
        if manifest is None:
            raise OnnxExportError(
                f"No ONNX export in {out_dir} ({MANIFEST_FILENAME} missing): run export_onnx() first."
            )
        return cls(
            Path(out_dir) / str(manifest["onnx_file"]),
            Path(out_dir) / str(manifest["tokenizer_file"]),
            max_length=int(manifest["max_seq_length"]),
            threads=threads,
        )

    @property
    def dimension(self) -> int:
        """Length of each embedding row."""
        return self._dimension

    @property
    def max_length(self) -> int:
        """Token count (special tokens included) at which texts are truncated."""
        return self._max_length

    @property
    def threads(self) -> int:
        """Cores one call may use: the number of single-threaded sessions batches run on."""
        return len(self._sessions)

    @property
    def inference_sessions(self) -> tuple[ort.InferenceSession, ...]:
        """The onnxruntime sessions batches are dealt to, one per thread, to inspect their options."""
        return self._sessions

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> Float32Array:
        """Embed `texts` as float32 rows of unit norm, in input order."""
        if isinstance(texts, str):
            # A bare string is a Sequence[str] of characters: almost certainly a caller bug.
            raise TypeError("encode() takes a sequence of strings, not a single str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(texts) == 0:
            return np.zeros((0, self._dimension), dtype=np.float32)
        if len(texts) == 1:
            return self._encode_one(texts[0])
        encodings = self._tokenizer.encode_batch(list(texts))
        # Sorting by token count keeps batches of similar length: less padding, less wasted compute,
        # and for int8 a batch's dynamic activation scale is not set by one unusually long text.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        out = np.empty((len(encodings), self._dimension), dtype=np.float32)
        lanes = min(len(self._sessions), len(batches))

        def run_lane(lane: int) -> None:
            # Dealt round robin, neighbouring (similar-length) batches go to different lanes, so
            # the lanes finish together. A batch's rows are its own: lanes never write the same row.
            session = self._sessions[lane]
            for rows in batches[lane::lanes]:
                out[rows] = self._run(session, self._padded_feeds([encodings[i] for i in rows]))

        if lanes == 1:
            run_lane(0)
        else:
            with ThreadPoolExecutor(max_workers=lanes) as pool:
                # list() re-raises a lane's exception here.
                list(pool.map(run_lane, range(lanes)))
        return out

    def _encode_one(self, text: str) -> Float32Array:
        # Query path: one text needs neither sorting nor padding, so it skips the batch machinery
        # and pays only for its own tokens.
        encoding = self._tokenizer.encode(text)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        return self._run(self._sessions[0], feeds)

    def _padded_feeds(self, encodings: list[Encoding]) -> dict[str, npt.NDArray[np.int64]]:
        width = max(len(e.ids) for e in encodings)
        shape = (len(encodings), width)
        input_ids = np.full(shape, self._pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            input_ids[row, :n] = encoding.ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = encoding.type_ids
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }

    def _run(self, session: ort.InferenceSession, feeds: dict[str, npt.NDArray[np.int64]]) -> Float32Array:
        # Feed only what the graph declares (two-input graphs for models without token types).
        inputs = {name: feeds[name] for name in self._input_names}
        result = session.run([self._output_name], inputs)[0]
        return np.asarray(result, dtype=np.float32)

    def _probe_dimension(self) -> int:
        declared = self._sessions[0].get_outputs()[0].shape[-1]
        if isinstance(declared, int) and declared > 0:
            return declared
        return int(self._encode_one("dimension probe").shape[1])


def session_options() -> ort.SessionOptions:
    """Options of every inference session: one thread, every graph optimisation."""
    options = ort.SessionOptions()
    # Parallelism comes from several sessions (OnnxEncoderSession) or several web workers; with
    # one thread there is no pool whose idle threads could spin on a core others need.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def inference_session(onnx_path: Path, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """A CPU session for the graph at `onnx_path` (default `session_options()`), without the slow fusions."""
    return ort.InferenceSession(
        str(onnx_path),
        options or session_options(),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(_SLOW_FUSIONS),
    )


def _load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The model's fast tokenizer, truncating at `max_length`, with padding off (done per batch)."""
    if not path.is_file():
        raise FileNotFoundError(f"Tokenizer not found at {path}: re-run export_onnx() for this model.")
    tokenizer = Tokenizer.from_file(str(path))
    # tokenizer.json ships its own settings (MiniLM: truncate at 128, pad to a FIXED 128), which
    # would silently differ from sentence-transformers (256) and pad every query to 128 tokens.
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    # Never reconfigured after this point: encode()/encode_batch() only read it, which the Rust
    # tokenizer allows from many threads at once, so one instance is shared without a lock (a lock
    # would guard nothing) rather than loaded per call (which costs more than encoding a query).
    return tokenizer


def _pad_id(tokenizer: Tokenizer) -> int:
    # Padded positions are masked out, so the id only has to be a valid one; prefer the real pad token.
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id)
    return 0
