"""Database tables, queries and file storage of studies and their outputs.

Routes and jobs never write SQL: they call the keyword-only functions in ``users``,
``studies`` and ``audit``, passing a SQLAlchemy ``Session``.
"""
