"""`edgeclf stream` and `Classifier.stream`: videos, folders that fill up, cameras that do not
open, streams that drop. Committed fixtures (a 32x32 colour classifier); no TensorFlow."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from _data_helpers import finishes, truncated_png
from edgeclf.cli import main
from edgeclf.errors import StreamError, UsageError
from edgeclf.runtime import load_classifier
from edgeclf.runtime.frames import FolderSource, VideoSource
from edgeclf.runtime.stream import FrameStatus, StopReason

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"
TFLITE = FIXTURES / "colour_int8.tflite"
ONNX = FIXTURES / "colour_int8.onnx"
# Each known image shown for a known number of frames: the label sequence a video must give.
SCENES = [("red.png", "red", 3), ("green.jpg", "green", 3), ("blue.png", "blue", 3), ("red.png", "red", 2)]
EXPECTED = [label for _, label, n in SCENES for _ in range(n)]
CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def make_video(path: Path, size=(64, 48), fps=10.0, scenes=SCENES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*CODECS[path.suffix]), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix}"
    for name, _, n in scenes:
        frame = cv2.resize(cv2.imread(str(IMAGES / name)), size, interpolation=cv2.INTER_AREA)
        for _ in range(n):
            writer.write(frame)
    writer.release()
    return path


def extract_frames(video: Path, out: Path) -> list[Path]:
    """Every frame of ``video`` as a PNG, with OpenCV's own decoder (what stream reads)."""
    out.mkdir()
    cap = cv2.VideoCapture(str(video))
    paths = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        paths.append(out / f"frame_{len(paths):04d}.png")
        assert cv2.imwrite(str(paths[-1]), frame)
    cap.release()
    return paths


def json_lines(stdout: str) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in stdout.splitlines()]
    assert "summary" in records[-1], records[-1]
    return records[:-1], records[-1]["summary"]


@pytest.mark.parametrize("suffix", sorted(CODECS))
@pytest.mark.parametrize("model", [TFLITE, ONNX], ids=["int8.tflite", "int8.onnx"])
def test_video_labels_equal_predict_on_the_same_frames_as_files(tmp_path, model, suffix):
    video = make_video(tmp_path / f"clip{suffix}")
    r = run("stream", model, video, "--json", "-")
    assert r.exit_code == 0, r.output
    frames, summary = json_lines(r.stdout)
    assert [f["frame"] for f in frames] == list(range(1, len(EXPECTED) + 1))

    pngs = extract_frames(video, tmp_path / "frames")
    p = run("predict", model, *pngs, "--json", "-")
    assert p.exit_code == 0, p.output
    predicted = json.loads(p.stdout)
    assert len(pngs) == len(EXPECTED), "the video does not hold the frames written"
    assert [f["label"] for f in frames] == [q["label"] for q in predicted], "stream and predict disagree"
    assert [f["label"] for f in frames] == EXPECTED, "the model did not see the scenes shown"
    got = np.array([f["probabilities"] for f in frames])
    want = np.array([q["probabilities"] for q in predicted])
    np.testing.assert_array_equal(got, want, err_msg="probabilities differ from predict's")
    assert set(predicted[0]) <= set(frames[0]), "a predict --json key is missing from stream's lines"
    assert summary["frames_read"] == summary["classified"] == len(EXPECTED)
    assert summary["skipped"] == summary["failed"] == 0
    assert summary["stopped_by"] == "end"
    for stage in ("capture_ms", "preprocess_ms", "inference_ms", "total_ms"):
        assert summary[stage]["frames"] == len(EXPECTED), stage
        assert 0 <= summary[stage]["p50"] <= summary[stage]["p90"] <= summary[stage]["p99"], stage
    assert summary["peak_memory_bytes"] > 0


def test_every_fps_and_frames_choose_frames_and_the_counts_add_up(tmp_path):
    video = make_video(tmp_path / "clip.avi", fps=10.0)  # 11 frames, 0.1 s apart
    r = run("stream", TFLITE, video, "--json", "-", "--every", "3")
    frames, s = json_lines(r.stdout)
    assert [f["frame"] for f in frames] == [1, 4, 7, 10]
    assert (s["frames_read"], s["classified"], s["skipped"], s["failed"]) == (11, 4, 7, 0)

    # --fps runs on the video's clock: 4 per second of a 10 fps video is every 0.25 s of it.
    r = run("stream", TFLITE, video, "--json", "-", "--fps", "4")
    frames, s = json_lines(r.stdout)
    assert [f["timestamp_s"] for f in frames] == [0.0, 0.3, 0.5, 0.8, 1.0]
    assert s["classified"] + s["skipped"] + s["failed"] == s["frames_read"] == 11

    r = run("stream", TFLITE, video, "--json", "-", "--frames", "4")
    frames, s = json_lines(r.stdout)
    assert len(frames) == 4 and s["frames_read"] == 4 and s["stopped_by"] == "limit"


