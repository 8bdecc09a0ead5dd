"""Routers: ``api`` (JSON under /api), ``downloads`` (study files), ``pages`` (HTML)."""
