"""The comparison as a person reads it: the terminal tables, and files to open (Markdown, a
plot, a picture of the flipped images).

``write_report(comparison, out_dir)`` writes ``report.md``, ``comparison.json``,
``accuracy_latency_size.png`` (accuracy against batch-1 latency and against file size, one
labelled point per file) and ``flipped.png`` (every image whose top-1 prediction changed
against the reference, with the labels involved). The plot needs matplotlib (imported only
here, only then); without it the report is still written, and both report.md and the
``edgeclf`` logger (the terminal, for the CLI) say the plot was left out and how to get it. The flipped-images picture needs only Pillow. Every file is written atomically.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

from .._io import atomic_path, write_json, write_text
from ..errors import MissingDependencyError

# A file whose batch-1 p50 is at least this fraction of float32's (same format, threads and
# input size, same run) is "not faster than float32 here": a 5% gain is within what a shared
# machine's noise moves, and too little to be worth a file that needs calibration.
NOT_FASTER = 0.95
PRECISION_WORDS = {"dynamic": "dynamic-range", "qat": "int8 (QAT)"}
INT8_PRECISIONS = ("int8", "int8-full", "qat", "dynamic", "int16x8")

# What the "memory" column is, wherever it is printed.
MEMORY_NOTE = ("peak resident memory that loading the file and running one image adds, measured in a fresh "
               "process per file (edgeclf.runtime.memory)")

log = logging.getLogger(__name__)

PLOT_NAME = "accuracy_latency_size.png"
FLIPS_NAME = "flipped.png"
MAX_FLIP_TILES = 60


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{v * 100:.2f}%"


def _num(v, spec) -> str:
    return "-" if v is None or v != v else format(v, spec)


def _human(n) -> str:
    from .._term import human_bytes

    return "-" if n is None else human_bytes(n)


def _memory(m) -> str:
    mem = getattr(m, "memory", None)
    return "-" if mem is None else _human(mem.added_bytes)


def _md_table(headers, rows) -> str:
    def esc(s):
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class SpeedNote:
    """A file that is not faster than the float32 file of its format on this machine."""

    name: str
    format: str
    precision: str
    threads: Optional[int]
    p50_ms: float
    float32_p50_ms: float
    ratio: float  # p50 / float32's p50: at least NOT_FASTER
    prefer: tuple[str, ...]  # precisions of this format that were faster than float32 here, fastest first
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def _word(precision) -> str:
    p = getattr(precision, "value", precision)
    return PRECISION_WORDS.get(p, p)


def speed_notes(files: Iterable, *, int8=None) -> list[SpeedNote]:
    """One note for every file not faster than float32 on this machine.

    ``files``: objects with ``path`` (or ``name``), ``format``, ``precision``, ``threads``,
    ``input_size`` and ``latency`` (LatencyStats at batch 1, or None): a comparison's
    ``models`` or ``bench`` results. Each is measured against the float32 file of the same
    format, thread count and input size from the same run; files with no such float32 file,
    or no latency, get no note. ``int8``: ``cpu.Int8Features``; where the CPU has no int8 dot
    product, the note on an int8 file says so (that is why it is slow).

    Example: 'model_dynamic.tflite: dynamic-range is 2.13x slower than float32 here (29.6 vs
    13.9 ms p50 at batch 1, 2 thread(s)): prefer int8 (0.87x)'.
    """
    groups: dict = {}
    for f in files:
        lat = getattr(f, "latency", None)
        if lat is None or not getattr(lat, "p50_ms", 0) > 0:
            continue
        key = (f.format, getattr(f, "threads", None), tuple(getattr(f, "input_size", ()) or ()))
        groups.setdefault(key, []).append(f)
    notes = []
    for (fmt, threads, _), members in groups.items():
        ref = next((f for f in members if _word(f.precision) == "float32"), None)
        if ref is None:
            continue
        base = ref.latency.p50_ms
        best: dict[str, float] = {}
        for f in members:
            r = f.latency.p50_ms / base
            w = _word(f.precision)
            if w != "float32" and r < NOT_FASTER and r < best.get(w, float("inf")):
                best[w] = r
        faster = sorted(best.items(), key=lambda kv: kv[1])
        for f in members:
            w = _word(f.precision)
            if w == "float32":
                continue
            ratio = f.latency.p50_ms / base
            if ratio < NOT_FASTER:
                continue
            name = getattr(f, "name", None) or Path(f.path).name
            detail = f"{f.latency.p50_ms:.3g} vs {base:.3g} ms p50 at batch 1" + (f", {threads} thread(s)" if threads else "")
            if ratio <= 1 / NOT_FASTER:
                how = f"no faster than float32 here ({ratio:.2f}x, {detail})"
            else:
                how = f"{ratio:.2f}x slower than float32 here ({detail})"
            alternatives = [(p, r) for p, r in faster if p != w]
            advice = ("prefer " + " or ".join(f"{p} ({r:.2f}x)" for p, r in alternatives) if alternatives
                      else f"float32 is the fastest {fmt} file here")
            why = ""
            has_dot = getattr(int8, "has_int8_dot_product", None)
            if has_dot is False and getattr(f.precision, "value", f.precision) in INT8_PRECISIONS:
                why = f" (this CPU: {int8.summary()})"
            notes.append(SpeedNote(name=name, format=fmt, precision=str(getattr(f.precision, "value", f.precision)),
                                   threads=threads, p50_ms=f.latency.p50_ms, float32_p50_ms=base, ratio=ratio,
                                   prefer=tuple(p for p, _ in alternatives),
                                   text=f"{name}: {w} is {how}: {advice}{why}"))
    return notes


def speed_lines(notes) -> list[str]:
    """One terminal/report line per note (none when every file beat float32). The CPU's int8
    features are on the ``machine:`` line beside them (``SystemInfo.summary``)."""
    return [f"not faster than float32 here: {n.text}" for n in notes]


def result_rows(cmp):
    """The files to show, reference first when it is not one of the compared files (the
    Keras model, or a --reference file given beside them)."""
    out = list(cmp.models)
    if not any(m.is_reference for m in out):
        out.insert(0, cmp.reference)
    return out


def plot_accuracy(cmp, path) -> Path:
    """Accuracy against p50 latency and against file size, one labelled point per file."""
    from .._optional import require

    require("matplotlib", purpose="the report's accuracy plot")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=110)
    ax_lat, ax_size = fig.subplots(1, 2)
    markers = {"tflite": "o", "onnx": "s", "keras": "*"}
    colours = {"tflite": "tab:blue", "onnx": "tab:orange", "keras": "tab:green"}
    ref_acc = cmp.reference.parity.accuracy * 100
    labelled = []
    for ax, xkey, xlabel in ((ax_lat, "lat", "latency p50 at batch 1 (ms)"), (ax_size, "size", "file size (KB)")):
        points = []
        for m in result_rows(cmp):
            x = (m.latency.p50_ms if m.latency is not None else None) if xkey == "lat" else \
                (m.size_bytes / 1024 if m.size_bytes is not None else None)
            if x is not None:
                points.append((x, m.parity.accuracy * 100, f"{m.precision} {m.format}"))
                ax.scatter([x], [points[-1][1]], marker=markers.get(m.format, "o"),
                           color=colours.get(m.format, "tab:gray"), s=90 if m.format == "keras" else 45,
                           zorder=3, alpha=0.85)
        xs = [p[0] for p in points]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 30:
            ax.set_xscale("log")
        ax.margins(x=0.25, y=0.2)
        ax.axhline(ref_acc, color="tab:gray", linestyle="--", linewidth=0.8, label=f"reference {ref_acc:.2f}%")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        labelled.append((ax, points))
    threads = sorted({m.threads for m in cmp.models if m.threads is not None})
    fig.suptitle(f"{len(cmp.sources)} images; latency with {'/'.join(map(str, threads)) or 'default'} thread(s)"
                 + (f" on {cmp.system.cpu_model}" if cmp.system is not None else ""), fontsize=10)
    fig.tight_layout()
    for ax, points in labelled:  # after the layout is final, so label positions are measured right
        ax.autoscale_view()
        _place_labels(fig, ax, points)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _place_labels(fig, ax, items, *, fontsize: float = 8.0) -> None:
    """Label each point where the label overlaps no other label or point (greedy, in points
    on the page); a label pushed away from its point gets a thin line back to it."""
    to_pt = 72.0 / fig.dpi
    char_w, text_h = 0.62 * fontsize, 1.25 * fontsize
    pts = [tuple(v * to_pt for v in ax.transData.transform((x, y))) for x, y, _ in items]
    placed: list = [(px - 4, py - 4, px + 4, py + 4) for px, py in pts]  # the markers themselves
    bb = ax.get_window_extent()
    frame = (bb.x0 * to_pt, bb.y0 * to_pt, bb.x1 * to_pt, bb.y1 * to_pt)
    order = sorted(range(len(items)), key=lambda i: (pts[i][0], -pts[i][1]))
    for i in order:
        px, py = pts[i]
        text = items[i][2]
        w = char_w * len(text)
        near = [(6, 3), (6, -text_h - 1), (-w - 6, 3), (-w - 6, -text_h - 1)]
        far = [(dx, dy) for k in range(1, 8) for dy in (3 + k * text_h, -text_h - 1 - k * text_h)
               for dx in (6, -w - 6)]
        chosen = None
        for dx, dy in near + far:
            box = (px + dx, py + dy, px + dx + w, py + dy + text_h)
            if box[0] < frame[0] + 2 or box[2] > frame[2] - 2 or box[1] < frame[1] + 2 or box[3] > frame[3] - 2:
                continue  # outside the axes, over the tick labels
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for j, b in enumerate(placed) if j != i):
                chosen = (dx, dy)
                break
        if chosen is None:
            chosen = near[0]
        dx, dy = chosen
        placed.append((px + dx, py + dy, px + dx + w, py + dy + text_h))
        arrow = None if (dx, dy) in near else dict(arrowstyle="-", color="0.5", linewidth=0.6,
                                                   shrinkA=0, shrinkB=3)
        ax.annotate(text, (items[i][0], items[i][1]), textcoords="offset points", xytext=(dx, dy),
                    fontsize=fontsize, va="bottom", ha="left", arrowprops=arrow)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _short_name(src: str) -> str:
    """``class/file.png``: the file name alone repeats across class folders."""
    p = Path(src)
    name = f"{p.parent.name}/{p.name}" if p.parent.name else p.name
    return name if len(name) <= 30 else "..." + name[-27:]


def draw_flips(cmp, path, *, tile: int = 112, max_tiles: int = MAX_FLIP_TILES) -> Optional[Path]:
    """A grid with one tile per flipped image: the image, its true label, the reference's
    prediction and each file that disagreed. Red frame: a file broke a right answer; green:
    a file fixed a wrong one. Returns None when nothing flipped."""
    from PIL import Image, ImageDraw

    from ..runtime.preprocess import load_image

    by_index: dict[int, list] = {}
    for m in cmp.models:
        for f in m.parity.flips:
            by_index.setdefault(f.index, []).append((m, f))
    if not by_index:
        return None
    indices = sorted(by_index, key=lambda i: (-len(by_index[i]), i))[:max_tiles]
    font, small = _font(12), _font(11)
    lines_max = 5
    line_h = 14
    cell_w, cell_h = tile + 190, tile + 8 + line_h * lines_max
    cols = max(1, min(5, len(indices)))
    rows = (len(indices) + cols - 1) // cols
    header = 40
    canvas = Image.new("RGB", (max(cols * cell_w + 8, 640), header + rows * cell_h + 8), "white")
    draw = ImageDraw.Draw(canvas)
    more = len(by_index) - len(indices)
    draw.text((8, 8), f"{len(by_index)} image(s) whose top-1 changed against the reference "
                      f"({cmp.reference.name})" + (f"; first {len(indices)} shown" if more else ""),
              fill="black", font=font)
    draw.text((8, 8 + 14), "frame: red = a file broke a right answer, green = a file fixed a wrong one, "
                           "grey = both wrong", fill=(90, 90, 90), font=small)
    for k, i in enumerate(indices):
        r, c = divmod(k, cols)
        x0, y0 = 8 + c * cell_w, header + r * cell_h
        src = cmp.sources[i]
        try:
            img = Image.fromarray(load_image(src, (tile, tile)))
        except Exception:  # an image that decoded for the models decodes here; keep a grey tile if not
            img = Image.new("RGB", (tile, tile), (200, 200, 200))
        flips = by_index[i]
        broke = any(f.kind == "broke" for _, f in flips)
        frame = (200, 30, 30) if broke else (30, 150, 30) if any(f.kind == "fixed" for _, f in flips) \
            else (120, 120, 120)
        canvas.paste(img, (x0 + 3, y0 + 3))
        draw.rectangle([x0 + 1, y0 + 1, x0 + tile + 4, y0 + tile + 4], outline=frame, width=3)
        f0 = flips[0][1]
        text = [_short_name(src), f"true: {f0.true_label}",
                f"ref:  {f0.reference_label} {f0.reference_confidence:.2f}"]
        for m, f in flips:
            text.append(f"{m.precision} {m.format}: {f.label} {f.confidence:.2f}")
        if len(text) > lines_max + 3:
            text = text[:lines_max + 2] + [f"+{len(text) - lines_max - 2} more"]
        for j, line in enumerate(text[:lines_max + 3]):
            draw.text((x0 + tile + 10, y0 + 4 + j * line_h), line[:30], fill="black", font=small)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def render_markdown(cmp, *, plot: Optional[str], plot_note: str = "", flips_png: Optional[str] = None) -> str:
    """The report as Markdown text (file names of the pictures are relative to it)."""
    ref = cmp.reference
    out = ["# edgeclf comparison report", ""]
    threads = sorted({m.threads for m in cmp.models if m.threads is not None})
    out += [
        f"- data: `{cmp.data}`, {len(cmp.sources)} images, {len(cmp.labels)} classes"
        + (f" ({len(cmp.skipped)} unreadable file(s) skipped)" if cmp.skipped else ""),
        f"- reference: `{ref.name}` ({ref.format} {ref.precision}), accuracy {_pct(ref.parity.accuracy)}",
        f"- latency: batch 1, {'/'.join(map(str, threads)) or 'default'} engine thread(s), warm-up then "
        "p50/p90/p99 over timed runs",
        f"- memory: {MEMORY_NOTE}",
    ]
    if cmp.system is not None:
        out.append(f"- machine: {cmp.system.summary()}")
    gates = cmp.models[0].parity if cmp.models else None
    if gates is not None and (gates.max_accuracy_drop is not None or gates.min_agreement is not None):
        g = []
        if gates.max_accuracy_drop is not None:
            g.append(f"accuracy drop <= {gates.max_accuracy_drop:g} points")
        if gates.min_agreement is not None:
            g.append(f"agreement >= {gates.min_agreement:g}")
        out.append(f"- gates: {' and '.join(g)}: **{'all passed' if cmp.passed else 'FAILED'}**")
    out += ["", "## Results", ""]
    headers = ["file", "format", "precision", "size", "memory", "accuracy", "Δ vs ref (points)", "agreement",
               "max abs prob diff", "mean abs prob diff", "flipped", "load ms", "p50 ms", "p90 ms", "p99 ms",
               "threads", "gate"]
    rows = []
    for m in result_rows(cmp):
        p, lat = m.parity, m.latency
        gate = "reference" if m is cmp.reference else ("pass" if m.passed else "FAIL: " + "; ".join(p.failures))
        rows.append([f"`{m.name}`" + (" (ref)" if m.is_reference else ""), m.format, m.precision,
                     _human(m.size_bytes), _memory(m), _pct(p.accuracy), _num(p.accuracy_delta, "+.2f"),
                     _pct(p.agreement),
                     _num(p.max_abs_diff, ".4f"), _num(p.mean_abs_diff, ".5f"), len(p.flips),
                     _num(m.load_ms, ".0f"), _num(getattr(lat, "p50_ms", None), ".3f"),
                     _num(getattr(lat, "p90_ms", None), ".3f"), _num(getattr(lat, "p99_ms", None), ".3f"),
                     "-" if m.threads is None else m.threads, gate])
    out += [_md_table(headers, rows), ""]
    notes = speed_notes(cmp.models, int8=getattr(cmp.system, "int8", None))
    if notes:
        int8 = getattr(cmp.system, "int8", None)
        out += ["## Files not faster than float32 on this machine", ""] + [f"- {n.text}" for n in notes]
        out += ([f"- this CPU: {int8.summary()}"] if int8 is not None else []) + [""]
    out += ["## Accuracy against latency and size", ""]
    if plot:
        out += [f"![accuracy against latency and file size]({plot})", ""]
    else:
        out += [f"_Plot not drawn: {plot_note}_", ""]
    out += ["## Accuracy per class", "",
            "Accuracy of the reference per class, and each file's difference from it in percentage points.", ""]
    out += [_md_table(*per_class_rows(cmp)), ""]
    out += ["## Flipped images", ""]
    total = sum(len(m.parity.flips) for m in cmp.models)
    if not total:
        out += ["No image's top-1 prediction changed against the reference in any file.", ""]
    else:
        out += ["Images whose top-1 prediction differs from the reference's. `broke`: the reference was "
                "right and the file is wrong; `fixed`: the reverse.", ""]
        if flips_png:
            out += [f"![flipped images]({flips_png})", ""]
        rows = []
        for m in cmp.models:
            for f in m.parity.flips:
                rows.append([f"`{m.name}`", f"`{_short_name(f.source) if f.source else f.index}`", f.true_label,
                             f"{f.reference_label} ({f.reference_confidence:.2f})", f"{f.label} ({f.confidence:.2f})",
                             f.kind])
        shown = rows[:200]
        out += [_md_table(["file", "image", "true", "reference", "this file", "kind"], shown), ""]
        if len(rows) > len(shown):
            out += [f"... and {len(rows) - len(shown)} more (all are in comparison.json).", ""]
    if cmp.skipped:
        out += ["## Skipped files", ""] + [f"- `{p}`: {r}" for p, r in cmp.skipped] + [""]
    return "\n".join(out)


def write_report(cmp, out_dir) -> Path:
    """Write report.md, comparison.json and the pictures into ``out_dir``; return report.md's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot, note = None, ""
    try:
        plot_accuracy(cmp, out / PLOT_NAME)
        plot = PLOT_NAME
    except MissingDependencyError as exc:
        note = str(exc)
        # Said where the user is looking, not only inside report.md.
        log.warning(f"the report's plot {PLOT_NAME} was not drawn: {note}")
        stale = out / PLOT_NAME
        if stale.exists():  # a plot from an earlier run would contradict this report
            stale.unlink()
    flips = draw_flips(cmp, out / FLIPS_NAME)
    if flips is None and (out / FLIPS_NAME).exists():
        (out / FLIPS_NAME).unlink()
    write_json(out / "comparison.json", cmp.to_dict())
    return write_text(out / "report.md", render_markdown(cmp, plot=plot, plot_note=note,
                                                         flips_png=FLIPS_NAME if flips else None))


