"""The search page at ``/``: static HTML, CSS and JavaScript served from the package (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["web"])


@router.get("/", response_class=FileResponse, include_in_schema=False)
def page() -> FileResponse:
    """The search page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")
