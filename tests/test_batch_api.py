"""``POST /classify/batch``: budgeted batch classification over HTTP, checked against ``anytime batch``."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.batch import classify_folder
from model.weights import DEFAULT_WEIGHTS
from service.app import create_app
from service.config import load_settings

from .reliability_helpers import UvicornThread, random_jpeg


def _files(n: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"img{i}.jpg", random_jpeg(seed=i), "image/jpeg")) for i in range(n)]


@pytest.fixture
def client(tiny_classifier):
    with TestClient(create_app(load_settings(max_batch_images=4), classifier=tiny_classifier)) as c:
        yield c


def test_a_batch_is_answered_image_by_image_in_upload_order(client: TestClient) -> None:
    # The tiny model's card has no fitted thresholds: any budget above exit 1 sends everyone out there.
    r = client.post("/classify/batch?budget_mflops=1000", files=_files(3))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["index"] for i in body["images"]] == [0, 1, 2]
    assert [i["filename"] for i in body["images"]] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert {i["exit"] for i in body["images"]} == {1} and body["p"] is None and body["cut_by_deadline"] == 0
    assert body["avg_mflops"] == pytest.approx(body["images"][0]["mflops"])
    metrics = client.get("/metrics").text
    assert 'anytime_batch_requests_total{code="200"} 1' in metrics
    assert "anytime_batch_exit_depth_count 3" in metrics


@pytest.mark.parametrize(
    ("query", "files", "status", "fragment"),
    [
        ("budget_mflops=0.5", _files(2), 422, "below exit 1's cost"),
        ("budget_mflops=0", _files(2), 422, "budget_mflops"),
        ("", _files(2), 422, "budget_mflops"),
        ("budget_mflops=50&deadline_ms=0", _files(2), 422, "deadline_ms"),
        ("budget_mflops=50", _files(5), 413, "more than 4 files"),
        ("budget_mflops=50", _files(7), 413, "more than 4 files"),  # (Starlette's own refusal said 400)
        ("budget_mflops=50", [("other", ("a.jpg", random_jpeg(seed=0), "image/jpeg"))], 400, "no 'file' parts"),
        ("budget_mflops=50", [*_files(1), ("file", ("notes.txt", b"hello", "text/plain"))], 415, "file 1 (notes.txt)"),
        ("budget_mflops=50", [("file", ("broken.jpg", b"\xff\xd8\xffjunk", "image/jpeg"))], 400, "file 0 (broken.jpg)"),
    ],
)
def test_bad_batches_get_clear_errors(client: TestClient, query, files, status, fragment) -> None:
    r = client.post(f"/classify/batch?{query}", files=files)
    assert r.status_code == status, r.text
    assert fragment in r.text
    assert client.post("/classify/batch?budget_mflops=50", files=_files(1)).status_code == 200  # still serving


def test_a_malformed_multipart_body_is_a_400_and_counted_as_one(client: TestClient) -> None:
    """Starlette refuses it with its own exception, which once bypassed the endpoints' metrics."""
    for path in ("/classify/batch?budget_mflops=50", "/classify"):
        r = client.post(path, content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
        assert r.status_code == 400 and "multipart" in r.json()["detail"], r.text
    metrics = client.get("/metrics").text
    assert 'anytime_batch_requests_total{code="400"} 1' in metrics
    assert 'anytime_classify_requests_total{code="400"} 1' in metrics


def test_a_raw_image_body_is_refused_with_the_right_media_type(client: TestClient) -> None:
    r = client.post(
        "/classify/batch?budget_mflops=50", content=random_jpeg(seed=0), headers={"content-type": "image/jpeg"}
    )
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]


def test_a_deadline_too_short_for_exit_one_gets_503(client: TestClient) -> None:
    """A batch is the engine's least urgent work, exit 1 included: images that reach no exit by the
    deadline make the whole batch a 503 rather than a partial answer."""
    r = client.post("/classify/batch?budget_mflops=50&deadline_ms=1", files=_files(2))
    assert r.status_code == 503 and "reached no exit by the 1 ms deadline" in r.json()["detail"], r.text
    assert client.post("/classify/batch?budget_mflops=50", files=_files(2)).status_code == 200