def comparison_table(cmp) -> str:
    """The terminal table: one row per file, reference first."""
    from .._term import format_table, human_bytes

    rows = []
    for m in result_rows(cmp):
        p, lat = m.parity, m.latency
        rows.append([
            m.name + (" (ref)" if m.is_reference else ""), m.format, m.precision,
            human_bytes(m.size_bytes) if m.size_bytes is not None else "-", _memory(m),
            _num(p.accuracy * 100, ".2f") + "%", _num(p.accuracy_delta, "+.2f"), _num(p.agreement * 100, ".2f") + "%",
            _num(p.max_abs_diff, ".4f"), str(len(p.flips)), _num(m.load_ms, ".0f"),
            _num(getattr(lat, "p50_ms", None), ".2f"), _num(getattr(lat, "p90_ms", None), ".2f"),
            _num(getattr(lat, "p99_ms", None), ".2f"), "-" if m.threads is None else str(m.threads),
            "ref" if m is cmp.reference else ("ok" if m.passed else "FAIL"),
        ])
    headers = ["file", "format", "precision", "size", "memory", "accuracy", "Δ pts", "agree", "max|Δp|", "flips",
               "load ms", "p50 ms", "p90 ms", "p99 ms", "threads", "gate"]
    return format_table(headers, rows, align="lllrrrrrrrrrrrrl")


