"""Embeddings page (being built)."""

import streamlit as st

from pages import common

common.page_header("Embeddings", "under construction")
common.store_or_stop()
