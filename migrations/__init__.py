"""Alembic migrations; shipped with the package so `broker db upgrade` works after pip install."""
