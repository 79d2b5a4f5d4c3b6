"""GET /overview: what the home holds, for the search page's landing view (and for anyone curious)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from xmodal.api.deps import EngineDep
from xmodal.api.schemas import OverviewBody, RunOverview, SpaceOverview
from xmodal.engine import SpaceStats

router = APIRouter(tags=["overview"])
EXAMPLES = 6


@router.get("/overview", response_model=OverviewBody)
def overview(engine: EngineDep) -> OverviewBody:
    """Items per modality, each space with its model and whether it can answer, example queries taken from the
    indexed captions, and the last index run. Loads no model."""
    stats = engine.stats()
    spaces = []
    for space, info in zip(engine.spaces, stats.spaces, strict=True):
        reachable = space.encoder.weights_reachable()
        spaces.append(
            SpaceOverview(
                name=info.name,
                encoder=info.encoder_spec,
                vectors=info.vectors,
                modalities=sorted(m.value for m in space.encoder.modalities),
                available=reachable,
                reason=None if reachable else "its model's weights are not here: see `xmodal models list`",
                version=info.version,
                switch=_switch(info),
                previous=next((v.encoder_spec for v in info.versions if v.role == "previous"), None),
            )
        )
    run = engine.catalog.latest_run()
    last_run = None
    if run is not None:
        counts = run.stats or {}
        last_run = RunOverview(
            started_at=run.started_at,
            finished_at=run.finished_at,
            status=run.status,
            roots=list(run.roots),
            **{key: int(counts.get(key, 0)) for key in ("scanned", "indexed", "updated", "failed", "still_failing")},
        )
    return OverviewBody(
        items_by_modality=stats.items_by_modality,
        items_by_status=stats.items_by_status,
        spaces=spaces,
        examples=engine.catalog.example_captions(EXAMPLES),
        last_run=last_run,
    )


def _switch(info: SpaceStats) -> dict[str, Any] | None:
    """The switch under way in a space: the new model, its version and how far it has come."""
    shadow = next((version for version in info.versions if version.role == "shadow"), None)
    if shadow is None:
        return None
    return {"encoder": shadow.encoder_spec, "version": shadow.number, "progress": info.switch_progress}
