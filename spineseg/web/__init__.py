"""The web service: FastAPI app (JSON API + server-rendered pages), auth, templates, static files."""