def test_text_lines_min_score_top_k_and_summary(tmp_path):
    video = make_video(tmp_path / "clip.avi")
    r = run("stream", TFLITE, video, "--top-k", "2")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    frame_lines = [ln for ln in lines if " frame " in ln]
    assert len(frame_lines) == len(EXPECTED)
    assert " frame 1: red 100.00%, " in frame_lines[0] and "inference " in frame_lines[0]
    assert "stopped: the source ended" in lines
    assert f"frames: {len(EXPECTED)} read, {len(EXPECTED)} classified, 0 skipped, 0 failed" in r.stdout
    assert "peak memory: " in r.stdout
    # Grey is a colour this model is unsure of (about 99% blue); red it is sure of.
    video = make_video(tmp_path / "unsure.avi", scenes=[("red.png", "red", 2), ("light_gray.png", "blue", 3)])
    r = run("stream", TFLITE, video, "--json", "-")
    frames, _ = json_lines(r.stdout)
    assert [f["confidence"] < 0.999 for f in frames] == [False] * 2 + [True] * 3
    r = run("stream", TFLITE, video, "--min-score", "0.999", "--json", "-")
    frames, s = json_lines(r.stdout)
    assert [f["frame"] for f in frames] == [1, 2]
    assert s["classified"] == 5, "frames under --min-score are still counted"


def test_save_draws_on_every_frame_and_leaves_no_temp_file(tmp_path):
    video = make_video(tmp_path / "clip.avi", size=(320, 240))
    out = tmp_path / "out" / "labelled.mp4"
    r = run("stream", ONNX, video, "--save", out, "--every", "2")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["labelled.mp4"]
    cap = cv2.VideoCapture(str(out))
    got = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        got.append(frame)
    assert len(got) == len(EXPECTED), "skipped frames are written too"
    src = cv2.VideoCapture(str(video))
    ok, first = src.read()
    band = got[0][:12, :60].astype(int)
    assert np.abs(band - first[:12, :60].astype(int)).mean() > 40, "no label drawn top-left"
    assert np.abs(got[0][40:].astype(int) - first[40:].astype(int)).mean() < 12, "the picture changed"


def test_json_file_holds_the_lines_and_the_summary(tmp_path):
    video = make_video(tmp_path / "clip.avi")
    out = tmp_path / "frames.jsonl"
    r = run("stream", TFLITE, video, "--json", out)
    assert r.exit_code == 0, r.output
    frames, s = json_lines(out.read_text())
    assert [f["label"] for f in frames] == EXPECTED and s["classified"] == len(EXPECTED)
    assert "stopped: the source ended" in r.stdout


def test_a_camera_that_does_not_open_is_one_line_and_exit_1():
    r = run("stream", TFLITE, "63")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.startswith("Error: camera 63 did not open; ") and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200])
def test_a_video_that_cannot_be_decoded_is_one_line_and_exit_1(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    r = run("stream", TFLITE, bad)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"Error: {bad}: ") and r.stderr.count("\n") == 1, r.stderr


def test_bad_sources_and_options(tmp_path):
    r = run("stream", TFLITE, tmp_path / "nothing")
    assert r.exit_code == 1 and "no such file or folder" in r.stderr
    r = run("stream", TFLITE, IMAGES / "red.png")
    assert r.exit_code == 1 and "edgeclf predict" in r.stderr
    r = run("stream", TFLITE, IMAGES, "--save", tmp_path / "x.mp4")
    assert r.exit_code == 2 and "--save needs a camera" in r.stderr
    r = run("stream", TFLITE, IMAGES, "--save", tmp_path / "x.mkv")
    assert r.exit_code == 2 and ".mp4 or .avi" in r.stderr
    assert not list(tmp_path.iterdir())


def test_without_opencv_stream_names_the_extra(tmp_path, monkeypatch):
    video = make_video(tmp_path / "clip.avi")
    monkeypatch.setitem(sys.modules, "cv2", None)  # what an install without the extra sees
    r = run("stream", TFLITE, video)
    assert r.exit_code == 1
    assert 'pip install "edgeclf[stream]"' in r.stderr and "opencv-python-headless" in r.stderr, r.stderr
    # A folder needs no extra.
    r = run("stream", TFLITE, IMAGES, "--frames", "2")
    assert r.exit_code == 0, r.output


