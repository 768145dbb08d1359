"""CLI command: stream. Runtime only; OpenCV (the [stream] extra) is imported only when a
camera, video or URL is opened, never for a folder and never at start-up."""

from __future__ import annotations

from pathlib import Path

import click

from ._options import json_option, json_to_stdout, threads_option

COMMANDS: list[click.Command] = []

_STOPPED = {
    "end": "the source ended",
    "limit": "--frames reached",
    "interrupted": "Ctrl-C",
    "terminated": "SIGTERM",
    "error": "the source failed",
    "running": "stopped",
}


@click.command("stream")
@click.argument("model", type=click.Path(readable=False, path_type=Path))
@click.argument("source", metavar="SOURCE")
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also show the next most likely labels.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Classify every Nth frame; the others are counted as skipped.")
@click.option("--fps", "max_fps", type=click.FloatRange(min=0, min_open=True), default=None, metavar="X",
              help="Classify at most X frames per second (of video time for a file); the others are skipped.")
@click.option("--min-score", "min_score", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="S",
              help="Print only frames whose best score is at least S (0..1); every frame is still counted.")
@click.option("--frames", "max_frames", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after reading N frames.")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="OUT.mp4",
              help="Write the video with the label, score and frames per second drawn on it (.mp4 or .avi).")
@click.option("--new-only", "new_only", is_flag=True,
              help="Folder: classify only images that appear after the start, not those already there.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.01, max=60), default=0.2, show_default=True,
              metavar="SECONDS", help="Folder: how often to look for new images.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Camera or URL: reconnect attempts after it stops sending, before giving up.")
@json_option
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="Labels file (one class name per line, in output order), for a model without edgeclf metadata.")
@threads_option
def stream_cmd(model, source, top_k, every, max_fps, min_score, max_frames, save, new_only, poll_s, retries,
               json_out, labels_file, threads):
    """Classify live frames from SOURCE with a .tflite or .onnx model.

    SOURCE is a camera index (0), a camera device (/dev/video0), a video file, a stream URL
    OpenCV can open (rtsp://, http://), or a folder: new images in it are classified once each
    as they appear. Frames get predict's pre-processing (RGB, the model's resize).

    One line per classified frame: time, frame number, labels and scores, and the latency of
    capture, pre-processing and inference. --json - prints JSON lines instead (predict's keys
    plus frame, time and the timings; a last line holds the summary). The summary comes when the
    video ends, on --frames, Ctrl-C (exit 130) or SIGTERM (exit 143). Cameras, videos and URLs
    need the [stream] extra: pip install "edgeclf[stream]".
    """
    from ..errors import UsageError
    from ..runtime.classifier import load_classifier
    from ..runtime.frames import SAVE_SUFFIXES, open_source

    if save is not None and save.suffix.lower() not in SAVE_SUFFIXES:
        raise UsageError(f"--save takes a {' or '.join(SAVE_SUFFIXES)} file; got {save.name!r}")
    clf = load_classifier(model, threads=threads, labels=labels_file)
    src = open_source(source, poll_s=poll_s, existing=not new_only, retries=retries)
    if save is not None and src.kind == "folder":
        src.close()
        raise UsageError("--save needs a camera, a video or a stream; a folder's images have no one frame size")
    _stream(clf, src, top_k=top_k, every=every, max_fps=max_fps, min_score=min_score, max_frames=max_frames,
            save=save, json_out=json_out)


