"""``imageprism serve``: an HTTP API and a page over an index directory (the ``serve`` extra).

Start it with ``imageprism serve INDEX_DIR`` (see the README's "Service" section), or
from Python::

    import uvicorn
    from imageprism.serve import Catalogue, create_app
    uvicorn.run(create_app(Catalogue("catalogue/")), host="127.0.0.1", port=8000)

:class:`Catalogue` owns the index, its thumbnails and the write path (group commit
through one writer thread); :func:`create_app` is the FastAPI application.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    from imageprism.errors import MissingDependencyError

    raise MissingDependencyError(f'the service needs the serve extra: pip install ".[serve]" from the imageprism checkout ({exc})') from exc

from imageprism.serve._app import create_app, status_for
from imageprism.serve._catalogue import Added, Catalogue, Limits, Upload, commit

__all__ = ["Added", "Catalogue", "Limits", "Upload", "commit", "create_app", "status_for"]
