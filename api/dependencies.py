"""FastAPI dependencies: settings, the task backend and the template catalog (set up in create_app)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from maie.api.backends import TaskBackend
from maie.settings import Settings
from maie.templates import TemplateCatalog


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_backend(request: Request) -> TaskBackend:
    backend: TaskBackend = request.app.state.backend
    return backend


def get_catalog(settings: Annotated[Settings, Depends(get_settings)]) -> TemplateCatalog:
    return TemplateCatalog(settings.templates_dir)


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[TaskBackend, Depends(get_backend)]
CatalogDep = Annotated[TemplateCatalog, Depends(get_catalog)]
