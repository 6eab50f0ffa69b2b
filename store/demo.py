"""The demo store: synthetic cell lines and mixtures (with ground truth) plus the real image.

``build_demo`` generates a small synthetic benchmark beside the store (or uses a given
one), ingests its fields with every shipped model (``models/``), ingests the real scan
``../shared/data/real/FISH_RGB.TIF`` when present, and fits each model's UMAP. The store
is built under a temporary name and renamed when complete, so a half-built demo never
takes the place of a finished one.

When a model kind has no trained folder under ``models/`` yet, a freshly initialised
``cpu``-preset model of that kind stands in (named ``<kind>_untrained``) so the dashboard
still opens onto all four models; its predictions mean nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from genuine_core.embedding import UmapConfig
from genuine_core.errors import InputError
from genuine_core.pipeline import SHIPPED_MODELS, ScoringModel, folder_kind, load_model, model_folders
from store.db import files_folder, refuse_taken_files_folder, remove_store_files
from store.location import login_name, store_exists

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
REAL_IMAGE = REPO.parent / "shared" / "data" / "real" / "FISH_RGB.TIF"
REAL_SAMPLE = "FISH_RGB (real scan)"
MODEL_KINDS = ("genuine", "resnet", "detector", "ratio")


#: most nuclei per cell line or mixture sample the demo generates (its default is 150 and 64)
MAX_DEMO_NUCLEI = 5000


@dataclass(frozen=True)
class DemoConfig:
    """What goes into the demo store.

    Attributes:
        seed: seed of the generated benchmark and of the UMAP fits.
        nuclei_per_line: nuclei per cell line in the generated benchmark (train/val/test by field).
        mixture_nuclei: nuclei per mixture sample (8 mixtures at 0-100 % MNA).
        nuclei_per_field: nuclei per synthetic 512 x 512 field.
        max_fields_per_sample: at most this many fields per (sample, split) are ingested (None: all).
        include_real: ingest the real scan when present.
        mc_samples: MC-dropout passes for the uncertainty.
    """

    seed: int = 1
    nuclei_per_line: int = 150
    mixture_nuclei: int = 64
    nuclei_per_field: int = 25
    max_fields_per_sample: int | None = None
    include_real: bool = True
    mc_samples: int = 10

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.nuclei_per_line < 3 or self.mixture_nuclei < 1 or self.nuclei_per_field < 1:
            raise ValueError("need >= 3 nuclei per line and >= 1 per mixture and field")
        if self.nuclei_per_line > MAX_DEMO_NUCLEI or self.mixture_nuclei > MAX_DEMO_NUCLEI:  # a demo, not a study
            raise ValueError(f"at most {MAX_DEMO_NUCLEI} nuclei per line and per mixture")
        if self.max_fields_per_sample is not None and self.max_fields_per_sample < 1:
            raise ValueError("max_fields_per_sample must be >= 1")
        if self.mc_samples < 0:
            raise ValueError("mc_samples must be >= 0")


def make_demo_benchmark(out: Path, config: DemoConfig, progress: bool = True, force: bool = False) -> Path:
    """Generate (or reuse, when complete and of the same settings) the demo's synthetic benchmark in ``out``.

    Raises:
        InputError: ``out`` is a file, or holds anything else (another demo benchmark included) and not ``force``.
    """
    import json

    from genuine_core.synth.benchmark import BenchmarkSize, make_benchmark

    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    size = cfg.get("size") if isinstance(cfg, dict) and isinstance(cfg.get("size"), dict) else {}
    if (out / "nuclei.parquet").is_file() and (out / "summary.json").is_file():
        if (cfg.get("seed") == config.seed and size.get("nuclei_per_line") == config.nuclei_per_line
                and size.get("mixture_nuclei") == config.mixture_nuclei):
            logger.info("demo: reusing the benchmark in %s", out)
            return out
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, where the demo keeps its benchmark folder; move it, or build the demo "
                         "store elsewhere (--out)")
    if out.is_dir() and any(out.iterdir()) and not force:  # another store's (same stem), or someone's files
        what = ("a demo benchmark of other settings" if size.get("name") == "demo"
                else "files that are not a demo benchmark")
        raise InputError(f"{out} holds {what}; pass --force to replace them, or build the demo store elsewhere "
                         "(--out)")
    size = BenchmarkSize("demo", nuclei_per_line=config.nuclei_per_line, mixture_nuclei=config.mixture_nuclei,
                         patch_size=96, field_shape=(512, 512), nuclei_per_field=config.nuclei_per_field)
    make_benchmark(out, seed=config.seed, size=size, overwrite=True, progress=progress)
    return out


def demo_benchmark_folder(store_path: Path) -> Path:
    """Where the demo store ``<name>.duckdb`` keeps its generated benchmark: ``<name>_benchmark/`` beside it.

    Named after the store, so that building another store in the same folder never regenerates a
    benchmark an earlier store's scans (and the user's ``genuine evaluate --data``) still refer to.
    """
    return store_path.with_name(f"{store_path.stem}_benchmark")


def untrained_models(folder: Path, kinds=MODEL_KINDS, seed: int = 0) -> list[Path]:
    """Freshly initialised cpu-preset model folders of the given kinds (for a repo without trained models)."""
    from genuine_core.models import build_model, preset_config, save_model

    out = []
    for kind in kinds:
        path = folder / f"{kind}_untrained"
        if not (path / "checksum.sha256").is_file():
            save_model(build_model(preset_config("cpu", kind=kind, seed=seed)), path,
                       metrics={"note": "untrained: random initial weights, for the demo only"})
        out.append(path)
    return out


def demo_models(model_dirs, work: Path, mc_samples: int) -> list[ScoringModel]:
    """Models for the demo: the given folders; else the shipped ones, with untrained stand-ins
    (named ``<kind>_untrained``) for any of the four kinds not shipped yet."""
    paths: list[Path] = []
    for d in model_dirs or ():
        found = model_folders(d)
        if not found:
            raise InputError(f"{d}: no model folder found (config.json with a model kind, and weights)")
        paths.extend(found)
    if not model_dirs:
        paths = model_folders(SHIPPED_MODELS)
        missing = [k for k in MODEL_KINDS if k not in {folder_kind(p) for p in paths}]
        if missing:
            logger.warning("demo: no trained %s model under %s; using untrained stand-ins (random predictions)",
                           "/".join(missing), SHIPPED_MODELS)
            paths += untrained_models(work / "untrained_models", missing)
    return [load_model(p, mc_samples=mc_samples) for p in paths]


def build_demo(out: str | Path, config: DemoConfig = DemoConfig(), benchmark: str | Path | None = None,
               model_dirs=None, force: bool = False, progress: bool = True) -> dict:
    """Build the demo store at ``out``.

    Args:
        out: store file to create (its benchmark goes beside it: :func:`demo_benchmark_folder`).
        config: what to include.
        benchmark: an existing benchmark folder to ingest instead of generating one.
        model_dirs: model folders (default: shipped ``models/``; untrained ones when none exist).
        force: replace an existing store (and a folder of its benchmark's name that is no demo benchmark).
        progress: progress bars.

    Returns:
        ``{"path", "seconds": {stage: s}, "n_nuclei", "models", "samples", "failed"}``.

    Raises:
        InputError: ``out`` holds a store (an empty file does not) and ``force`` is False, or bad folders.
    """
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the store file to create, e.g. {out / 'genuine_demo.duckdb'}")
    if store_exists(out):  # an empty file (e.g. `touch`) holds nothing: built in its place, untouched until then
        _refuse_to_replace(out)
        if not force:
            raise InputError(_exists_refusal(out))
    if not force:  # a rebuild replaces these: here they are another store's (same stem) or a deleted one's
        refuse_taken_files_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial" + out.suffix)
    remove_store_files(partial)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()  # models first: a bad model folder is refused before the benchmark is written
    models = demo_models(model_dirs, out.parent, config.mc_samples)
    seconds["load_models"] = time.perf_counter() - t

    t = time.perf_counter()
    bench = Path(benchmark) if benchmark else make_demo_benchmark(demo_benchmark_folder(out), config, progress, force)
    seconds["benchmark"] = time.perf_counter() - t

    failed: list[str] = []
    try:
        n_nuclei, sample_names = _fill_demo_store(partial, bench, models, config, progress, failed, seconds)
        if store_exists(out):
            _refuse_to_replace(out)  # again: another process may have opened it while this one built
    except BaseException:  # failure or Ctrl-C: no half-built store left beside the old one (which stays intact)
        remove_store_files(partial)
        raise
    remove_store_files(out)
    partial.rename(out)
    if files_folder(partial).is_dir():
        files_folder(partial).rename(files_folder(out))
    seconds["total"] = time.perf_counter() - t_all
    return {"path": str(out), "seconds": {k: round(v, 1) for k, v in seconds.items()}, "n_nuclei": n_nuclei,
            "models": [m.name for m in models], "samples": sample_names, "failed": failed}


def _refuse_to_replace(path: Path) -> None:
    """Refuse, even with --force, to replace an existing file that is not a GENUINE store (another program's:
    InputError) or that another process has open, e.g. the dashboard (``store.db.StoreBusy``)."""
    from store.db import NotAStore, Store, StoreBusy

    try:
        Store(path, busy_timeout=0, migrate=False).close()
    except NotAStore as exc:
        raise InputError(f"{path} exists and is not a GENUINE store ({exc.what}); give another --out") from None
    except StoreBusy:
        raise
    except Exception:  # noqa: BLE001 (an old, newer or empty store: a rebuild may replace it)
        pass


def _exists_refusal(store_path: Path) -> str:
    """Why an existing store is not rebuilt without --force, naming what the rebuild would delete besides the
    demo data: curators' label events and retraining runs."""
    from store.db import Store

    parts = []
    try:
        with Store(store_path, read_only=True, busy_timeout=0, migrate=False) as s:
            n = int(s.scalar("SELECT count(*) FROM label_events") or 0)
        if n:
            parts.append(f"{n} curators' label events")
    except Exception:  # noqa: BLE001 (busy or old file: the plain refusal is enough)
        pass
    runs = files_folder(store_path) / "runs"
    n_runs = sum(1 for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else 0
    if n_runs:
        parts.append(f"{n_runs} retraining run{'s' if n_runs > 1 else ''}")
    holds = f" (it holds {' and '.join(parts)}, which --force deletes)" if parts else ""
    return f"{store_path} exists{holds}; use --force to rebuild it"


def _fill_demo_store(partial: Path, bench: Path, models, config: DemoConfig, progress: bool, failed: list[str],
                     seconds: dict[str, float]) -> tuple[int, list[str]]:
    """Ingest the benchmark (and the real scan), fit the UMAPs and check the store at ``partial``.

    Appends failed files to ``failed`` and stage times to ``seconds``; returns ``(n_nuclei, sample names)``.
    """
    from store import umap as umap_store
    from store.check import check_store
    from store.db import Store
    from store.ingest import ingest_benchmark, ingest_files

    with Store(partial) as store:
        t = time.perf_counter()
        rep = ingest_benchmark(store, bench, models, max_fields_per_sample=config.max_fields_per_sample,
                               progress=progress, place_umap=False, by=login_name())
        failed += [f"{o.path}: {o.message}" for o in rep.outcomes if o.status == "failed"]
        seconds["ingest_benchmark"] = time.perf_counter() - t
        if config.include_real and REAL_IMAGE.is_file():
            t = time.perf_counter()
            rep_real = ingest_files(store, [REAL_IMAGE], REAL_SAMPLE, kind="case", models=models,
                                    progress=progress, place_umap=False)
            failed += [f"{o.path}: {o.message}" for o in rep_real.outcomes if o.status == "failed"]
            seconds["ingest_real"] = time.perf_counter() - t
        elif config.include_real:
            logger.warning("demo: real image not found at %s; skipped", REAL_IMAGE)
        t = time.perf_counter()
        for m in models:
            umap_store.fit_umap(store, m.name, UmapConfig(seed=config.seed))
        seconds["umap"] = time.perf_counter() - t
        problems = check_store(store)
        if problems:
            raise RuntimeError("demo store failed its integrity check: " + "; ".join(problems))
        n_nuclei = int(store.scalar("SELECT count(*) FROM nuclei"))
        sample_names = store.query("SELECT name FROM samples ORDER BY kind, name")["name"].tolist()
    return n_nuclei, sample_names
