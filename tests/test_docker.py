"""The container recipe, checked without a Docker daemon.

CI machines rarely can build images, so: the compose file must parse (with docker-compose when it is
installed, and always as YAML), the Dockerfile must keep its essentials (non-root, health check, a
dependency layer before the source), and the image's CMD, run from the checkout, must start, answer
/health and /ready, and stop promptly on SIGTERM as ``docker stop`` would make it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "compose.yaml"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def _index(steps: list[tuple[str, str]], keyword: str, needle: str) -> int:
    for i, (kw, args) in enumerate(steps):
        if kw == keyword and needle in args:
            return i
    raise AssertionError(f"no {keyword} with {needle!r} in the Dockerfile")


def image_cmd() -> list[str]:
    (cmd,) = [args for kw, args in instructions() if kw == "CMD"]
    return list(json.loads(cmd))  # exec form: signals reach the process, not a shell


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, args in instructions():
        if kw == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_compose_file_parses() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    svc = compose["services"]["anytime"]
    assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert "8000:8000" in svc["ports"]
    assert svc["stop_grace_period"] == "10s" and svc["restart"] == "unless-stopped" and svc["shm_size"]
    assert "/health" in " ".join(svc["healthcheck"]["test"])
    cameras = json.loads(svc["environment"]["ANYTIME_CAMERAS"])
    assert cameras == [{"id": "synthetic", "source": "synthetic"}]


def test_compose_config_with_docker_compose() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerfile_essentials() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [args for kw, args in steps if kw == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the service must not run as root"
    assert any(kw == "HEALTHCHECK" and "/health" in args for kw, args in steps)
    assert ("EXPOSE", "8000") in steps
    assert image_cmd()[:2] == ["anytime", "serve"]

    copy_deps = _index(steps, "COPY", "pyproject.toml")
    torch = _index(steps, "RUN", "download.pytorch.org/whl/cpu")
    copy_src = min(_index(steps, "COPY", "model/"), _index(steps, "COPY", "service/"), _index(steps, "COPY", "client/"))
    install = _index(steps, "RUN", "--no-deps .")
    assert copy_deps < torch < copy_src < install, "dependencies must be installed before the source is copied"
    assert _index(steps, "USER", "") > install


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert {".venv", ".git", "runs/"} <= set(ignored)
    assert not any(p.startswith(("model", "service", "client")) for p in ignored)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _with_option(cmd: list[str], option: str, value: str) -> list[str]:
    cmd = list(cmd)
    if option in cmd:
        cmd[cmd.index(option) + 1] = value
    else:
        cmd += [option, value]
    return cmd


@pytest.mark.slow
def test_image_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    cmd = _with_option(_with_option(image_cmd(), "--port", str(port)), "--host", "127.0.0.1")  # not 0.0.0.0 in a test
    exe = Path(sys.executable).parent / cmd[0]
    assert exe.exists(), f"{exe} missing: is the project installed in this environment?"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYTIME_")}  # the image's settings, not ours
    env.update(image_env())
    secret = "s3cret-never-logged"
    env.update(ANYTIME_PORT=str(port), ANYTIME_TORCH_THREADS="1", OMP_NUM_THREADS="1", ANYTIME_TOKEN=secret)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), *cmd[1:]], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _status(f"{base}/health") == 200, proc, log, "/health", timeout=60)
        _wait(lambda: _status(f"{base}/ready?token={secret}") == 200, proc, log, "/ready", timeout=120)
        # The overlay's way of sending the token, and an encoded name the service also accepts.
        assert _status(f"{base}/cameras?token={secret}") == 200
        assert _status(f"{base}/cameras?%74oken={secret}") == 200
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)  # compose's stop_grace_period; docker kills after that
        # uvicorn drains, runs the lifespan shutdown, then re-raises SIGTERM so the parent sees why it ended.
        assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM:\n{log.read_text()[-3000:]}"
        text = log.read_text()
        assert "Application shutdown complete" in text, "the lifespan shutdown did not run"
        assert "GET /cameras?token=***" in text and secret not in text, "the access token reached the log"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the service exited ({proc.returncode}) before {what} answered:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer 200 within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