def test_too_many_waiting_batch_images_get_503(client: TestClient) -> None:
    client.app.state.runtime.engine.pending = lambda kind=None: 3  # three of four places taken
    r = client.post("/classify/batch?budget_mflops=50", files=_files(2))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights")
def test_the_service_exits_images_where_anytime_batch_does(shared_cifar10: Path, tmp_path: Path) -> None:
    """The shipped model, its fitted thresholds, 64 CIFAR-10 images from ../shared: the HTTP endpoint (engine,
    BatchNorm folded) and the offline command (``anytime batch``) pick the same exit and label for each."""
    folder = tmp_path / "images"
    folder.mkdir()
    sources = sorted(shared_cifar10.glob("*/*.jpg"))[::700][:64]
    for i, path in enumerate(sources):
        shutil.copy(path, folder / f"{i:03d}.jpg")
    offline = classify_folder(folder, budget_mflops=30)
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(folder.iterdir())]
    with TestClient(create_app(load_settings())) as c:
        r = c.post("/classify/batch?budget_mflops=30", files=files)
    assert r.status_code == 200, r.text
    online = r.json()
    assert [(i["filename"], i["label"], i["exit"]) for i in online["images"]] == [
        (i["path"], i["label"], i["exit"]) for i in offline["images"]
    ]
    assert online["p"] == offline["totals"]["p"] and online["cut_by_deadline"] == 0
    assert online["avg_mflops"] == pytest.approx(offline["totals"]["avg_mflops"], abs=1e-3)
    assert len({i["exit"] for i in online["images"]}) > 1  # easy ones left early, hard ones went deeper


def test_the_python_client_sends_a_batch_to_a_real_server(tiny_classifier, tmp_path: Path) -> None:
    """Sync and async clients against the service under uvicorn: bytes and paths, answers typed, errors typed."""
    import asyncio

    from client import AnytimeClient, AsyncAnytimeClient, BatchClassifyResponse, InvalidParameters

    path = tmp_path / "cat.png"
    cv2.imwrite(str(path), np.zeros((32, 32, 3), np.uint8))
    app = create_app(load_settings(), classifier=tiny_classifier)
    with UvicornThread(app) as server, AnytimeClient(server.base_url) as api:
        answer = api.classify_batch([random_jpeg(seed=0), path], budget_mflops=1000)
        assert isinstance(answer, BatchClassifyResponse)
        assert [i.filename for i in answer.images] == ["image0", "cat.png"]
        with pytest.raises(InvalidParameters, match="below exit 1's cost"):
            api.classify_batch([path], budget_mflops=0.5)

        async def twin() -> BatchClassifyResponse:
            async with AsyncAnytimeClient(server.base_url) as client:
                return await client.classify_batch([path], budget_mflops=1000, deadline_ms=2000)

        assert asyncio.run(twin()).deadline_ms == 2000


def test_anytime_classify_sends_a_budgeted_batch(
    tiny_classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``anytime classify A B --budget-mflops X``: one line per image in order, then the totals."""
    from service.cli import main

    paths = [tmp_path / "a.png", tmp_path / "b.jpg"]
    cv2.imwrite(str(paths[0]), np.zeros((32, 32, 3), np.uint8))
    paths[1].write_bytes(random_jpeg(seed=1))
    names = [str(p) for p in paths]
    app = create_app(load_settings(), classifier=tiny_classifier)
    with UvicornThread(app) as server:
        assert main(["classify", *names, "--budget-mflops", "1000", "--url", server.base_url]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split("\t")[0] for line in lines[:2]] == names and all("exit 1/5" in line for line in lines[:2])
        assert lines[2].startswith("2 images, ") and "budget 1000, exit 1 for all" in lines[2]
        assert main(["classify", *names, "--url", server.base_url]) == 0  # no budget: one request per image
        lines = capsys.readouterr().out.splitlines()
        assert [line.split("\t")[0] for line in lines] == names
        assert main(["classify", names[0], "--budget-mflops", "0.5", "--url", server.base_url]) == 1
        assert "below exit 1's cost" in capsys.readouterr().err
        assert main(["classify", names[0], "--budget-mflops", "30", "--exit", "2"]) == 2
