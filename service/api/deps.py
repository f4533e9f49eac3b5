"""Dependencies shared by the routers: the runtime, the settings and the access token check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, status

from service.config import Settings
from service.runtime import Runtime

__all__ = ["RuntimeDep", "SettingsDep", "check_token", "require_token"]


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def check_token(settings: Settings, authorization: str | None, query_token: str | None) -> bool:
    """True when no token is configured, or the request carries it (header or ``token`` query)."""
    if settings.token is None:
        return True
    expected = settings.token.get_secret_value()
    offered = None
    if authorization and authorization.lower().startswith("bearer "):
        offered = authorization[7:].strip()
    elif query_token:
        offered = query_token
    return offered is not None and secrets.compare_digest(offered.encode(), expected.encode())


def require_token(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if not check_token(settings, request.headers.get("authorization"), request.query_params.get("token")):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong access token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )


def websocket_token_ok(websocket: WebSocket) -> bool:
    settings: Settings = websocket.app.state.settings
    return check_token(settings, websocket.headers.get("authorization"), websocket.query_params.get("token"))
