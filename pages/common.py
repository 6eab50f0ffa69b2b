"""Shared UI plumbing for the dashboard pages (imported by ``app.py`` and every page).

- the store: one connection per server process (``st.cache_resource``), opened from
  ``GENUINE_DB`` (default ``demo/genuine_demo.duckdb``); never created by merely looking;
- cache invalidation: cached queries take a *revision* number; writes bump the
  revision of what they changed (``labels``, ``data``, ``models``, ``probes``, ``signouts``), so every
  session sees fresh numbers after a write while unchanged queries stay cached;
- the sidebar (store status, reviewer name, patch colours, reload) and the empty-store state;
- small render helpers shared by several pages (patch gallery, label names).

No SQL here: every query is a function of ``store/``.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from genuine_core import plotting
from genuine_core.errors import GenuineError
from store.location import DEFAULT_DB, store_exists

REPO = Path(__file__).resolve().parents[1]
EMPTY_HINT = ("Nothing here yet: run `genuine demo` (or `bash scripts/run.sh`) to build the demo store, "
              "or ingest a scan on the **Ingest** page.")
REVIEWER_KEY = "reviewer"
#: the address parameter that keeps the reviewer name over a reload or a copied link (``?reviewer=ann``)
REVIEWER_PARAM = "reviewer"
_REVIEWER_READ = "_reviewer_address_read"  # session flag: the address was read once (a cleared name stays cleared)
_REVIEWER_IGNORED = "_reviewer_address_ignored"  # session: why a name in the address was not taken
#: patch colour schemes (display only; the first, red/green, is the default) and the session key of the choice
SCHEMES = list(plotting.PATCH_SCHEMES)
SCHEME_KEY = "patch_colours"
_REVISION_KINDS = ("labels", "data", "models", "probes", "signouts")


# ----------------------------------------------------------------------------- store access
def db_path() -> Path:
    """The store file: ``$GENUINE_DB`` (relative to the working directory) or ``demo/genuine_demo.duckdb``
    under the repository."""
    env = os.environ.get("GENUINE_DB", "").strip()
    p = Path(env).expanduser() if env else REPO / DEFAULT_DB  # the default works from any working directory
    return p.resolve()


@st.cache_resource(show_spinner=False)
def store_at(path: str):
    """The store at ``path``, opened once per server process (writable; created when missing).

    Cached queries take the path string (hashable) and call this to get the connection.
    """
    from store.db import open_store

    store = open_store(path, busy_timeout=3.0)
    atexit.register(store.close)  # checkpoint and release the file when the server stops
    return store


def get_store(create: bool = False):
    """The open store, or None when the file does not exist (and ``create`` is False).

    Raises:
        StoreError: the file exists but cannot be opened (locked by another process, not a store).
    """
    path = db_path()
    if not store_exists(path) and not create:  # missing, or an empty file (e.g. `touch`): no store yet
        return None
    return store_at(str(path))


def run_page(page) -> None:
    """Run the chosen page (``app.py``); DuckDB running out of its memory limit (``$GENUINE_DUCKDB_MEMORY``) is
    shown as one error saying how to raise it, not as a traceback."""
    from store.memory import is_out_of_memory, out_of_memory_message

    try:
        page.run()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        text = out_of_memory_message(exc, "the dashboard")
        st.error(text[0].upper() + text[1:], icon=":material/memory:")


def store_or_stop():
    """The store, or render the empty state / the open error and stop the page."""
    try:
        store = get_store()
    except GenuineError as exc:
        from store.db import StoreBusy

        st.error(f"The store cannot be opened: {exc}", icon=":material/error:")
        advice = ("Close other programs that write to it and reload." if isinstance(exc, StoreBusy) else
                  "The dashboard opens it for writing: check that it is a GENUINE store and that this server's "
                  "user may write to it and to its folder (command-line readers such as `genuine store info` "
                  "can still read a read-only copy), then reload.")
        st.caption(f"Store file: `{db_path()}`. {advice}")
        st.stop()
    if store is None:
        empty_state()
        st.stop()
    return store


def empty_hint(path: Path) -> str:
    """How the store at ``path`` gets data: the demo commands build only the default demo store; any other
    store (a lab's new one) is created and filled by ingesting."""
    if path.resolve() == (REPO / DEFAULT_DB).resolve():
        return EMPTY_HINT
    import shlex

    return (f"Nothing here yet: ingest a scan on the **Ingest** page (or `genuine ingest IMAGE --sample NAME --db "
            f"{shlex.quote(str(path))}`); the first ingest creates the store.")


def empty_state(what: str = "") -> None:
    """The standard 'nothing here yet' message (optionally naming what is missing)."""
    lead = f"**No {what} in the store.** " if what else ""
    st.info(lead + empty_hint(db_path()), icon=":material/inbox:")


# ----------------------------------------------------------------------------- entry point
_VIA_APP = "_genuine_via_app"


def mark_entry() -> None:
    """Called by ``app.py`` right before it runs the selected page."""
    st.session_state[_VIA_APP] = True


def require_entrypoint() -> None:
    """Make sure this page runs inside ``app.py`` (navigation, sidebar, page config).

    Streamlit decides once per server process whether the app uses the legacy ``pages/``
    auto-discovery: until ``st.navigation`` has run, it does. So the very first request
    of a fresh server for e.g. ``/probe`` executes ``pages/probe.py`` on its own. In that
    case run ``app.py`` (which calls ``st.navigation`` and then this page) and stop the
    outer run. Every later run goes through ``app.py`` directly.
    """
    if st.session_state.pop(_VIA_APP, False):
        return
    import runpy

    runpy.run_path(str(REPO / "app.py"), run_name="__main__")
    st.stop()


# ----------------------------------------------------------------------------- revisions
@st.cache_resource(show_spinner=False)
def _revisions() -> dict:
    return {"lock": threading.Lock(), **{k: 0 for k in _REVISION_KINDS}}


def rev(kind: str) -> int:
    """Current revision of one kind of data (part of cached queries' keys)."""
    return _revisions()[kind]


def bump(*kinds: str) -> None:
    """Mark data as changed: cached queries keyed on these revisions recompute on next use."""
    r = _revisions()
    with r["lock"]:
        for k in kinds or _REVISION_KINDS:
            if k not in _REVISION_KINDS:
                raise ValueError(f"unknown revision kind {k!r}")
            r[k] += 1


# ----------------------------------------------------------------------------- reviewer / sidebar
def reviewer() -> str:
    """The reviewer name entered in the sidebar ('' when none)."""
    return str(st.session_state.get(REVIEWER_KEY, "") or "").strip()


def reviewer_from_address() -> None:
    """Once per session, take the reviewer name from ``?reviewer=`` when the session has none; a name that
    fails the store's name check (``store.location.person_name``) is dropped and the reason kept for a caption."""
    import argparse

    from store.location import person_name

    if st.session_state.get(_REVIEWER_READ):
        return
    st.session_state[_REVIEWER_READ] = True
    text = st.query_params.get(REVIEWER_PARAM)
    if text is None or reviewer():
        return
    try:
        name = person_name(text)
    except argparse.ArgumentTypeError as exc:
        st.session_state[_REVIEWER_IGNORED] = f"The reviewer name in the address was ignored: it needs {exc}."
        del st.query_params[REVIEWER_PARAM]
        return
    if name:
        st.session_state[REVIEWER_KEY] = name


def reviewer_typed() -> None:
    """Reviewer box callback: a typed name that fails ``store.location.person_name`` (control characters) is not
    taken, as one from the address is; the reason is kept for the sidebar's caption."""
    import argparse

    from store.location import person_name

    try:
        person_name(str(st.session_state.get(REVIEWER_KEY, "") or ""))
    except argparse.ArgumentTypeError as exc:
        st.session_state[REVIEWER_KEY] = ""
        st.session_state[_REVIEWER_IGNORED] = f"The reviewer name typed was ignored: it needs {exc}."
        return
    st.session_state.pop(_REVIEWER_IGNORED, None)


def reviewer_to_address() -> None:
    """Keep ``?reviewer=`` equal to the session's reviewer name (removed when there is none); the page's
    other parameters (e.g. ``?case=``) are left as they are."""
    name = reviewer()
    if name and st.query_params.get(REVIEWER_PARAM) != name:
        st.query_params[REVIEWER_PARAM] = name
    elif not name and REVIEWER_PARAM in st.query_params:
        del st.query_params[REVIEWER_PARAM]


def patch_scheme() -> str:
    """The patch colour scheme chosen in the sidebar for this session (default red/green)."""
    chosen = st.session_state.get(SCHEME_KEY)
    return chosen if chosen in SCHEMES else SCHEMES[0]


def sidebar() -> None:
    """Store status, reviewer name (asked once per session), patch colours and a reload button."""
    reviewer_from_address()
    with st.sidebar:
        st.text_input("Reviewer", key=REVIEWER_KEY, placeholder="your name (stamped on every decision)",
                      on_change=reviewer_typed,
                      help="Asked once per browser session and kept in the page address (`?reviewer=`), so a "
                           "reload or a copied link keeps it; every label decision is recorded under this name.")
        reviewer_to_address()
        if not reviewer():
            ignored = st.session_state.get(_REVIEWER_IGNORED)
            if ignored:
                st.caption(f":orange[:material/warning: {ignored}]")
            st.caption(":orange[:material/person_off: No reviewer set: review decisions are disabled.]")
        st.segmented_control("Patch colours", SCHEMES, default=SCHEMES[0], required=True, key=SCHEME_KEY,
                             help="How every page shows nucleus patches (display only; stored patches, decisions "
                                  "and models are unaffected). magenta/green: for red-green colour-blind readers "
                                  "(NMI magenta, MYCN green, DAPI grey).")
        path = db_path()
        if not store_exists(path):
            st.caption(f":material/database: `{path.name}` not built yet")
            return
        try:
            info = store_overview(str(path), rev("data"), rev("models"))
        except GenuineError as exc:
            st.caption(f":red[:material/error: store unavailable: {exc}]")
            return
        st.caption(f":material/database: `{path.name}` · {info['samples']} samples · "
                   f"{info['nuclei']:,} nuclei · {info['models']} models")
        # a callback runs before the rerun draws anything, so these counts are fresh too
        st.button("Reload data", icon=":material/refresh:", help="Re-read the store (after a CLI ingest)",
                  key="reload_data", type="tertiary", on_click=reload_data)


def reload_data() -> None:
    """Forget every cached query: the next run reads the store again."""
    bump()
    st.cache_data.clear()


# ----------------------------------------------------------------------------- cached queries
@st.cache_data(show_spinner=False, max_entries=8)
def store_overview(db: str, data_rev: int, models_rev: int) -> dict:
    """Counts for the sidebar: samples (with scans), nuclei, models."""
    from store.registry import list_models
    from store.samples import list_samples

    s = store_at(db)
    samples = list_samples(s).query("n_scans > 0")
    return {"samples": len(samples), "nuclei": int(samples["n_nuclei"].sum()) if len(samples) else 0,
            "models": len(list_models(s))}


@st.cache_data(show_spinner=False, max_entries=8)
def samples(db: str, data_rev: int) -> pd.DataFrame:
    """``store.samples.list_samples`` of the samples that hold scans (a removal can leave one empty)."""
    from store.samples import list_samples

    return list_samples(store_at(db)).query("n_scans > 0").reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=8)
