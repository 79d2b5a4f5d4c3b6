"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from xmodal.modality import Modality


class SearchRequest(BaseModel):
    """A JSON search. For an image query, POST multipart/form-data with an ``image`` file instead."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="The text query.")
    k: int | None = Field(default=None, ge=1, description="How many results (default: XMODAL_DEFAULT_K).")
    modalities: list[Modality] | None = Field(default=None, description="Keep only these modalities.")
    space: str | None = Field(default=None, description="Search only this space.")


class SearchHit(BaseModel):
    id: int
    score: float
    modality: str | None
    path: str
    media_type: str | None
    caption: str | None
    text_excerpt: str | None
    metadata: dict[str, Any]
    width: int | None
    height: int | None
    space_scores: dict[str, float]
    match: tuple[int, int] | None = Field(description="Character span of the best-matching text chunk.")
    content_url: str
    thumbnail_url: str | None
    time_span: tuple[float, float] | None = Field(
        default=None, description="Seconds into an audio item where the best match lies (seek a player there)."
    )
    transcript: str | None = None
    duration: float | None = None


class SearchResponseBody(BaseModel):
    results: list[SearchHit]
    spaces_searched: list[str]
    spaces_unavailable: dict[str, str]


class ItemBody(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    path: str
    source: str
    modality: str | None
    media_type: str | None
    content_hash: str | None
    size: int
    width: int | None
    height: int | None
    duration: float | None
    caption: str | None
    text_excerpt: str | None
    transcript: str | None
    transcript_segments: list[dict[str, Any]] | None
    metadata: dict[str, Any] = Field(validation_alias="user_metadata")
    status: str
    error: str | None
    created_at: datetime
    updated_at: datetime


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
