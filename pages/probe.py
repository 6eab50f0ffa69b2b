"""Probe page (being built)."""

import streamlit as st

from pages import common

common.page_header("Probe", "under construction")
common.store_or_stop()
