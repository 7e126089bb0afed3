"""Jinja model-card templates, shipped as package data (`gradiend_hf.cards`)."""
