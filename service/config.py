"""Service settings: defaults, then a YAML file, then ``ANYTIME_*`` environment variables, then CLI flags.

Everything is validated up front with ``extra="forbid"`` so a typo in a config key fails at startup with
the key named, instead of being silently ignored while the service runs with a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _SourceError

__all__ = ["CLIENT_ENVIRONMENT", "URL_SCHEMES", "CameraConfig", "Settings", "SettingsError", "load_settings"]

# What OpenCV's FFmpeg backend is asked to open; anything else with "://" is almost surely a typo.
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
_SYNTHETIC = re.compile(r"synthetic(?::(\d+)x(\d+))?")
_MAX_WIDTH, _MAX_HEIGHT = 7680, 4320

# The YAML file of the load_settings() call in progress. pydantic-settings builds its sources in a
# classmethod, so the per-call path travels in a context variable rather than in class state.
_yaml_file: ContextVar[Path | None] = ContextVar("anytime_yaml_file", default=None)


class SettingsError(ValueError):
    """A configuration the service cannot start with; the message names every offending field."""


class CameraConfig(BaseModel):
    """One camera to read frames from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="unique name, used in URLs (/ws/cameras/{id}) and metric labels",
    )
    source: str = Field(
        min_length=1,
        description='"synthetic" (or "synthetic:WxH"), a device index like "0", a video file path, '
        "or an rtsp://, http:// or https:// URL",
    )
    fps: float | None = Field(default=None, gt=0, description="publish at most this many frames per second")
    loop: bool = Field(default=True, description="video files: start again at the end (else the camera stops)")
    width: int = Field(default=640, gt=0, le=_MAX_WIDTH, description="synthetic source only")
    height: int = Field(default=360, gt=0, le=_MAX_HEIGHT, description="synthetic source only")

    @field_validator("source")
    @classmethod
    def _known_kind_of_source(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty or blank")
        if value == "synthetic" or value.startswith("synthetic:"):
            match = _SYNTHETIC.fullmatch(value)
            if not match:
                raise ValueError(f'{value!r}: expected "synthetic" or "synthetic:WIDTHxHEIGHT"')
            if match.group(1) and not (
                0 < int(match.group(1)) <= _MAX_WIDTH and 0 < int(match.group(2)) <= _MAX_HEIGHT
            ):
                raise ValueError(f"{value!r}: size must be between 1x1 and {_MAX_WIDTH}x{_MAX_HEIGHT}")
        scheme, sep, _ = value.partition("://")
        if sep and scheme.lower() not in URL_SCHEMES:
            raise ValueError(f"unsupported URL scheme {scheme!r}; use one of {', '.join(URL_SCHEMES)}")
        return value


class Settings(BaseSettings):
    """Everything the service reads at startup. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix="ANYTIME_", env_nested_delimiter="__", extra="forbid")

    weights: str = Field(default="default", description='a .safetensors file, or "default" for the shipped model')
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description='"auto" picks cuda when available')
    tick_hz: float = Field(default=10.0, ge=0.1, le=100, description="publishing rate; the deadline is one tick")
    cameras: list[CameraConfig] = Field(
        default_factory=lambda: [CameraConfig(id="synthetic", source="synthetic")],
        description="the cameras to read; by default one synthetic test pattern so the service runs anywhere",
    )
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="POST /classify body cap (413)")
    max_image_pixels: int = Field(default=40_000_000, gt=0, description="decompression-bomb guard for uploads")
    max_pending_classify: int = Field(default=32, ge=1, description="uploads waiting for the engine before 503")
    max_batch_images: int = Field(
        default=64, ge=1, description="POST /classify/batch: images per request, and waiting in all, before 413/503"
    )
    max_subscribers: int = Field(
        default=256, ge=1, description="websocket subscriptions at once, all cameras; more are closed with 1013"
    )
    token: SecretStr | None = Field(default=None, description="bearer token required by the API; None: no auth")
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        pattern=r"^\S+$",
        description="listen address; loopback unless asked otherwise (an empty one would bind every interface)",
    )
    port: int = Field(default=8000, ge=1, le=65535)
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="torch intra-op threads; 0: one less than the usable cores, at most 4 (leaves a core for I/O)",
    )
    mjpeg_fps: float = Field(default=10.0, gt=0, le=30, description="rate of the annotated MJPEG video stream")
    mjpeg_quality: int = Field(default=70, ge=1, le=100, description="JPEG quality of that stream")

    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for camera in cameras:
            if camera.id in seen:
                raise ValueError(f"duplicate camera id {camera.id!r}")
            seen.add(camera.id)
        return cameras

    @field_validator("token")
    @classmethod
    def _no_empty_token(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty token would look like "auth on" in the config yet accept an empty bearer; spaces
        # around it (a YAML block scalar's newline) could never match a header, which HTTP strips.
        if token is None:
            return None
        value = token.get_secret_value().strip()
        if not value:
            raise ValueError("must not be empty; leave it unset to disable authentication")
        return SecretStr(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest priority first: CLI overrides (init kwargs), environment, then the YAML file if any."""
        yaml_file = _yaml_file.get()
        if yaml_file is None:
            return init_settings, env_settings
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults < ``config_file`` (YAML) < environment < ``overrides``.

    ``overrides`` are CLI flags; a ``None`` value means "flag not given" and is skipped, so callers
    can pass ``args.port`` straight through. Raises :class:`SettingsError` naming each bad field.
    """
    path = None if config_file is None else Path(config_file)
    if path is not None:
        _check_yaml_file(path)
    given = {key: value for key, value in overrides.items() if value is not None}
    _check_environment(os.environ, port_given="port" in given)
    token = _yaml_file.set(path)
    try:
        return Settings(**given)
    except ValidationError as exc:
        origin = f" (config file {path})" if path is not None else ""
        raise SettingsError(f"invalid settings{origin}:\n{_describe(exc)}") from exc
    except _SourceError as exc:
        # Unparseable JSON in an environment variable: pydantic-settings names the field.
        raise SettingsError(f"cannot read settings: {exc}") from exc
    finally:
        _yaml_file.reset(token)


# ANYTIME_* variables that belong to the client (``anytime classify/watch``), not to the service.
CLIENT_ENVIRONMENT = ("ANYTIME_URL",)
# Kubernetes gives every container variables for each Service of its namespace ("service links"): a
# Service named "anytime" brings ANYTIME_SERVICE_HOST, ANYTIME_PORT_8000_TCP_ADDR and the like, which
# are not settings, and ANYTIME_PORT=tcp://10.0.0.7:8000, which clashes with one (see below).
_SERVICE_LINK = re.compile(r"ANYTIME_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)")


def _check_environment(environ: Mapping[str, str], port_given: bool = False) -> None:
    """Refuse ``ANYTIME_*`` variables that name no setting, as the YAML file refuses unknown keys.

    pydantic-settings ignores them, so a typo such as ``ANYTIME_TOKNE`` would start the service with
    no authentication at all, and ``ANYTIME_CAMERA`` with only the synthetic camera. Kubernetes'
    service-link variables pass; its ``ANYTIME_PORT=tcp://...`` gets a message that says what it is,
    unless a ``--port`` flag (``port_given``), which wins over the environment, makes it irrelevant."""
    port = next((value for name, value in environ.items() if name.upper() == "ANYTIME_PORT"), "")
    if not port_given and re.match(r"(tcp|udp|sctp)://", port, re.IGNORECASE):
        raise SettingsError(
            f"ANYTIME_PORT is {port!r}: a Kubernetes service link for a Service named 'anytime', not a "
            "port number. Pass --port, set ANYTIME_PORT explicitly in the container's env (it takes "
            "precedence), set enableServiceLinks: false in the pod spec, or give the Service another name"
        )
    known = {name.upper() for name in Settings.model_fields}
    unknown = sorted(
        name
        for name in environ
        if name.upper().startswith("ANYTIME_")
        and name.upper() not in CLIENT_ENVIRONMENT
        and not _SERVICE_LINK.fullmatch(name.upper())
        and name.upper().removeprefix("ANYTIME_").split("__")[0] not in known
    )
    if unknown:
        settings = ", ".join(f"ANYTIME_{name.upper()}" for name in Settings.model_fields)
        raise SettingsError(f"unknown environment variable(s) {', '.join(unknown)}; the settings are: {settings}")


def _check_yaml_file(path: Path) -> None:
    """Fail with a clear message on a missing file, bad YAML, or a top level that is not a mapping.

    pydantic-settings would silently skip a missing file and raise a bare TypeError on a YAML list.
    """
    if not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from exc
    if content is not None and not isinstance(content, dict):
        raise SettingsError(f"config file {path}: expected a mapping of settings at the top level")


def _describe(exc: ValidationError) -> str:
    """One ``field.path: message`` line per error, e.g. ``cameras.0.fps: Input should be greater than 0``."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(settings)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)
