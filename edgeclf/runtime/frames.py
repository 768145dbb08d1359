"""Where live frames come from, and the annotated video they can go back out as.

A folder that fills up needs only the standard library (and Pillow, later, to decode the
files). Cameras, video files and stream URLs go through OpenCV, the ``[stream]`` extra,
imported only when one is opened, so ``predict`` and ``verify`` never load it.

Every source yields ``Frame`` objects whose ``image`` is what ``load_image`` takes (a file
path, or an RGB-ordered uint8 array); turning it into the model's input is the classifier's
job, with the same code as ``predict``.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np

from ..errors import StreamError, UsageError
from .preprocess import is_image_file

DEFAULT_POLL_S = 0.2
DEFAULT_RETRIES = 3
RETRY_WAIT_S = 1.0
# A stream URL that answers nothing for this long counts as not opening (or, mid-stream, as dropped).
URL_TIMEOUT_MS = 10_000
# OpenCV property ids (VideoCaptureProperties; unchanged since OpenCV 2), named here so that a
# capture object can be faked in tests without OpenCV.
CAP_PROP_POS_MSEC = 0
CAP_PROP_FPS = 5
SAVE_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG"}  # containers whose codec round-trips in every OpenCV wheel


@dataclass(frozen=True)
class Frame:
    """One frame from a source.

    ``image`` is a file path or an RGB-ordered uint8 array (``HxW``, ``HxWx3`` or ``HxWx4``) of
    any size; ``None`` with ``error`` set when the frame could not be decoded.
    """

    number: int  # 1 for the first frame the source gave
    image: object
    source: Optional[str] = None  # the image file (folder), else the camera, video or URL
    timestamp_s: Optional[float] = None  # position in a video file; seconds since opening otherwise
    capture_ms: Optional[float] = None  # time to read it from the source; None where decoding is preprocessing
    error: Optional[str] = None


class FolderSource:
    """New image files in a folder, each classified once, oldest first, as they appear.

    The folder is listed every ``poll_s`` seconds (its top level only; hidden files and other
    suffixes are ignored, as ``predict`` ignores them). A file is taken once its size and
    modification time have stayed the same for one listing, so one still being written is
    left until it is complete. Files already there when watching starts are taken too, unless
    ``existing=False``.

    Raises:
        StreamError: the folder does not exist or disappears while watched.
    """

    kind = "folder"

    def __init__(self, folder: Union[str, os.PathLike], *, poll_s: float = DEFAULT_POLL_S, existing: bool = True):
        if not (poll_s > 0) or poll_s > 60:
            raise UsageError(f"poll interval must be between 0 and 60 seconds; got {poll_s!r}")
        self.folder = Path(folder)
        self.name = str(folder)
        self.poll_s = float(poll_s)
        self.fps: Optional[float] = None
        self._done: set[str] = set()
        self._pending: dict[str, tuple[int, int]] = {}
        self._taken = 0
        names = self._list()
        if not existing:
            self._done.update(e.name for e in names)

    def _list(self) -> list[os.DirEntry]:
        try:
            with os.scandir(self.folder) as it:
                return [e for e in it if is_image_file(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            raise StreamError(f"{self.folder}: the folder is gone (deleted, renamed or unmounted) after "
                              f"{self._taken} images; recreate it and start again") from None
        except PermissionError:
            raise StreamError(f"{self.folder}: permission denied listing the folder; "
                              "give this user read access to it") from None

    def scan(self) -> list[Path]:
        """List the folder once; return the files that became ready since the last call."""
        ready, pending = [], {}
        for entry in self._list():
            if entry.name in self._done:
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:  # removed between the listing and the look
                continue
            sig = (st.st_size, st.st_mtime_ns)
            # An empty file is one just created: its writer has not started.
            if st.st_size > 0 and self._pending.get(entry.name) == sig:
                ready.append((st.st_mtime_ns, entry.name))
            else:
                pending[entry.name] = sig
        self._pending = pending
        ready.sort()
        self._done.update(name for _, name in ready)
        self._taken += len(ready)
        return [self.folder / name for _, name in ready]

    def __iter__(self) -> Iterator[Frame]:
        number = 0
        start = time.monotonic()
        while True:
            ready = self.scan()
            for path in ready:
                number += 1
                # No capture time: the file is decoded by the classifier's preprocess, as predict
                # decodes it, so decoding counts as pre-processing.
                yield Frame(number, path, source=str(path), timestamp_s=time.monotonic() - start)
            if not ready:
                time.sleep(self.poll_s)

    def close(self) -> None:
        pass


def _quiet_opencv_env() -> None:
    # OpenCV and FFmpeg print warnings for every camera index they probe and every damaged
    # file; edgeclf says what went wrong in one line instead.
    if not os.environ.get("EDGECLF_VERBOSE"):
        os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def import_cv2():
    """OpenCV, quietly; a missing one names the ``[stream]`` extra."""
    from .._optional import require

    _quiet_opencv_env()
    return require("cv2", purpose="cameras, video files and streams")


def _cv2_open(target, kind: str):
    cv2 = import_cv2()
    if kind == "stream":
        return cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, URL_TIMEOUT_MS,
                                                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, URL_TIMEOUT_MS])
    cap = cv2.VideoCapture(target)
    if kind == "camera" and cap.isOpened():
        # The newest frame, not one queued while the model was busy: a live view stays live.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or grey; 8 or 16 bits) as the RGB-ordered array ``load_image``
    takes; alpha and grey are left for it to convert, as it does for files."""
    if frame.dtype == np.uint16:
        frame = np.clip(np.rint(frame / 257.0), 0, 255).astype(np.uint8)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return np.ascontiguousarray(frame[:, :, ::-1])
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, [2, 1, 0, 3]])
    return frame