# --- the Python API --------------------------------------------------------------------------


def test_classifier_stream_takes_any_frames_and_counts_failures():
    clf = load_classifier(TFLITE, threads=1)
    rgb = [cv2.cvtColor(cv2.imread(str(IMAGES / n)), cv2.COLOR_BGR2RGB) for n in ("red.png", "green.jpg")]
    grey = np.full((20, 30), 200, np.uint8)
    frames = [rgb[0], np.zeros((8, 8, 3), np.float32), rgb[1], grey, IMAGES / "blue.png"]
    run_ = clf.stream(iter(frames), top_k=2)
    results = list(run_)
    assert [r.status for r in results] == [FrameStatus.CLASSIFIED, FrameStatus.FAILED, FrameStatus.CLASSIFIED,
                                           FrameStatus.CLASSIFIED, FrameStatus.CLASSIFIED]
    assert "uint8" in results[1].error
    good = [frames[i] for i in (0, 2, 3, 4)]
    want = clf.predict(good)
    got = [r.prediction for r in results if r.prediction is not None]
    assert [g.label for g in got] == [w.label for w in want]
    assert [got[0].label, got[1].label, got[3].label] == ["red", "green", "blue"]
    np.testing.assert_array_equal([g.probabilities for g in got], [w.probabilities for w in want])
    assert got[-1].source == str(IMAGES / "blue.png") and len(got[0].top_k) == 2
    s = run_.summary()
    assert (s.frames_read, s.classified, s.skipped, s.failed) == (5, 4, 0, 1)
    assert s.stopped_by is StopReason.END and s.capture.runs == 5 and s.inference.runs == 4
    d = s.to_dict()
    assert d["frames_read"] == 5 and d["stopped_by"] == "end" and d["inference_ms"]["frames"] == 4


def test_classifier_stream_rejects_bad_options():
    clf = load_classifier(TFLITE, threads=1)
    for kwargs in ({"every": 0}, {"top_k": 0}, {"max_fps": 0}, {"max_frames": 0}, {"every": True}):
        with pytest.raises(UsageError):
            clf.stream([], **kwargs)


class FakeCapture:
    """A cv2.VideoCapture stand-in: gives ``frames`` frames, then nothing."""

    def __init__(self, frames: int, opened: bool = True):
        self.left = frames
        self.opened = opened

    def isOpened(self):
        return self.opened

    def grab(self):
        self.left -= 1
        return self.left >= 0

    def retrieve(self):
        return True, np.full((24, 32, 3), (20, 20, 220), np.uint8)  # BGR: red

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_a_stream_that_drops_is_retried_then_reported():
    opened = []

    def opener(target, kind):
        opened.append(kind)
        return FakeCapture(3 if len(opened) == 1 else 2 if len(opened) == 2 else 0, opened=len(opened) < 4)

    src = VideoSource("rtsp://camera/1", kind="stream", retries=2, retry_wait_s=0, opener=opener)
    run_ = load_classifier(TFLITE, threads=1).stream(src)
    labels = []
    with pytest.raises(StreamError, match=r"stopped sending frames after 5 frames and did not come back after 2 reconnect"):
        for r in run_:
            labels.append(r.prediction.label)
    assert labels == ["red"] * 5, "frames after the first reconnect are classified"
    assert len(opened) == 4  # the first open, one reconnect that worked, two that did not
    s = run_.summary()
    assert s.stopped_by is StopReason.ERROR and "reconnect" in s.error and s.classified == 5


def test_a_stream_password_is_never_printed():
    def opener(target, kind):
        assert target == "rtsp://admin:s3cret@10.0.0.9:554/live", "the real URL must reach OpenCV"
        return FakeCapture(0, opened=False)

    with pytest.raises(StreamError) as err:
        VideoSource("rtsp://admin:s3cret@10.0.0.9:554/live", kind="stream", opener=opener)
    assert "s3cret" not in str(err.value) and "rtsp://admin:***@10.0.0.9:554/live" in str(err.value)


def test_a_video_file_ends_without_retrying():
    opened = []
    src = VideoSource("clip.avi", kind="video", retries=5, retry_wait_s=0,
                      opener=lambda t, k: opened.append(k) or FakeCapture(2))
    assert len(list(src)) == 2 and len(opened) == 1


# --- folders ----------------------------------------------------------------------------------