def models(db: str, models_rev: int) -> pd.DataFrame:
    """``store.registry.list_models``."""
    from store.registry import list_models

    return list_models(store_at(db))


@st.cache_data(show_spinner=False, max_entries=16)
def uncertainty_passes(db: str, data_rev: int, models_rev: int, sample: str | None = None) -> dict:
    """``store.uncertainty.passes_by_model``: each model's recorded MC-dropout pass counts (of one sample)."""
    from store.uncertainty import passes_by_model

    return passes_by_model(store_at(db), sample)


def default_model(names: list[str], kinds: dict[str, str]) -> str:
    """The model a page starts on: the first GENUINE model, else the first one."""
    return next((m for m in names if kinds.get(m) == "genuine"), names[0])


@st.cache_data(show_spinner=False, max_entries=64)
def patch_rgbs(db: str, ids: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Stored patches as (P, P, 3) uint8 RGB by nucleus id (``store.nuclei.patch_images``)."""
    from store.nuclei import patch_images

    return {i: plotting.patch_rgb(p) for i, p in patch_images(store_at(db), list(ids)).items()}


@st.cache_data(show_spinner=False, max_entries=64)
def patch_pngs(db: str, ids: tuple[int, ...]) -> dict[int, bytes]:
    """Stored patches as PNG bytes by nucleus id (``store.nuclei.patch_bytes``; :func:`gallery` shows them as PNG)."""
    from store.nuclei import patch_bytes

    return patch_bytes(store_at(db), list(ids))


@st.cache_data(show_spinner=False, max_entries=64)
def patch_pngs_in(db: str, ids: tuple[int, ...], scheme: str) -> dict[int, bytes]:
    """Stored patches as PNG bytes drawn in the patch colour ``scheme`` (red/green: the stored bytes as they are;
    otherwise decoded, recoloured with ``plotting.recolour`` and encoded again)."""
    pngs = patch_pngs(db, ids)
    if scheme == SCHEMES[0]:
        return pngs
    from genuine_core.pipeline import decode_image, encode_image

    return {i: encode_image(plotting.recolour(decode_image(b), scheme)) for i, b in pngs.items()}


@st.cache_data(show_spinner=False, max_entries=64)
def nucleus_info(db: str, labels_rev: int, ids: tuple[int, ...]) -> pd.DataFrame:
    """``store.nuclei.nucleus_info`` (origin and labels of nuclei)."""
    from store.nuclei import nucleus_info as q

    return q(store_at(db), list(ids))


# ----------------------------------------------------------------------------- render helpers
def label_name(value) -> str:
    """1/0/NA -> 'MNA'/'non-MNA'/'-'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "-"
    try:
        return plotting.LABEL_NAMES.get(int(value), str(value))
    except (TypeError, ValueError):
        return str(value)


def curated_name(row) -> str:
    """Current curated decision of a nucleus row (``excluded``, ``curated_label``)."""
    if bool(row.get("excluded", False)):
        return "excluded"
    return label_name(row.get("curated_label"))


def gallery(ids, captions: list[str] | None = None, ncols: int = 8, width: int | str = "stretch",
            db: str | None = None) -> None:
    """Patch gallery: one image per nucleus id with an optional caption under each, in the sidebar's patch
    colours (:func:`patch_scheme`), and a line naming the channels' colours.

    ``width`` is each image's width in px, or ``"stretch"`` (default): as wide as its column, so ``ncols``
    images always fit the page (eight fixed 96 px patches ran 8 px past the content edge at 1280 px).
    """
    ids = [int(i) for i in ids]
    if not ids:
        st.caption("No nuclei to show.")
        return
    scheme = patch_scheme()
    imgs = patch_pngs_in(db or str(db_path()), tuple(ids), scheme)
    shown = [i for i in ids if i in imgs]
    caps = captions if captions is not None else [f"#{i}" for i in ids]
    cap_by_id = dict(zip(ids, caps))
    for start in range(0, len(shown), ncols):
        cols = st.columns(ncols)
        for col, nid in zip(cols, shown[start:start + ncols]):
            # PNG as sent: Streamlit's "auto" format re-encoded each patch as JPEG, blurring the small coloured
            # signals (chroma subsampling) and costing a decode and an encode per patch
            col.image(imgs[nid], caption=cap_by_id.get(nid, ""), width=width, output_format="PNG")
    st.caption(f"Patch colours: {plotting.channel_caption(scheme)}")  # what the channels are, for every reader


def page_header(title: str, subtitle: str) -> None:
    """Page title and one-line purpose."""
    st.title(title)
    st.caption(subtitle)


def show_error(exc: Exception) -> None:
    """A typed user-facing error as a red box (other exceptions propagate)."""
    st.error(str(exc), icon=":material/error:")


__all__ = [
    "bump", "curated_name", "db_path", "empty_state", "gallery", "get_store", "label_name", "mark_entry",
    "models", "nucleus_info", "page_header", "patch_pngs", "patch_pngs_in", "patch_rgbs", "patch_scheme",
    "require_entrypoint", "rev",
    "reviewer", "samples", "show_error", "sidebar", "store_at", "store_or_stop", "store_overview",
]
