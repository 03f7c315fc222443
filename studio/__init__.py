"""Streamlit glue for AurA Studio: shared resources, session state and small view helpers."""
