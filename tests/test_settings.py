"""Settings: defaults < YAML file < ANYTIME_* environment < CLI overrides, and loud refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.config import CameraConfig, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ANYTIME_* variable from the developer's shell may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("ANYTIME_"):
            monkeypatch.delenv(name)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "anytime.yaml"
    path.write_text(text, encoding="utf-8")
    return path


TWO_CAMERAS = """\
tick_hz: 4
port: 9001
cameras:
  - id: door
    source: rtsp://user:pw@10.0.0.5/stream
    fps: 5
  - id: demo_file
    source: /videos/cat.mp4
    loop: false
"""


def test_defaults() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.weights == "default"
    assert settings.device == "auto"
    assert settings.tick_hz == 10.0
    assert settings.cameras == [CameraConfig(id="synthetic", source="synthetic")]
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.token is None
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert (settings.mjpeg_fps, settings.mjpeg_quality) == (10.0, 70)


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYTIME_TICK_HZ", "5")
    monkeypatch.setenv("ANYTIME_TOKEN", "s3cret")
    cameras = [{"id": "a", "source": "synthetic:320x180"}, {"id": "b", "source": "0", "fps": 15}]
    monkeypatch.setenv("ANYTIME_CAMERAS", json.dumps(cameras))
    settings = load_settings()
    assert settings.tick_hz == 5.0
    assert settings.token is not None and settings.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert [c.id for c in settings.cameras] == ["a", "b"]
    assert settings.cameras[1].fps == 15.0


def test_yaml_file_with_two_cameras(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path, TWO_CAMERAS))
    assert settings.tick_hz == 4.0 and settings.port == 9001
    door, demo = settings.cameras
    assert (door.id, door.fps, door.loop) == ("door", 5.0, True)
    assert (demo.id, demo.source, demo.loop) == ("demo_file", "/videos/cat.mp4", False)


def test_priority_override_then_env_then_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "tick_hz: 4\nport: 9001\nhost: 0.0.0.0\n")
    monkeypatch.setenv("ANYTIME_PORT", "9002")
    monkeypatch.setenv("ANYTIME_TICK_HZ", "6")
    settings = load_settings(path, port=9003, host=None)  # None: the CLI flag was not given
    assert settings.port == 9003  # override beats env
    assert settings.tick_hz == 6.0  # env beats yaml
    assert settings.host == "0.0.0.0"  # yaml beats default
    assert settings.device == "auto"  # default


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("tick_hz: 5\ntickhz: 5\n", "tickhz"),
        ("cameras:\n  - id: a\n    source: synthetic\n    fsp: 5\n", "cameras.0.fsp"),
    ],
)
def test_unknown_keys_are_refused(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(SettingsError, match=rf"{where}: Extra inputs are not permitted"):
        load_settings(write_yaml(tmp_path, text))


def test_unknown_override_is_refused() -> None:
    with pytest.raises(SettingsError, match="bogus: Extra inputs are not permitted"):
        load_settings(bogus=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tick_hz: 0\n", "tick_hz: Input should be greater than or equal to 0.1"),
        ("tick_hz: 1e-300\n", "tick_hz: Input should be greater than or equal to 0.1"),
        ("host: ''\n", "host: String should have at least 1 character"),
        ("host: ' '\n", "host: String should match pattern"),
        ("cameras:\n  - {id: a, source: '   '}\n", "cameras.0.source: .*must not be empty or blank"),
        ("port: 70000\n", "port: Input should be less than or equal to 65535"),
        ("device: tpu\n", "device: Input should be 'auto', 'cpu' or 'cuda'"),
        ("cameras:\n  - {id: a, source: synthetic, fps: 0}\n", "cameras.0.fps: Input should be greater than 0"),
        ("cameras:\n  - {id: a, source: synthetic}\n  - {id: a, source: '0'}\n", "cameras: .*duplicate camera id 'a'"),
        ("cameras:\n  - {id: 'front door', source: '0'}\n", "cameras.0.id: String should match pattern"),
        ("cameras:\n  - {id: a, source: 'ftp://x/y'}\n", "cameras.0.source: .*unsupported URL scheme 'ftp'"),
        ("cameras:\n  - {id: a, source: 'synthetic:big'}\n", "cameras.0.source: .*synthetic:WIDTHxHEIGHT"),
        ("token: ''\n", "token: .*must not be empty"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(write_yaml(tmp_path, text))


def test_bad_environment_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYTIME_CAMERAS", "[{not json")
    with pytest.raises(SettingsError, match="cameras"):
        load_settings()
    monkeypatch.setenv("ANYTIME_CAMERAS", "[]")
    monkeypatch.setenv("ANYTIME_MJPEG_QUALITY", "0")
    with pytest.raises(SettingsError, match="mjpeg_quality: Input should be greater than or equal to 1"):
        load_settings()


def test_an_unknown_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in ANYTIME_TOKEN must not start a service without authentication."""
    monkeypatch.setenv("ANYTIME_TOKNE", "s3cret")
    with pytest.raises(SettingsError, match=r"unknown environment variable.*ANYTIME_TOKNE.*ANYTIME_TOKEN"):
        load_settings()
    monkeypatch.delenv("ANYTIME_TOKNE")
    monkeypatch.setenv("anytime_token", "s3cret")  # pydantic-settings matches names case-insensitively
    monkeypatch.setenv("ANYTIME_URL", "http://elsewhere:8000")  # the client's, not the service's
    assert load_settings().token.get_secret_value() == "s3cret"


