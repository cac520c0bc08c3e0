"""A FastAPI service embedding sessiondb: ``create_app()`` in ``app.py``, ``python -m examples.service`` to run it."""

from examples.service.app import create_app

__all__ = ["create_app"]
