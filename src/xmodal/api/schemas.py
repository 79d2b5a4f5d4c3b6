"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from xmodal.config import FusionMethod
from xmodal.modality import Modality


class PartBody(BaseModel):
    """One weighted part of a query: exactly one of text, image, audio, item or vector."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    image: str | None = Field(default=None, description="Base64 of an encoded image.")
    audio: str | None = Field(default=None, description="Base64 of an encoded audio clip.")
    item: int | None = Field(default=None, ge=0, description="An indexed item: more like this.")
    vector: list[float] | None = Field(default=None, description="A raw vector of `space`.")
    space: str | None = Field(default=None, description="The space of `vector`.")
    weight: float = Field(default=1.0, description="Negative: push matching items down.")

    @model_validator(mode="after")
    def _exactly_one(self) -> PartBody:
        given = [name for name in ("text", "image", "audio", "item", "vector") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a part needs exactly one of text, image, audio, item, vector (got {given or 'none'})")
        if self.vector is not None and self.space is None:
            raise ValueError("a vector part needs its space")
        return self


class SearchRequest(BaseModel):
    """A JSON search. ``text`` is a shorthand for one text part of weight 1; ``not`` adds texts of weight -1."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str | None = Field(default=None, min_length=1, description="The text query.")
    parts: list[PartBody] = Field(default_factory=list, max_length=16)
    not_: list[str] = Field(default_factory=list, alias="not", max_length=16, description="Texts to push down.")
    k: int | None = Field(default=None, ge=1, description="How many results (default: XMODAL_DEFAULT_K).")
    modalities: list[Modality] | None = Field(default=None, description="Keep only these modalities.")
    where: dict[str, str] | None = Field(default=None, description="Filters: item fields or metadata keys.")
    space: str | None = Field(default=None, description="Search only this space.")
    cursor: str | None = Field(default=None, description="The next_cursor of the previous page.")
    min_score: float | None = Field(
        default=None, allow_inf_nan=False, description="Drop results whose fused score is lower."
    )
    explain: bool = Field(default=False, description="Return each space's contribution per result.")
    fusion: FusionMethod | None = None
    diversity: float | None = Field(default=None, ge=0, le=1)
    collapse_duplicates: bool | None = None


class ContributionBody(BaseModel):
    space: str
    part: str
    raw: float
    calibrated: float
    weight: float
    contribution: float
    origin: str | None = Field(default=None, description="`ocr` when the match was in the words read from the image.")


class OcrMatchBody(BaseModel):
    span: tuple[int, int] = Field(description="Character span of `ocr_text` that matched.")
    text: str
    boxes: list[list[tuple[float, float]]] = Field(
        description="Polygon of each matched line: corners as fractions of the image's width and height."
    )


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
    duplicates: list[int] = Field(default_factory=list, description="Near-duplicates folded into this result.")
    explanation: list[ContributionBody] | None = None
    ocr_text: str | None = Field(default=None, description="The words read from the image (OCR).")
    ocr: OcrMatchBody | None = Field(default=None, description="Where the query matched the words read (OCR).")


class SearchResponseBody(BaseModel):
    results: list[SearchHit]
    spaces_searched: list[str]
    spaces_unavailable: dict[str, str]
    parts_ignored: dict[str, str] = Field(
        default_factory=dict,
        description="Query parts no space could use (e.g. an image while CLIP is unavailable), and why.",
    )
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")


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
    ocr_text: str | None = None
    ocr_lines: list[dict[str, Any]] | None = Field(
        default=None, description="Lines read from the image: text, polygon, confidence, order, start, end."
    )
    metadata: dict[str, Any] = Field(validation_alias="user_metadata")
    status: str
    error: str | None
    created_at: datetime
    updated_at: datetime


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    spaces: dict[str, str] = Field(description="Per space: ready, empty, or why it cannot answer.")
    versions: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="Only while a space has more than one version: per such space, its versions (current, shadow "
        "being built, previous) and the share of items the shadow covers.",
    )


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1, max_length=64, description="Server-side files or folders.")
    prune: bool = Field(default=False, description="Forget items under the paths whose files are gone.")


class AdminAccepted(BaseModel):
    status: str
    detail: str


class KnnRequest(BaseModel):
    """clip-retrieval 2.45.0's `/knn-service` body, every field its ClipClient and front end send."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    image: str | None = Field(default=None, description="Base64 of an encoded image.")
    image_url: str | None = None
    embedding_input: list[float] | None = None
    modality: str | None = Field(default="image", description="Kind of result: image or text.")
    num_images: int | None = Field(default=40, ge=1)
    num_result_ids: int | None = Field(default=None, ge=1)
    indice_name: str | None = None
    deduplicate: bool | None = None
    use_safety_model: bool | None = None
    use_violence_detector: bool | None = None
    aesthetic_score: int | str | None = None
    aesthetic_weight: float | str | None = None
    use_mclip: bool | None = None


class MetadataRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ids: list[int] = Field(max_length=10_000)
    indice_name: str | None = None


class SpaceOverview(BaseModel):
    name: str
    encoder: str
    vectors: int
    modalities: list[str]
    available: bool = Field(description="Whether the space's model weights are at hand (it can answer queries).")
    reason: str | None = None
    version: int = Field(default=1, description="The version answering queries.")
    switch: dict[str, Any] | None = Field(
        default=None, description="While the space switches model: the new model, and the share of items it covers."
    )
    previous: str | None = Field(default=None, description="The model of the previous version, kept for rollback.")


class RunOverview(BaseModel):
    started_at: datetime
    finished_at: datetime | None
    status: str
    roots: list[str]
    scanned: int
    indexed: int
    updated: int
    failed: int
    still_failing: int


class OverviewBody(BaseModel):
    items_by_modality: dict[str, int]
    items_by_status: dict[str, int]
    spaces: list[SpaceOverview]
    examples: list[str] = Field(description="Example queries: captions of indexed items.")
    last_run: RunOverview | None


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str | None = Field(default=None, max_length=1024, description="Encoder spec of the new model.")
    promote: bool = Field(default=False, description="Make the new version current now, however far it has come.")
    cancel: bool = Field(default=False, description="Abandon the new version being built.")
    forget_old: bool = Field(default=False, description="Delete the previous version (no rollback after).")


class SpaceVersions(BaseModel):
    space: str
    versions: list[dict[str, Any]] = Field(description="number, role (current, shadow, previous), model, vectors.")
    progress: float | None = Field(description="Share of the items the new version covers, while switching.")
    covered: int
    total: int
    detail: str = ""
