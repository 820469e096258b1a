"""Demos run by ``python -m admission``."""
