"""Dependencies the routes take: the engine and the settings live on ``app.state``, built in ``create_app``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from xmodal.config import Settings
from xmodal.engine import Engine


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> Settings:
    return request.app.state.engine.settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