def _stream(clf, src, *, top_k, every, max_fps, min_score, max_frames, save, json_out):
    import contextlib
    import json
    from .._io import atomic_path
    from .._term import info, printable
    from ..errors import EdgeclfError
    from ..runtime.frames import AnnotatedVideo
    from ..runtime.stream import FrameStatus, StopReason

    as_lines = json_to_stdout(json_out)
    what = f"watching {src.name} for new images" if src.kind == "folder" else f"reading {src.kind} {src.name}"
    info(f"{printable(what)} with {clf.path.name} ({clf.format}, {clf.precision}, {clf.threads} "
         f"thread{'' if clf.threads == 1 else 's'}); Ctrl-C to stop")
    with contextlib.ExitStack() as stack:
        json_file = None
        if json_out is not None and not as_lines:
            json_file = stack.enter_context(open(stack.enter_context(atomic_path(json_out)), "w", encoding="utf-8"))
        video = None
        if save is not None:
            video = AnnotatedVideo(stack.enter_context(atomic_path(save)), fps=src.fps or 30.0)
            stack.callback(video.close)
        run = clf.stream(src, top_k=top_k, every=every, max_fps=max_fps, max_frames=max_frames)
        stop = failure = None
        last = None
        try:
            for r in run:
                if r.prediction is not None:
                    last = r.prediction
                if video is not None and r.frame.image is not None:
                    video.write(r.frame.image, _overlay(last, run.fps_so_far()))
                if r.status is FrameStatus.FAILED:
                    click.echo(f"Error: frame {r.frame.number}: {printable(r.error)}", err=True)
                elif r.status is FrameStatus.SKIPPED or r.prediction.confidence < min_score:
                    continue
                record = r.to_dict()
                if json_file is not None:
                    json_file.write(json.dumps(record, ensure_ascii=False) + "\n")
                if as_lines:
                    click.echo(json.dumps(record, ensure_ascii=False))
                elif r.prediction is not None:
                    click.echo(_line(r, folder=src.kind == "folder"))
        except KeyboardInterrupt as exc:
            stop = exc
        except EdgeclfError as exc:
            failure = exc
        finally:
            src.close()
        reason = None
        if stop is not None:
            # The CLI turns SIGTERM into a KeyboardInterrupt subclass; plain Ctrl-C is the exact type.
            reason = StopReason.INTERRUPTED if type(stop) is KeyboardInterrupt else StopReason.TERMINATED
        summary = run.summary(stopped_by=reason)
        if json_file is not None:
            json_file.write(json.dumps({"summary": summary.to_dict()}, ensure_ascii=False) + "\n")
        if as_lines:
            click.echo(json.dumps({"summary": summary.to_dict()}, ensure_ascii=False))
        else:
            click.echo(_summary_text(summary))
    if json_file is not None:
        info(f"wrote {json_out}")
    if video is not None and video.frames:
        info(f"wrote {save} ({video.frames} frames)")
    if stop is not None:
        raise stop
    if failure is not None:
        raise failure


def _overlay(pred, fps: float) -> list[str]:
    if pred is None:
        return [f"{fps:.1f} fps"]
    return [f"{pred.label} {100 * pred.confidence:.1f}%", f"{fps:.1f} fps"]


def _line(r, *, folder: bool) -> str:
    import datetime

    from .._term import printable

    p = r.prediction
    clock = datetime.datetime.fromtimestamp(r.time).strftime("%H:%M:%S.%f")[:-3]
    where = f" {printable(r.frame.source)}" if folder else ""
    labels = ", ".join(f"{printable(lab)} {100 * c:.2f}%" for lab, c in (p.top_k or ((p.label, p.confidence),)))
    capture = "" if r.capture_ms is None else f"capture {r.capture_ms:.1f} ms, "
    return (f"{clock} frame {r.frame.number}{where}: {labels}  "
            f"[{capture}preprocess {r.preprocess_ms:.1f} ms, inference {r.inference_ms:.1f} ms]")


def _summary_text(s) -> str:
    from .._term import format_table, human_bytes, printable

    stopped = _STOPPED[s.stopped_by.value]
    if s.error:
        stopped += f": {s.error}"
    lines = [f"stopped: {printable(stopped)}",
             f"frames: {s.frames_read} read, {s.classified} classified, {s.skipped} skipped, {s.failed} failed "
             f"in {s.elapsed_s:.2f} s: {s.fps:.1f} classified per second ({s.read_fps:.1f} read per second)"]
    rows = [(name, f"{st.p50_ms:.2f}", f"{st.p90_ms:.2f}", f"{st.p99_ms:.2f}")
            for name, st in (("capture", s.capture), ("preprocess", s.preprocess), ("inference", s.inference),
                             ("total", s.total)) if st is not None]
    if rows:
        lines.append(format_table(["latency (ms)", "p50", "p90", "p99"], rows))
    if s.peak_memory_bytes is not None:
        lines.append(f"peak memory: {human_bytes(s.peak_memory_bytes)} (the whole process's peak resident memory)")
    return "\n".join(lines)


COMMANDS.append(stream_cmd)
