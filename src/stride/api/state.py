"""What routes take from the running app: its settings, pools and notification hub.

The dependencies are async on purpose: FastAPI runs a plain `def` dependency in a
worker thread. The hottest routes skip them and call the `*_of` accessors: each
dependency FastAPI resolves costs tens of microseconds per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from stride.api import service
from stride.api.config import ApiSettings
from stride.api.waiting import NotificationHub


def settings_of(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def database_of(request: Request) -> service.Database:
    db: service.Database = request.app.state.db
    return db


def hub_of(request: Request) -> NotificationHub:
    hub: NotificationHub = request.app.state.hub
    return hub


async def _settings(request: Request) -> ApiSettings:
    return settings_of(request)


async def _database(request: Request) -> service.Database:
    return database_of(request)


async def _hub(request: Request) -> NotificationHub:
    return hub_of(request)


Settings = Annotated[ApiSettings, Depends(_settings)]
Db = Annotated[service.Database, Depends(_database)]
Hub = Annotated[NotificationHub, Depends(_hub)]