def per_class_rows(cmp) -> tuple[list[str], list[list]]:
    """Classes down, files across: the reference's accuracy per class and each file's
    difference from it in points. The one source of the per-class table (terminal and report)."""
    models = [m for m in cmp.models if not m.is_reference]
    headers = ["class", "images", "reference"] + [f"{m.precision} {m.format}" for m in models]
    rows = []
    for ci, label in enumerate(cmp.labels):
        rc = cmp.reference.parity.per_class[ci]
        rows.append([label, rc.count, _pct(rc.accuracy)] + [_num(m.parity.per_class[ci].delta, "+.1f") for m in models])
    return headers, rows


def per_class_table(cmp) -> str:
    from .._term import format_table

    headers, rows = per_class_rows(cmp)
    return format_table(headers, rows)


__all__ = ["write_report", "render_markdown", "speed_notes", "speed_lines", "SpeedNote", "plot_accuracy", "draw_flips", "comparison_table", "per_class_table"]


def comparison_json(cmp) -> dict:
    """What ``compare --json`` and ``edgeclf run``'s compare.json hold: the comparison and the
    files not faster than float32 on this machine."""
    notes = speed_notes(cmp.models, int8=getattr(cmp.system, "int8", None))
    return {**cmp.to_dict(), "speed_notes": [n.to_dict() for n in notes]}
