"""Safetensors bytes that depend on the tensors alone.

``safetensors.torch.save`` writes its ``__metadata__`` map in a random order (a Rust hash map), so the
same weights saved twice could differ in their bytes, and so in the folder checksum that names a model
in the store, the event log and the reports. :func:`weights_bytes` rewrites the header in one order.
"""

from __future__ import annotations

import json

import torch

#: safetensors: a little-endian u64 header length, then the JSON header, then the tensor data
_LENGTH_BYTES = 8
#: the header is padded with spaces to a multiple of this (as safetensors itself does)
_ALIGN = 8


def canonical(blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its header in a fixed order: the metadata first with its keys sorted,
    then the tensors in the order of their data; the tensor data is unchanged."""
    n = int.from_bytes(blob[:_LENGTH_BYTES], "little")
    header = json.loads(blob[_LENGTH_BYTES:_LENGTH_BYTES + n])
    meta = header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    ordered.update(sorted(header.items(), key=lambda item: (item[1]["data_offsets"], item[0])))
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % _ALIGN)
    return len(text).to_bytes(_LENGTH_BYTES, "little") + text + blob[_LENGTH_BYTES + n:]


def weights_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors file of ``state`` with ``metadata``: equal tensors give equal bytes."""
    from safetensors.torch import save

    return canonical(save(state, metadata=metadata))
