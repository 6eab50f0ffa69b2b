"""Ingest: upload scans, map their channels with a preview, and run the store's ingest.

Uploaded files are saved under the store's folder (``<store>_files/uploads/``) and
ingested one by one with ``store.ingest.ingest_files`` (one transaction per scan; a
bad file is reported and skipped, the others are stored).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import streamlit as st

from genuine_core import plotting
from genuine_core.errors import GenuineError, InputError
from pages import common

common.require_entrypoint()

KINDS = ["case", "mixture", "cell-line"]
GENOTYPES = {"unknown": None, "MNA": "MNA", "non-MNA": "non-MNA"}
NONE = "none"


def uploads_dir(store_path: Path) -> Path:
    """Folder beside the store where uploaded scans are kept."""
    return store_path.with_name(store_path.stem + "_files") / "uploads"


def save_upload(folder: Path, name: str, data: bytes) -> Path:
    """Write uploaded bytes to ``folder`` under a safe name prefixed by their hash; return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name) or "scan"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}_{safe}"
    if not path.is_file():
        path.write_bytes(data)
    return path


@st.cache_data(show_spinner=False, max_entries=16)
def channel_count(path: str, mtime: float) -> int | None:
    """Channels of a scan file (None when it cannot be read at all)."""
    from genuine_core import io as gio

    counter = getattr(gio, "channel_count", None)
    if counter is not None:
        try:
            return int(counter(path))
        except GenuineError:
            return None
    # Fallback until io offers channel_count: ask for an impossible channel and read the count
    # from the typed error.
    try:
        gio.read_scan(path, gio.ChannelMap(nmi=None, mycn=None, dapi=gio.MAX_CHANNELS + 1))
    except InputError as exc:
        m = re.search(r"has (\d+) channel", str(exc))
        return int(m.group(1)) if m else None
    return None


@st.cache_data(show_spinner=False, max_entries=16)
def preview(path: str, mtime: float, mapping: tuple) -> tuple[np.ndarray, list[tuple[str, np.ndarray]], str]:
    """Display RGB (NMI, MYCN, DAPI) and each channel of a scan read with ``mapping``; (rgb, channels, shape).

    Raises:
        InputError: the file or the mapping is not usable.
    """
    from genuine_core.io import ChannelMap, read_scan
    from genuine_core.pipeline import display_image

    scan = read_scan(path, ChannelMap(*mapping))
    img = scan.image
    step = max(1, int(np.ceil(max(img.shape[:2]) / 600)))  # preview at most ~600 px
    small = display_image(img[::step, ::step])
    chans = plotting.patch_channels(np.moveaxis(small.astype(np.float32) / 255.0, -1, 0))
    return small, chans, f"{img.shape[1]} x {img.shape[0]} px, source {scan.source_shape} {scan.source_dtype}"


@st.cache_resource(show_spinner="Loading models ...")
def ingest_models(db: str, models_rev: int):
    """The models an ingest runs (``store.ingest.resolve_models``), loaded once per model revision."""
    from store.ingest import resolve_models

    return resolve_models(common.store_at(db))


def planned_models(path: Path) -> list[str]:
    """Names of the models an ingest will run (registered models with a folder, else the shipped ones)."""
    from genuine_core.pipeline import model_folders

    if path.is_file():
        reg = common.models(str(path), common.rev("models"))
        names = reg.loc[reg["folder"].notna(), "name"].tolist() if len(reg) else []
        if len(reg):
            return names or ["(no registered model has a folder: nuclei are stored without predictions)"]
    return [f.name for f in model_folders()] or ["(no models: nuclei are stored without predictions)"]


def channel_mapping(n_channels: int | None, key: str) -> tuple:
    """Three selectboxes role -> source channel; returns ``(nmi, mycn, dapi)`` (None = absent)."""
    n = n_channels or 3
    options = list(range(n))
    c1, c2, c3 = st.columns(3)
    nmi = c1.selectbox("NMI (reference) channel", [NONE] + options, index=1 if n > 0 else 0, key=f"{key}_nmi")
    mycn = c2.selectbox("MYCN channel", [NONE] + options, index=2 if n > 1 else 0, key=f"{key}_mycn")
    dapi = c3.selectbox("DAPI channel", options, index=min(2, n - 1), key=f"{key}_dapi")
    return (None if nmi == NONE else int(nmi), None if mycn == NONE else int(mycn), int(dapi))


