"""Python client for the anytime service; imports neither ``model`` nor ``service``.

The names below load on first use (PEP 562), so ``import client.cli`` -- and with it ``anytime --help``
-- does not pay for httpx, websockets and pydantic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.errors import (
        AnytimeError,
        BadRequest,
        CameraNotFound,
        ConnectionLost,
        HTTPStatusError,
        InvalidParameters,
        NotFound,
        Overloaded,
        PayloadTooLarge,
        ServerError,
        Unauthorized,
        UnsupportedMediaType,
    )
    from client.http import AnytimeClient, AsyncAnytimeClient
    from client.messages import (
        BatchClassifyResponse,
        BatchImageResult,
        CameraInfo,
        CameraPrediction,
        ClassifyResponse,
        TopClass,
    )
    from client.ws import Subscription, SyncSubscription, subscribe, subscribe_sync

__all__ = [
    "AnytimeClient",
    "AnytimeError",
    "AsyncAnytimeClient",
    "BadRequest",
    "BatchClassifyResponse",
    "BatchImageResult",
    "CameraInfo",
    "CameraNotFound",
    "CameraPrediction",
    "ClassifyResponse",
    "ConnectionLost",
    "HTTPStatusError",
    "InvalidParameters",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "ServerError",
    "Subscription",
    "SyncSubscription",
    "TopClass",
    "Unauthorized",
    "UnsupportedMediaType",
    "subscribe",
    "subscribe_sync",
]

_MODULES = ("client.http", "client.ws", "client.messages", "client.errors")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            value = getattr(import_module(module), name, None)
            if value is not None:
                globals()[name] = value
                return value
    raise AttributeError(f"module 'client' has no attribute {name!r}")
