"""Frame sources: the synthetic pattern, OpenCV files/devices/streams, and credential redaction."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.config import CameraConfig
from service.redact import redact_url
from service.sources import FrameSource, OpenCVSource, SourceError, SyntheticSource, make_source

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"
CLIP_FRAMES = 4


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A 4-frame MJPG clip at 200 fps (5 ms pacing), each frame a distinct grey level."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 200.0, (64, 48))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG"
    for i in range(CLIP_FRAMES):
        writer.write(np.full((48, 64, 3), 40 + 50 * i, np.uint8))
    writer.release()
    return path


def grey_levels(frames: list[np.ndarray]) -> list[int]:
    return [round(float(frame.mean()) / 10) * 10 for frame in frames]


def test_synthetic_frames_have_shape_and_move() -> None:
    source = SyntheticSource(160, 90, fps=100)
    assert isinstance(source, FrameSource)
    source.open()
    first, second = source.read(), source.read()
    source.close()
    assert first.shape == (90, 160, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)


def test_synthetic_is_paced_like_a_camera() -> None:
    source = SyntheticSource(64, 48, fps=50)
    source.open()
    start = time.monotonic()
    for _ in range(6):
        source.read()
    assert time.monotonic() - start >= 5 / 50 * 0.9  # the first frame is immediate, then one per 20 ms


def test_synthetic_refuses_reads_when_closed() -> None:
    with pytest.raises(SourceError, match="not open"):
        SyntheticSource(64, 48).read()


def test_make_source_picks_by_source_string() -> None:
    sized = make_source(CameraConfig(id="a", source="synthetic:32x24", fps=30))
    assert isinstance(sized, SyntheticSource) and (sized.width, sized.height, sized.native_fps) == (32, 24, 30)
    default = make_source(CameraConfig(id="b", source="synthetic", width=80, height=60))
    assert isinstance(default, SyntheticSource) and (default.width, default.height) == (80, 60)
    assert isinstance(make_source(CameraConfig(id="c", source="0")), OpenCVSource)
    assert isinstance(make_source(CameraConfig(id="d", source="synthetic.mp4")), OpenCVSource)


def test_real_video_decodes() -> None:
    video = VIDEOS / "cat.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is not present")
    source = OpenCVSource(str(video))
    source.open()
    try:
        frame = source.read()
        assert frame is not None and frame.dtype == np.uint8
        assert frame.shape[2] == 3 and 320 <= frame.shape[1] <= 1920 and frame.shape[0] > 100
        assert source.native_fps is not None and source.native_fps > 0
    finally:
        source.close()


def test_file_without_loop_ends_with_none(clip: Path) -> None:
    source = OpenCVSource(str(clip), loop=False)
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
        assert len(frames) <= CLIP_FRAMES
    source.close()
    assert grey_levels(frames) == [40, 90, 140, 190]


def test_file_with_loop_starts_again(clip: Path) -> None:
    source = OpenCVSource(str(clip), loop=True)
    source.open()
    frames = [source.read() for _ in range(2 * CLIP_FRAMES + 1)]
    source.close()
    assert all(frame is not None for frame in frames)
    assert grey_levels(frames) == [40, 90, 140, 190, 40, 90, 140, 190, 40]  # type: ignore[arg-type]


def test_skip_moves_past_frames_without_returning_them(clip: Path) -> None:
    source = OpenCVSource(str(clip), loop=False)
    source.open()
    assert source.skip() and grey_levels([source.read()]) == [90]  # type: ignore[list-item]
    assert source.skip() and source.skip()  # frames 3 and 4
    assert source.skip() is False and source.read() is None  # the end, as read() reports it
    source.close()
    looping = OpenCVSource(str(clip), loop=True)
    looping.open()
    assert all(looping.skip() for _ in range(CLIP_FRAMES))  # through the end ...
    assert grey_levels([looping.read()]) == [40]  # type: ignore[list-item]  # ... and round again
    looping.close()
    with pytest.raises(SourceError, match="not open"):
        looping.skip()


def test_file_is_paced_to_its_frame_rate(tmp_path: Path) -> None:
    path = tmp_path / "slow.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 40.0, (32, 32))
    for _ in range(5):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    source = OpenCVSource(str(path), loop=False)
    source.open()
    start = time.monotonic()
    while source.read() is not None:
        pass
    assert time.monotonic() - start >= 4 / 40 * 0.9


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/definitely/not/here.mp4", "video file not found: /definitely/not/here.mp4"),
        ("99", "cannot open camera device 99"),
        ("rtsp://admin:hunter2@127.0.0.1:1/stream", r"cannot open stream rtsp://\*\*\*@127.0.0.1:1/stream"),
        ("http://127.0.0.1:1/video.mjpg", "cannot open stream http://127.0.0.1:1/video.mjpg"),
    ],
)
def test_unopenable_sources_raise_clear_errors(target: str, message: str) -> None:
    source = OpenCVSource(target)
    with pytest.raises(SourceError, match=message) as caught:
        source.open()
    assert "hunter2" not in str(caught.value)
    source.close()  # safe after a failed open


def test_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(SourceError, match=r"cannot open video file .*notes\.mp4"):
        OpenCVSource(str(path)).open()


def test_read_before_open_raises() -> None:
    with pytest.raises(SourceError, match="not open"):
        OpenCVSource("0").read()


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
        ("http://user@cam.local/mjpg", "http://***@cam.local/mjpg"),
        ("https://cam.local/stream?token=hunter2&channel=1", "https://cam.local/stream?token=***&channel=1"),
        ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
        ("/videos/cat.mp4", "/videos/cat.mp4"),
        ("0", "0"),
        ("synthetic", "synthetic"),
    ],
)
def test_redact_hides_credentials(source: str, shown: str) -> None:
    assert redact_url(source) == shown