class VideoSource:
    """Frames from a camera (an index such as ``0``, or ``/dev/video0``), a video file or a
    stream URL, through OpenCV.

    A video file ends at its last frame. A camera or stream that stops sending is reopened up
    to ``retries`` times, ``retry_wait_s`` apart, before ``StreamError`` says it dropped.

    Raises:
        StreamError: the source does not open, or a video file gives no frame at all.
        MissingDependencyError: OpenCV (the ``[stream]`` extra) is not installed.
    """

    def __init__(self, target: Union[int, str], *, kind: str, retries: int = DEFAULT_RETRIES,
                 retry_wait_s: float = RETRY_WAIT_S, opener: Optional[Callable] = None):
        if kind not in ("camera", "video", "stream"):
            raise UsageError(f"kind must be camera, video or stream; got {kind!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise UsageError(f"retries must be a whole number of at least 0; got {retries!r}")
        self.target = target
        self.kind = kind
        self.name = without_password(str(target)) if kind == "stream" else str(target)
        self.retries = retries
        self.retry_wait_s = float(retry_wait_s)
        self._opener = opener or _cv2_open
        self._cap = self._open()
        if self._cap is None:
            raise StreamError(self._not_opening())
        fps = self._cap.get(CAP_PROP_FPS)
        self.fps: Optional[float] = float(fps) if fps and 0 < fps < 1000 else None

    def _open(self):
        cap = self._opener(self.target, self.kind)
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
        return None

    def _not_opening(self) -> str:
        if self.kind == "camera":
            return (f"camera {self.name} did not open; check that it is connected and enabled and that no other "
                    "program is using it (ls /dev/video* lists the cameras Linux sees)")
        if self.kind == "stream":
            return (f"{self.name}: the stream did not open (refused, no answer within {URL_TIMEOUT_MS // 1000} s, "
                    "or a format OpenCV cannot read); check the address and that the camera or server is sending")
        return (f"{self.name}: cannot open this video: not a format or codec OpenCV can decode, or a damaged "
                "file; re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")

    def _reconnect(self, frames_so_far: int) -> None:
        self._cap.release()
        for _ in range(self.retries):
            time.sleep(self.retry_wait_s)
            cap = self._open()
            if cap is not None and cap.grab():
                self._cap = cap
                return
            if cap is not None:
                cap.release()
        self._cap = _Closed()
        raise StreamError(f"{self.name}: the {self.kind} stopped sending frames after {frames_so_far} "
                          f"frame{'' if frames_so_far == 1 else 's'} and did not "
                          f"come back after {self.retries} reconnect attempt{'' if self.retries == 1 else 's'}; "
                          "check the cable or the network")

    def __iter__(self) -> Iterator[Frame]:
        number = 0
        start = time.monotonic()
        while True:
            t0 = time.perf_counter()
            if not self._cap.grab():
                if self.kind == "video":
                    if number == 0:
                        raise StreamError(f"{self.name}: no frame could be decoded; the file is damaged or uses "
                                          "a codec OpenCV cannot decode; re-encode it, e.g. ffmpeg -i IN -c:v "
                                          "libx264 OUT.mp4")
                    return
                self._reconnect(number)
                t0 = time.perf_counter()
            ok, bgr = self._cap.retrieve()
            number += 1
            if self.kind == "video":
                ts = round(self._cap.get(CAP_PROP_POS_MSEC) / 1000.0, 6)
            else:
                ts = time.monotonic() - start
            if not ok or bgr is None:
                yield Frame(number, None, source=self.name, timestamp_s=ts,
                            capture_ms=(time.perf_counter() - t0) * 1e3, error="the frame could not be decoded")
                continue
            rgb = bgr_to_rgb(bgr)
            yield Frame(number, rgb, source=self.name, timestamp_s=ts, capture_ms=(time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        self._cap.release()


class _Closed:
    def grab(self):
        return False

    def release(self):
        pass


def without_password(url: str) -> str:
    """``url`` with the password of ``user:password@`` replaced by ``***``: names are printed
    and written to JSON lines, and a camera's password must not end up in someone's logs."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        return url


def _is_camera_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def open_source(source: Union[int, str, os.PathLike], *, poll_s: float = DEFAULT_POLL_S, existing: bool = True,
                retries: int = DEFAULT_RETRIES):
    """The frame source ``source`` names: a folder, a camera index or device, a URL, a video file.

    Raises:
        StreamError: it names none of these, or it does not open.
    """
    if isinstance(source, int) and not isinstance(source, bool):
        return VideoSource(source, kind="camera", retries=retries)
    text = os.fspath(source)
    if text.strip().isdigit():
        return VideoSource(int(text), kind="camera", retries=retries)
    if "://" in text:
        return VideoSource(text, kind="stream", retries=retries)
    if os.path.isdir(text):
        return FolderSource(text, poll_s=poll_s, existing=existing)
    if _is_camera_device(text):
        return VideoSource(text, kind="camera", retries=retries)
    if os.path.exists(text):
        if is_image_file(text):
            raise StreamError(f"{text}: is one image; stream takes a folder, a video, a camera or a URL "
                              "(edgeclf predict classifies single images)")
        return VideoSource(text, kind="video", retries=retries)
    raise StreamError(f"{text}: no such file or folder, and not a camera index (0, 1, ...) or a URL "
                      "(rtsp://..., http://...)")


class AnnotatedVideo:
    """Writes frames with the label, score and frames per second drawn on them, to ``path``
    (``.mp4`` or ``.avi``), at ``fps``. The size is the first frame's; later frames of another
    size are scaled to it. Write to a temporary name and rename it, as the CLI does."""

    def __init__(self, path: Union[str, os.PathLike], *, fps: float, codec_suffix: Optional[str] = None):
        suffix = (codec_suffix or Path(path).suffix).lower()
        if suffix not in SAVE_SUFFIXES:
            raise UsageError(f"save file must end in {' or '.join(SAVE_SUFFIXES)}; got {Path(path).name!r}")
        self.path = Path(path)
        self.fps = float(fps)
        self._fourcc = SAVE_SUFFIXES[suffix]
        self._writer = None
        self._size: Optional[tuple[int, int]] = None
        self.frames = 0

    def write(self, rgb: np.ndarray, lines: list[str]) -> None:
        cv2 = import_cv2()
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR)
        elif rgb.shape[2] == 4:
            bgr = np.ascontiguousarray(rgb[:, :, [2, 1, 0]])
        else:
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if self._writer is None:
            self._size = (bgr.shape[1], bgr.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self._fourcc), self.fps, self._size)
            if not self._writer.isOpened():
                raise StreamError(f"{self.path}: OpenCV cannot write a {self._fourcc} video here; "
                                  f"try --save with {' or '.join(s for s in SAVE_SUFFIXES)}")
        if (bgr.shape[1], bgr.shape[0]) != self._size:
            bgr = cv2.resize(bgr, self._size, interpolation=cv2.INTER_AREA)
        draw_lines(bgr, lines)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def draw_lines(bgr: np.ndarray, lines: list[str]) -> None:
    """Draw ``lines`` top-left on ``bgr`` in place: white text on a dark band, sized to the frame."""
    cv2 = import_cv2()
    h = bgr.shape[0]
    scale = max(0.35, h / 720.0)
    thick = max(1, int(round(scale * 1.5)))
    y = 0
    for line in lines:
        # Hershey fonts draw ASCII only; anything else would come out as '?' boxes anyway.
        text = line.encode("ascii", "replace").decode("ascii")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        pad = max(2, th // 3)
        cv2.rectangle(bgr, (0, y), (tw + 2 * pad, y + th + base + 2 * pad), (0, 0, 0), thickness=-1)
        cv2.putText(bgr, text, (pad, y + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
        y += th + base + 2 * pad