def test_folder_takes_a_file_once_its_size_has_settled(tmp_path):
    src = FolderSource(tmp_path)
    data = (IMAGES / "red.png").read_bytes()
    f = tmp_path / "shot.png"
    f.write_bytes(data[:100])
    assert src.scan() == []  # first seen: maybe still being written
    with open(f, "ab") as out:
        out.write(data[100:])
    assert src.scan() == [], "a file that grew since the last listing is still being written"
    (tmp_path / ".shot2.png").write_bytes(data)  # hidden: a writer's temporary name
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty.png").write_bytes(b"")
    assert src.scan() == [f]
    assert src.scan() == [], "each file is taken once"
    os.replace(tmp_path / ".shot2.png", tmp_path / "shot2.png")
    src.scan()
    assert src.scan() == [tmp_path / "shot2.png"]


def test_folder_new_only_and_a_vanished_folder(tmp_path):
    d = tmp_path / "inbox"
    d.mkdir()
    shutil.copy(IMAGES / "red.png", d / "old.png")
    src = FolderSource(d, existing=False)
    shutil.copy(IMAGES / "blue.png", d / "new.png")
    src.scan()
    assert src.scan() == [d / "new.png"]
    shutil.rmtree(d)
    with pytest.raises(StreamError, match="the folder is gone"):
        src.scan()


def _start(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    # A shell that starts jobs in the background ignores SIGINT in them; Ctrl-C must reach this one.
    return subprocess.Popen([sys.executable, "-m", "edgeclf", "stream", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _read_until(proc, text: str, seen: list) -> None:
    def go():
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if text in line:
                return True
        return False

    box = finishes(go, 60)
    assert box.get("value") is True, f"never printed {text!r}; output so far: {seen}"


def _finish(proc, seen: list) -> int:
    box = finishes(lambda: (seen.extend(proc.stdout.read().splitlines()), proc.wait())[1], 60)
    assert "value" in box, box
    return box["value"]


def test_folder_classifies_files_as_they_appear_and_ctrl_c_gives_the_summary(tmp_path):
    d = tmp_path / "inbox"
    d.mkdir()
    shutil.copy(IMAGES / "red.png", d / "a.png")
    proc = _start(TFLITE, d, "--poll", "0.02")
    seen: list[str] = []
    try:
        _read_until(proc, "frame 1 ", seen)  # the file already there
        assert f"{d / 'a.png'}: red " in seen[-1]
        shutil.copy(IMAGES / "green.jpg", d / "b.jpg")
        _read_until(proc, "frame 2 ", seen)
        assert f"{d / 'b.jpg'}: green " in seen[-1]
        truncated_png(d / "c.png")
        _read_until(proc, "Error: frame 3: ", seen)
        assert "truncated" in seen[-1]
        shutil.copy(IMAGES / "blue.png", d / "d.png")
        _read_until(proc, "frame 4 ", seen)
        assert f"{d / 'd.png'}: blue " in seen[-1]
        proc.send_signal(signal.SIGINT)
        code = _finish(proc, seen)
    finally:
        proc.kill()
    assert code == 130, seen
    assert "stopped: Ctrl-C" in seen
    assert "frames: 4 read, 3 classified, 0 skipped, 1 failed in " in "\n".join(seen)
    assert not any("Traceback" in line for line in seen), seen


def test_folder_sigterm_exits_143_and_a_vanished_folder_exits_1(tmp_path):
    d = tmp_path / "inbox"
    d.mkdir()
    shutil.copy(IMAGES / "red.png", d / "a.png")
    out = tmp_path / "lines.jsonl"
    proc = _start(TFLITE, d, "--poll", "0.02", "--json", out)
    seen: list[str] = []
    try:
        _read_until(proc, "frame 1 ", seen)
        proc.send_signal(signal.SIGTERM)
        code = _finish(proc, seen)
    finally:
        proc.kill()
    assert code == 143, seen
    assert "stopped: SIGTERM" in seen
    frames, s = json_lines(out.read_text())
    assert [f["label"] for f in frames] == ["red"] and s["stopped_by"] == "terminated"

    proc = _start(TFLITE, d, "--poll", "0.02")
    seen = []
    try:
        _read_until(proc, "frame 1 ", seen)
        shutil.rmtree(d)
        code = _finish(proc, seen)
    finally:
        proc.kill()
    assert code == 1, seen
    assert seen[-1].startswith(f"Error: {d}: the folder is gone"), seen
    assert "frames: 1 read, 1 classified, 0 skipped, 0 failed in " in "\n".join(seen)
