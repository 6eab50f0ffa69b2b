"""What a run or a report was made from, by content rather than by path.

A model folder's ``train_config.json["inputs"]`` and an evaluation report's ``meta`` name their data by
its sha256 (a benchmark also by the seed, size and command that made it), the model folders they used by
their checksum (``folder_digest``), and the code and library versions, so a stranger holding only the
folder or the report can rebuild the inputs and check that they have the same ones.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

#: the repository this code runs from (its git commit is recorded when it is a git checkout)
REPO = Path(__file__).resolve().parents[1]
#: what identifies a benchmark in its ``config.json`` besides its size and jitter
BENCHMARK_KEYS = ("seed", "generator_version", "beta", "patch_size", "patch_normalisation", "command")


def benchmark_identity(folder: str | Path) -> dict[str, Any]:
    """A benchmark folder's sha256 (of ``nuclei.parquet``: nuclei, labels, splits) and the settings and
    command of ``genuine synth benchmark`` that wrote it (from its ``config.json``; missing keys are None)."""
    from training.datasets import data_fingerprint

    p = Path(folder)
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    size, jitter = cfg.get("size"), cfg.get("acquisition_jitter")
    rec = {"sha256": data_fingerprint(p), "sha256_of": "nuclei.parquet"}
    rec.update({k: cfg.get(k) for k in BENCHMARK_KEYS})
    rec["size"] = size.get("name") if isinstance(size, dict) else size
    rec["acquisition_jitter"] = jitter.get("strength") if isinstance(jitter, dict) else jitter
    return rec


def split_identity(name: str, nuclei) -> dict[str, Any]:
    """One benchmark split by content: its name, nucleus count and the sha256 of its nuclei rows (ids, labels,
    counts, positions as ``load_benchmark`` returns them), so a report's test figures name the nuclei scored."""
    import hashlib

    import pandas as pd

    rows = pd.util.hash_pandas_object(nuclei.reset_index(drop=True), index=False).to_numpy().tobytes()
    return {"split": name, "n": int(len(nuclei)), "sha256": hashlib.sha256(rows).hexdigest(),
            "sha256_of": "the split's nuclei rows (pandas row hashes)"}


def data_identity(source: str | Path) -> dict[str, Any]:
    """Training data by content: its absolute path and sha256; a benchmark also by how it was made."""
    from training.datasets import data_fingerprint, is_benchmark

    p = Path(source)
    if is_benchmark(p):
        return {"path": str(p.resolve()), **benchmark_identity(p)}
    try:
        digest = data_fingerprint(p)
    except OSError:  # not there: loading the data says so
        digest = None
    return {"path": str(p.resolve()), "sha256": digest, "sha256_of": p.name}


def folder_identity(folder: str | Path | None) -> dict[str, Any] | None:
    """A model folder by its absolute path and checksum (``folder_digest``); None for no folder. A folder that
    fails its checksum check is recorded with ``checksum`` None and the reason."""
    from genuine_core.errors import ModelLoadError
    from genuine_core.models.folder import folder_digest

    if not folder:
        return None
    rec: dict[str, Any] = {"path": str(Path(folder).resolve())}
    try:
        rec["checksum"] = folder_digest(folder)
    except ModelLoadError as exc:
        rec.update(checksum=None, error=str(exc))
    return rec


def code_revision() -> dict[str, Any]:
    """The git commit of the code (None outside a git checkout) and whether tracked files differ from it."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


def versions() -> dict[str, Any]:
    """The versions of this package, Python and the libraries that change numbers (numpy, torch, torchvision)."""
    from importlib.metadata import PackageNotFoundError, version

    import genuine_core

    out: dict[str, Any] = {"genuine": genuine_core.__version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "torchvision", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return {**out, **code_revision()}
