"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter

from xmodal.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up and answering."""
    return Health(status="ok")
