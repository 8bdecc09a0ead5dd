"""Background work: the segment job and the persistent queue that runs it (Huey, SQLite)."""
