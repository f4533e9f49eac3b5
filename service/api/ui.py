"""The overlay page: ``GET /`` and its static files under ``/static``.

Plain HTML, CSS and JavaScript shipped as package data (no build step, no CDN: cameras often sit on
networks without internet access). The page draws each camera's label over its live video.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "router", "static_files"]

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(tags=["ui"])


@router.get("/", response_class=FileResponse, summary="The live overlay page", include_in_schema=False)
def index() -> FileResponse:
    """Serve the overlay page without a token check, on purpose.

    The page is static HTML and holds no data. Everything it shows comes from the protected endpoints
    (``/cameras``, the MJPEG streams, the websockets); the page forwards the ``?token=`` of its own URL
    to each of them, so a wrong or missing token still gets nothing but an empty page with an error.
    """
    # no-cache: revalidate on every load, so an upgraded service never runs against a stale script.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """The app to mount at ``/static`` (public, like the page itself)."""
    return StaticFiles(directory=STATIC_DIR)