def run_ingest(store, paths: list[Path], mapping: tuple, sample: str, kind: str, expected: float | None,
               genotype: str | None) -> list:
    """Ingest ``paths`` one by one with a progress bar; returns the outcomes."""
    from genuine_core.io import ChannelMap
    from store.ingest import ingest_files

    models = ingest_models(str(store.path), common.rev("models"))
    bar = st.progress(0.0, text=f"Ingesting {len(paths)} scan(s) ...")
    outcomes = []
    for k, p in enumerate(paths):
        bar.progress(k / len(paths), text=f"Scan {k + 1} of {len(paths)}: {p.name.split('_', 1)[-1]}")
        report = ingest_files(store, [p], sample, kind=kind, expected=expected, genotype=genotype, models=models,
                              channel_map=ChannelMap(*mapping), progress=False)
        outcomes.extend(report.outcomes)
    bar.progress(1.0, text="Done")
    common.bump("data", "labels", "models")
    return outcomes


def show_outcomes(outcomes: list, sample: str) -> None:
    """One line per file (stored / already stored / failed) and a link to the case."""
    stored = [o for o in outcomes if o.status == "stored"]
    for o in outcomes:
        name = Path(o.path).name.split("_", 1)[-1]
        if o.status == "stored":
            st.success(f"**{name}**: {o.message}", icon=":material/check_circle:")
        elif o.status == "duplicate":
            st.info(f"**{name}**: {o.message}", icon=":material/content_copy:")
        else:
            st.error(f"**{name}** was not stored: {o.message}", icon=":material/error:")
    if stored or any(o.status == "duplicate" for o in outcomes):
        st.page_link("pages/cases.py", label=f"Open case {sample}", icon=":material/arrow_forward:",
                     query_params={"case": sample})


def main() -> None:
    common.page_header("Ingest", "Upload FISH scans (TIFF or PNG), map their channels, and score them with every "
                                 "registered model. Each scan is stored in one transaction.")
    path = common.db_path()
    if not path.is_file():
        common.empty_state()
        st.caption(f"The first ingest creates the store at `{path}`.")
    files = st.file_uploader("Scans", type=["tif", "tiff", "png"], accept_multiple_files=True, key="ingest_files",
                             help="RGB or multi-channel; one sample may hold several scans")
    last = st.session_state.get("ingest_result")
    if not files:
        if last:
            show_outcomes(*last)
        return
    folder = uploads_dir(path)
    saved = [save_upload(folder, f.name, f.getvalue()) for f in files]

    st.subheader("Channel mapping")
    first = saved[0]
    n_ch = channel_count(str(first), first.stat().st_mtime)
    st.caption(f"`{files[0].name}`: {n_ch if n_ch else '?'} channel(s). The same mapping is used for every "
               "uploaded file; code order is (NMI, MYCN, DAPI) = (red, green, blue).")
    mapping = channel_mapping(n_ch, "ingest_map")
    ok = True
    try:
        rgb, chans, shape = preview(str(first), first.stat().st_mtime, mapping)
        cols = st.columns([2, 1, 1, 1])
        cols[0].image(rgb, caption=f"composite · {shape}", width="stretch")
        for col, (name, img) in zip(cols[1:], chans):
            col.image(img, caption=name, width="stretch")
    except GenuineError as exc:
        ok = False
        st.error(f"`{files[0].name}` cannot be read with this mapping: {exc}", icon=":material/error:")
    except ValueError as exc:  # ChannelMap validation (e.g. the same channel twice)
        ok = False
        st.error(f"Invalid channel mapping: {exc}", icon=":material/error:")

    st.subheader("Sample")
    st.caption("Scored by: " + ", ".join(f"`{m}`" for m in planned_models(path)) +
               " · segmentation: the default backend")
    with st.form("ingest_form", border=True):
        c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
        default = Path(files[0].name).stem if len(files) == 1 else ""
        sample = c1.text_input("Sample name", value=default, key="ingest_sample")
        kind = c2.selectbox("Kind", KINDS, key="ingest_kind")
        genotype = c3.selectbox("Genotype", list(GENOTYPES), key="ingest_genotype",
                                help="a known genotype gives every nucleus an automatic label")
        expected = c4.number_input("Expected MNA %", min_value=0.0, max_value=100.0, value=None, step=5.0,
                                   key="ingest_expected", help="known mixture fraction, if any")
        go = st.form_submit_button(f"Ingest {len(saved)} scan(s)", type="primary", disabled=not ok,
                                   icon=":material/play_arrow:")
    if not go:
        if last:
            show_outcomes(*last)
        return
    if not sample.strip():
        st.error("Give the sample a name.", icon=":material/error:")
        return
    try:
        store = common.get_store(create=True)
        outcomes = run_ingest(store, saved, mapping, sample.strip(), kind,
                              None if expected is None else float(expected) / 100.0, GENOTYPES[genotype])
    except GenuineError as exc:
        common.show_error(exc)
        return
    st.session_state["ingest_result"] = (outcomes, sample.strip())
    show_outcomes(outcomes, sample.strip())


main()
