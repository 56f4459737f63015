"""Plain numeric arrays for data that is not plain: strings as UTF-8 bytes, dicts of arrays as CSR.

What `LexicalIndex.to_arrays` stores is read back through these, each checked (dtype, shape, pointers
in range), so a damaged or foreign file raises ValueError instead of answering wrongly later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# Joins stored strings into one UTF-8 array: words are runs of letters and digits
# (typed_query._TOKEN_RE), so no word, stem or typo key contains it.
STRING_SEPARATOR = "\n"


def pack_strings(strings: Sequence[str]) -> npt.NDArray[np.uint8]:
    """`strings` as one UTF-8 byte array (their count is kept elsewhere: CSR pointers)."""
    joined = STRING_SEPARATOR.join(strings)
    if joined.count(STRING_SEPARATOR) != max(len(strings) - 1, 0):
        raise ValueError(f"a stored string contains the separator {STRING_SEPARATOR!r}")
    return np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)


def unpack_strings(packed: npt.NDArray[np.uint8], count: int) -> list[str]:
    """The `count` strings `pack_strings` joined (UnicodeDecodeError, a ValueError, when damaged)."""
    strings = packed.tobytes().decode("utf-8").split(STRING_SEPARATOR) if count else []
    if len(strings) != count:
        raise ValueError(f"expected {count} stored strings, found {len(strings)}")
    return strings


def flatten_groups(name: str, groups: Mapping[str, npt.NDArray[np.int64]]) -> dict[str, npt.NDArray[np.generic]]:
    """A dict of term arrays as three arrays: its keys, CSR pointers and the concatenated terms."""
    sizes = [len(terms) for terms in groups.values()]
    return {
        f"{name}_keys": pack_strings(list(groups)),
        f"{name}_ptr": np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).astype(np.int64),
        f"{name}_terms": np.concatenate(list(groups.values())).astype(np.int64)
        if groups
        else np.empty(0, dtype=np.int64),
    }


def unflatten_groups(
    arrays: Mapping[str, npt.NDArray[np.generic]], name: str, *, bound: int
) -> tuple[list[str], list[int], npt.NDArray[np.int64]]:
    """What `flatten_groups` stored under `name`: the keys, their CSR pointers and the terms (each below `bound`)."""
    ptr = csr_pointers(arrays, f"{name}_ptr")
    terms = csr_values(arrays, f"{name}_terms", np.int64, ptr, bound=bound)
    return unpack_strings(checked_array(arrays, f"{name}_keys", np.uint8, 1), len(ptr) - 1), ptr.tolist(), terms


def checked_array(
    arrays: Mapping[str, npt.NDArray[np.generic]],
    name: str,
    dtype: npt.DTypeLike,
    ndim: int,
    *,
    size: int | None = None,
) -> npt.NDArray[Any]:
    """`arrays[name]`, checked to have this dtype, number of dimensions and (when given) length."""
    array = arrays[name]
    if array.dtype != np.dtype(dtype) or array.ndim != ndim or (size is not None and len(array) != size):
        raise ValueError(f"stored array {name!r} is {array.dtype} of shape {array.shape}")
    return array


def csr_pointers(arrays: Mapping[str, npt.NDArray[np.generic]], name: str) -> npt.NDArray[np.int64]:
    """CSR pointers: starting at 0 and never decreasing."""
    ptr: npt.NDArray[np.int64] = checked_array(arrays, name, np.int64, 1)
    if ptr.size == 0 or ptr[0] != 0 or (np.diff(ptr) < 0).any():
        raise ValueError(f"stored array {name!r} is not a list of CSR pointers")
    return ptr


def csr_values(
    arrays: Mapping[str, npt.NDArray[np.generic]],
    name: str,
    dtype: npt.DTypeLike,
    ptr: npt.NDArray[np.int64],
    *,
    bound: int,
) -> npt.NDArray[Any]:
    """The values `ptr` points into, each in [0, bound)."""
    values = checked_array(arrays, name, dtype, 1, size=int(ptr[-1]))
    if values.size and (values.min() < 0 or values.max() >= bound):
        raise ValueError(f"stored array {name!r} points outside the index")
    return values
