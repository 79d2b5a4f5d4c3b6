"""Helpers every benchmark uses: the machine's description and writing results."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_result(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``payload`` with the machine's description as JSON; returns the file."""
    target = path or RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2) + "\n")
    return target


def recall_at(ranks: list[int | None], k: int) -> float:
    """Share of queries whose relevant item is in the top ``k`` (``None``: not found)."""
    return sum(1 for rank in ranks if rank is not None and rank <= k) / max(1, len(ranks))
