"""FastAPI dependencies: settings, the task backend and the template catalog (set up in create_app).

They are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread pool, three
thread hops per request for what is an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from maie.api.backends import TaskBackend
from maie.settings import Settings
from maie.templates import TemplateCatalog


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_backend(request: Request) -> TaskBackend:
    backend: TaskBackend = request.app.state.backend
    return backend


async def get_catalog(settings: Annotated[Settings, Depends(get_settings)]) -> TemplateCatalog:
    return TemplateCatalog(settings.templates_dir)


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[TaskBackend, Depends(get_backend)]
CatalogDep = Annotated[TemplateCatalog, Depends(get_catalog)]
