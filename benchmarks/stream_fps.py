"""Frames per second of `edgeclf stream` on a video, per model file and thread count.

Makes a 640x480 MJPG video (what a USB webcam sends) from the images of a class-folder
dataset, then streams it through each model file with ``Classifier.stream`` — the loop the
CLI runs: OpenCV decode, BGR to RGB, the model's resize, inference — in alternating rounds so
that load from elsewhere on a shared machine hits every file alike. Per file: the median over
rounds of frames classified per second, and the median per-frame capture, pre-processing and
inference times; also the best round (the least disturbed by other load) and the load
average before and after, since a shared machine's figures move with its neighbours.

    python benchmarks/stream_fps.py export/shapes/model_int8.tflite export/shapes/model_float32.tflite \\
        --data shapes --threads 1 --threads 2 --json benchmarks/results/stream_fps.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_video(data: Path, out: Path, *, frames: int, size=(640, 480), fps=30.0) -> Path:
    import cv2

    images = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not images:
        raise SystemExit(f"no images under {data}")
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        img = cv2.imread(str(images[(i // 10) % len(images)]))  # each image for 10 frames
        writer.write(cv2.resize(img, size, interpolation=cv2.INTER_LINEAR))
    writer.release()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help=".tflite or .onnx files")
    ap.add_argument("--data", type=Path, required=True, help="class-folder dataset the video is made from")
    ap.add_argument("--threads", type=int, action="append", help="repeat for several (default: 1)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import cv2

    from edgeclf._io import write_json
    from edgeclf._term import format_table
    from edgeclf.runtime.classifier import load_classifier
    from edgeclf.runtime.frames import VideoSource
    from edgeclf.runtime.latency import system_info

    threads = args.threads or [1]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(args.data, Path(tmp) / "clip.avi", frames=args.frames)
        clfs = [(m, t, load_classifier(m, threads=t)) for m in args.models for t in threads]
        runs: dict[tuple, list] = {(m, t): [] for m, t, _ in clfs}
        for _ in range(args.rounds):
            for m, t, clf in clfs:
                stream = clf.stream(VideoSource(str(video), kind="video"))
                for _r in stream:
                    pass
                runs[(m, t)].append(stream.summary())
    info = system_info()
    rows, out = [], []
    for m, t, clf in clfs:
        ss = runs[(m, t)]
        med = {k: statistics.median(getattr(s, k).p50_ms for s in ss) for k in ("capture", "preprocess", "inference")}
        fps = statistics.median(s.fps for s in ss)
        best = max(s.fps for s in ss)
        rows.append((Path(m).name, clf.precision, t, f"{fps:.1f}", f"{best:.1f}", f"{med['capture']:.2f}",
                     f"{med['preprocess']:.2f}", f"{med['inference']:.2f}", f"{ss[-1].peak_memory_bytes / 2**20:.0f}"))
        out.append({"model": str(m), "precision": clf.precision, "input_size": list(clf.input_size), "threads": t,
                    "fps_median": fps, "fps_best": best, "fps_rounds": [s.fps for s in ss], "p50_ms_median": med,
                    "frames": ss[-1].frames_read, "peak_memory_bytes": ss[-1].peak_memory_bytes})
    print(f"machine: {info.summary()}; OpenCV {cv2.__version__}")
    load_after = os.getloadavg()
    print(f"video: {args.frames} frames 640x480 MJPG, every frame classified; median of {args.rounds} rounds; "
          f"1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(format_table(["file", "precision", "threads", "frames/s", "best round", "capture ms", "preprocess ms", "inference ms",
                        "peak MB"], rows))
    if args.json:
        write_json(args.json, {"system": info.to_dict(), "opencv": cv2.__version__, "video": {
            "frames": args.frames, "size": [640, 480], "codec": "MJPG"}, "rounds": args.rounds, "load_average_before": load_before,
            "load_average_after": load_after, "results": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