def test_kubernetes_service_links_pass_and_their_port_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Service named "anytime" gives its pods these variables; they are not typos."""
    links = {
        "ANYTIME_SERVICE_HOST": "10.0.0.7",
        "ANYTIME_SERVICE_PORT": "8000",
        "ANYTIME_SERVICE_PORT_HTTP": "8000",
        "ANYTIME_PORT_8000_TCP": "tcp://10.0.0.7:8000",
        "ANYTIME_PORT_8000_TCP_PROTO": "tcp",
        "ANYTIME_PORT_8000_TCP_PORT": "8000",
        "ANYTIME_PORT_8000_TCP_ADDR": "10.0.0.7",
    }
    for name, value in links.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANYTIME_PORT", "tcp://10.0.0.7:8000")
    with pytest.raises(SettingsError, match=r"ANYTIME_PORT is 'tcp://10.0.0.7:8000': a Kubernetes service link"):
        load_settings()
    # The Dockerfile's command passes --port, which wins over the environment: the link is harmless then.
    assert load_settings(port=8000).port == 8000
    monkeypatch.setenv("ANYTIME_PORT", "9000")  # set in the container's env, it wins over the link
    assert load_settings().port == 9000
    monkeypatch.setenv("ANYTIME_SERVICE_HOSTS", "x")  # near a link's name is still a typo
    with pytest.raises(SettingsError, match=r"unknown environment variable.*ANYTIME_SERVICE_HOSTS"):
        load_settings()


def test_a_token_is_stripped_so_a_header_can_match_it(tmp_path: Path) -> None:
    """HTTP strips the header value, and a YAML block scalar ends in a newline."""
    settings = load_settings(write_yaml(tmp_path, "token: |\n  s3cret\n"))
    assert settings.token.get_secret_value() == "s3cret"


def test_missing_or_malformed_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"config file not found: .*nope\.yaml"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(write_yaml(tmp_path, "tick_hz: [\n"))
    with pytest.raises(SettingsError, match="expected a mapping"):
        load_settings(write_yaml(tmp_path, "- tick_hz\n"))


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write_yaml(tmp_path, "")).tick_hz == 10.0


def test_settings_error_is_a_value_error() -> None:
    # The CLI reports ValueError as a clean one-line error instead of a traceback.
    assert issubclass(SettingsError, ValueError)


def test_camera_config_is_frozen() -> None:
    camera = CameraConfig(id="a", source="synthetic")
    with pytest.raises(ValueError):
        camera.fps = 3  # type: ignore[misc]
