"""What routes take from the running app: its settings, pools and notification hub."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from stride.api import service
from stride.api.config import ApiSettings
from stride.api.waiting import NotificationHub


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def _database(request: Request) -> service.Database:
    db: service.Database = request.app.state.db
    return db


def _hub(request: Request) -> NotificationHub:
    hub: NotificationHub = request.app.state.hub
    return hub


Settings = Annotated[ApiSettings, Depends(_settings)]
Db = Annotated[service.Database, Depends(_database)]
Hub = Annotated[NotificationHub, Depends(_hub)]
