"""GENUINE review dashboard: ``streamlit run app.py`` (store path from ``GENUINE_DB``).

The entry point only sets up the page, the sidebar (store status, reviewer name) and
the navigation; every page lives in ``pages/`` and is listed here explicitly
(``st.navigation`` turns off auto-discovery of ``pages/``).
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="GENUINE · MYCN FISH review", page_icon="🧬", layout="wide")
st.set_option("client.toolbarMode", "minimal")  # no developer "Deploy" menu in a clinical tool

from pages import common  # noqa: E402  (after set_page_config)

PAGES = {
    "Clinical": [
        st.Page("pages/cases.py", title="Cases", icon=":material/folder_shared:", default=True),
    ],
    "Curation": [
        st.Page("pages/review.py", title="Review", icon=":material/fact_check:"),
    ],
    "Analysis": [
        st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
        st.Page("pages/probe.py", title="Probe", icon=":material/science:"),
    ],
    "Data": [
        st.Page("pages/ingest.py", title="Ingest", icon=":material/upload_file:"),
        st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
    ],
}

page = st.navigation(PAGES)
common.sidebar()
common.mark_entry()
common.run_page(page)
