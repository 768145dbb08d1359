"""The docs run: every ```bash, ```sh, ```console and ```python block of README.md and docs/*.md.

A block runs as a user would paste it into a terminal opened in a folder that holds the files the
docs name (`photo.jpg`, `photos/`, `shapes`, `runs/shapes`, `export/shapes`, `model.keras`):
shell blocks in bash with `set -e` (the first failing line fails the block), ```console blocks
their `$ ` lines, Python blocks with this venv's python (those that import mediapipe with
.venv-clients'). The blocks of one file run in order in
one folder, so a later block sees what an earlier one wrote. A file gets a copy of each placeholder
it names and does not make itself (`edgeclf data synth shapes`, `--out runs/shapes`, ...); the
placeholders are made once, with the documented commands, and shared.

Output goes in ```text blocks (never run). A block that cannot run here (another machine, a
phone, the network) is preceded by `<!-- docs-test: skip: REASON -->`; the fast tests below fail
on a skip without a reason, on a fence with no language, on a broken relative link and on a README
over 15 KB. The docs' commands run verbatim except for the heavy defaults in REWRITES, each listed
with its reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_LIMIT = 15 * 1024
RUN_LANGS = {"bash": "shell", "sh": "shell", "shell": "shell", "console": "console", "python": "python"}
# Languages that are shown, never run: output, and code for other platforms.
SHOWN_LANGS = {"text", "kotlin", "swift", "java", "objc", "json", "toml", "yaml", "ini", "groovy", "diff",
               "markdown", "dockerfile"}
SKIP_RE = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*:?(.*?)-->\s*$")
BLOCK_TIMEOUT_S = 600  # a hang guard only: the slowest block (edgeclf run) takes about a minute here

# The only changes the test makes to documented commands: options appended to the heavy
# defaults, so the docs run in minutes on 2 CPU cores. (`edgeclf train` keeps its 20 epochs:
# on 120 small images they take seconds, and after them the export's check stage delivered
# every file in the runs measured here; after 2 epochs it kept QAT files out.) Click takes the last value of an
# option, so an appended option wins over one the docs wrote. (pattern at the start of a
# command, options appended, why)
REWRITES = [
    (r"edgeclf data synth\b", "--per-class 30 --size 32",
     "the default 5 x 300 images of 64 px make every training after them take minutes"),
    (r"edgeclf run\b(?!.*\s(-h|--help)\b)", "--per-class 12 --image-size 32 --epochs 1",
     "the default main job (5 x 600 images, 20 epochs) takes minutes; its figures are measured in docs/figures.md"),
    (r"edgeclf bench\b", "--seconds 0.2", "2 s per file and thread count, for figures nobody reads here"),
]

# Gates in the docs are sized for the default data (5 x 600 images, 20 epochs: int8 files agree
# with the Keras model on 99.5% of the images there, docs/figures.md). The test's model learns
# from 120 images and is near chance, where int8 rounding flips near-ties, so a gate may
# miss on it: such a command must still run and evaluate its gates (exit 1 with only `FAIL
# <file>: <gate>` lines); the miss is reported, not failed. Nothing else is let through.
GATED = r"edgeclf compare\b.*\s--(min-agreement|max-accuracy-drop)\b"
GATE_FUNCTION = r"""docs_gate() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  printf '%s\n' "$out"
  if [ "$rc" -eq 1 ] && printf '%s\n' "$out" | grep -Eq '^FAIL [^:]+: (agreement .* is below|accuracy dropped)' \
     && ! printf '%s\n' "$out" | grep -q '^Error:'; then
    echo "DOCS_TEST_GATE_MISSED $*" >&2
    return 0
  fi
  return "$rc"
}"""

# The placeholders the docs may name, and the documented commands that make them (run through
# REWRITES like any block). A file that makes one itself gets no copy.
PLACEHOLDERS = {
    "shapes": "edgeclf data synth shapes",
    "runs/shapes": "edgeclf train shapes --out runs/shapes",
    "export/shapes": "edgeclf export runs/shapes --out export/shapes",
    "photo.jpg": None,
    "photos": None,
    "model.keras": None,
}
NEEDS = {"runs/shapes": ["shapes"], "export/shapes": ["runs/shapes"], "photo.jpg": ["shapes"],
         "photos": ["shapes"], "model.keras": ["shapes"]}

# MediaPipe cannot live beside tensorflow-model-optimization (absl-py 2 against 1), so the README's
# install puts it in .venv-clients; a Python block that imports it runs there, as
# tests/test_phone_clients.py runs the real client (EDGECLF_MEDIAPIPE_PYTHON overrides).
CLIENTS_PYTHON = REPO / ".venv-clients" / "bin" / "python"
USES_CLIENTS_VENV = re.compile(r"^\s*(import|from)\s+mediapipe\b", re.M)


def python_for(block: Block) -> str:
    if not USES_CLIENTS_VENV.search("\n".join(block.lines)):
        return sys.executable
    exe = os.environ.get("EDGECLF_MEDIAPIPE_PYTHON") or str(CLIENTS_PYTHON)
    if not Path(exe).is_file():
        pytest.fail(f"{block.where} imports mediapipe, which lives in {exe}; run the README's install command "
                    "(it makes .venv-clients) or set EDGECLF_MEDIAPIPE_PYTHON")
    return exe


# A tiny Keras 3 model of the kind a user brings: trained a little on `shapes`, so its
# quantized files do not collapse to one class.
MAKE_MODEL_KERAS = """
import keras
train = keras.utils.image_dataset_from_directory("shapes", image_size=(32, 32), batch_size=32, seed=1)
model = keras.Sequential([
    keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
    keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Flatten(), keras.layers.Dense(len(train.class_names)),
])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(train, epochs=3, verbose=0)
model.save("model.keras")
"""


@dataclass(frozen=True)
class Block:
    path: str       # relative to the repository, for messages
    number: int     # 1-based, counting every fenced block of the file
    line: int       # the line of the opening fence
    lang: str
    lines: tuple[str, ...]
    skip: str | None = None  # the reason, when a skip comment precedes the block

    @property
    def where(self) -> str:
        return f"{self.path}, block {self.number} (```{self.lang} at line {self.line})"

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGS and self.skip is None


@dataclass
class Parsed:
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def parse_blocks(path: Path) -> Parsed:
    """Every fenced block of a Markdown file, with the skip comment before it, if any."""
    out = Parsed()
    lines = path.read_text(encoding="utf-8").splitlines()
    i, number, pending_skip = 0, 0, None
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)", lines[i])
        skip = SKIP_RE.match(lines[i])
        if skip:
            if pending_skip is not None:
                out.problems.append(f"{rel(path)}:{pending_skip[0]}: a docs-test skip comment not followed by a block")
            pending_skip = (i + 1, skip.group(1).strip())
        elif m:
            indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
            number += 1
            body, j = [], i + 1
            while j < len(lines) and not re.match(rf"^\s*{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
                j += 1
            if j == len(lines):
                out.problems.append(f"{rel(path)}:{i + 1}: block {number} is never closed")
            reason = None
            if pending_skip is not None:
                reason = pending_skip[1]
                if not reason:
                    out.problems.append(f"{rel(path)}:{pending_skip[0]}: a docs-test skip without a reason; "
                                        "write <!-- docs-test: skip: WHY IT CANNOT RUN HERE -->")
                pending_skip = None
            if not lang:
                out.problems.append(f"{rel(path)}:{i + 1}: block {number} names no language; write ```text for "
                                    "output or a synopsis, ```bash or ```python for what runs")
            elif lang not in RUN_LANGS and lang not in SHOWN_LANGS:
                out.problems.append(f"{rel(path)}:{i + 1}: block {number} is ```{lang}, which the docs test neither "
                                    f"runs ({', '.join(sorted(RUN_LANGS))}) nor knows as shown-only "
                                    f"({', '.join(sorted(SHOWN_LANGS))})")
            elif reason is not None and lang not in RUN_LANGS:
                out.problems.append(f"{rel(path)}:{i + 1}: a docs-test skip before a ```{lang} block, which never runs")
            out.blocks.append(Block(rel(path), number, i + 1, lang, tuple(body), reason))
            i = j
        elif pending_skip is not None and lines[i].strip():
            out.problems.append(f"{rel(path)}:{pending_skip[0]}: a docs-test skip comment must come right before "
                                "its block (only blank lines between)")
            pending_skip = None
        i += 1
    if pending_skip is not None:
        out.problems.append(f"{rel(path)}:{pending_skip[0]}: a docs-test skip comment not followed by a block")
    return out


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """The block's commands as a shell reads them: `\\`-continued lines joined, each with the
    Markdown line it starts on. For ```console, only the `$ ` lines (and their continuations)."""
    out, current, start = [], None, 0
    for k, raw in enumerate(block.lines):
        doc_line = block.line + 1 + k
        text = raw
        if current is None:
            if block.lang == "console":
                if not raw.lstrip().startswith("$ "):
                    continue  # output
                text = raw.lstrip()[2:]
            current, start = "", doc_line
        if text.rstrip().endswith("\\"):
            current += text.rstrip()[:-1] + " "
        else:
            out.append((start, current + text))
            current = None
    if current is not None:
        out.append((start, current))
    return out


def rewrite(command: str) -> str:
    """``command`` with REWRITES' options appended (before a trailing comment)."""
    body, comment = command, ""
    m = re.search(r"\s+#[^'\"]*$", command)
    if m:
        body, comment = command[:m.start()], command[m.start():]
    for pattern, extra, _why in REWRITES:
        if re.match(rf"\s*{pattern}", body):
            body = f"{body.rstrip()} {extra}"
    return body + comment


def shell_script(block: Block) -> tuple[str, dict[int, int]]:
    """A bash script for the block and, per script line, the Markdown line it came from."""
    head = ["set -e", *GATE_FUNCTION.splitlines(), "trap 'echo \"DOCS_TEST_FAILED_AT $LINENO\" >&2' ERR"]
    lines, where = list(head), {}
    for doc_line, command in logical_lines(block):
        command = rewrite(command)
        lines.append(f"docs_gate {command.lstrip()}" if re.match(rf"\s*{GATED}", command) else command)
        where[len(lines)] = doc_line
    return "\n".join(lines) + "\n", where


def created_by(blocks: list[Block]) -> set[str]:
    """The placeholders a file makes itself (`data synth NAME`, `--out NAME`)."""
    made = set()
    for b in blocks:
        if not b.runs:
            continue
        text = "\n".join(c for _, c in logical_lines(b)) if b.lang != "python" else "\n".join(b.lines)
        for m in re.finditer(r"(?:data synth|--out)\s+(\S+)", text):
            made.add(m.group(1).rstrip("/"))
    return made


def named_by(blocks: list[Block]) -> set[str]:
    text = "\n".join("\n".join(b.lines) for b in blocks if b.runs)
    return {p for p in PLACEHOLDERS if re.search(rf"(?<![\w/.-]){re.escape(p)}(?![\w.-])", text)}


def block_env(cache: Path) -> dict[str, str]:
    """A user's shell: the venv first on PATH, this checkout importable, none of the test
    process's TensorFlow settings (conftest selects Keras 2; a user's Python has Keras 3)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "PYTEST_CURRENT_TEST", "PYTHONPATH")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env["EDGECLF_CACHE_DIR"] = str(cache)
    env["MPLBACKEND"] = "Agg"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Run one block in ``cwd``; fail naming the file, the block and the line."""
    if block.lang == "python":
        script = cwd / f".docs_block_{block.number}.py"
        script.write_text("\n".join(block.lines) + "\n", encoding="utf-8")
        argv, where = [python_for(block), str(script)], None
    else:
        text, where = shell_script(block)
        script = cwd / f".docs_block_{block.number}.sh"
        script.write_text(text, encoding="utf-8")
        argv = ["bash", str(script)]
    started = time.monotonic()  # reported, never asserted: what each block costs the suite
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT_S} s")
    finally:
        script.unlink(missing_ok=True)
    print(f"{block.where}: exit {res.returncode} in {time.monotonic() - started:.1f} s")
    for missed in re.findall(r"DOCS_TEST_GATE_MISSED (.*)", res.stderr):
        print(f"{block.where}: a gate missed on the test's near-chance model (see GATED): {missed}")
    if res.returncode == 0:
        return
    line = block.line
    if where is not None:
        m = re.findall(r"DOCS_TEST_FAILED_AT (\d+)", res.stderr)
        line = where.get(int(m[-1]), block.line) if m else block.line
    else:
        m = re.findall(rf'File "{re.escape(str(script))}", line (\d+)', res.stderr)
        line = block.line + int(m[-1]) if m else block.line
    doc_text = (REPO / block.path).read_text(encoding="utf-8").splitlines()[line - 1].strip()
    tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-40:])
    pytest.fail(f"{block.where}: line {line} failed (exit {res.returncode}): {doc_text}\n"
                f"--- last lines of its output ---\n{tail}", pytrace=False)


class Placeholders:
    """The shared placeholder files, each made once (on first use) with the documented commands."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str) -> Path:
        target = self.root / name
        if target.exists():
            return target
        for need in NEEDS.get(name, []):
            self.get(need)
        if name == "photo.jpg":
            shutil.copy(self._images()[0], target)
        elif name == "photos":
            target.mkdir()
            for k, img in enumerate(self._images()[:4]):
                shutil.copy(img, target / f"{k}_{img.name}")
        elif name == "model.keras":
            self._run(Block("(the test's model.keras)", 0, 0, "python", tuple(MAKE_MODEL_KERAS.splitlines())))
        else:
            self._run(Block(f"(the test's {name})", 0, 0, "bash", (PLACEHOLDERS[name],)))
        assert target.exists(), f"making the placeholder {name} did not write {target}"
        return target

    def _images(self) -> list[Path]:
        shapes = self.root / "shapes"
        return [sorted(d.iterdir())[0] for d in sorted(shapes.iterdir()) if d.is_dir()]

    def _run(self, block: Block) -> None:
        if block.lang == "python":
            res = subprocess.run([sys.executable, "-c", "\n".join(block.lines)], cwd=self.root, env=self.env,
                                 capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        else:
            res = subprocess.run(["bash", "-e", "-c", rewrite(block.lines[0])], cwd=self.root, env=self.env,
                                 capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        if res.returncode:
            pytest.fail(f"making {block.path} failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")

    def adopt(self, workspace: Path, names: set[str]) -> None:
        """Keep what a file made with the documented commands, so later files need not make it again."""
        for name in names & {"shapes", "runs/shapes", "export/shapes"}:
            src, dst = workspace / name, self.root / name
            if src.is_dir() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(src, dst, symlinks=True)


# ---------------------------------------------------------------- fast: the docs' shape

def test_blocks_are_well_formed():
    problems = [p for f in doc_files() for p in parse_blocks(f).problems]
    assert not problems, "\n".join(problems)


def test_skipped_blocks_say_why():
    skipped = [b for f in doc_files() for b in parse_blocks(f).blocks if b.skip is not None]
    assert all(b.skip for b in skipped), [b.where for b in skipped if not b.skip]
    # The list is part of the test's record (pytest -rA shows it).
    print("blocks the docs test does not run, and why:")
    for b in skipped:
        print(f"  {b.where}: {b.skip}")


def test_readme_is_a_front_page():
    size = (REPO / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size:,} bytes; keep it under {README_LIMIT:,} and move detail to docs/"


def anchors(path: Path) -> set[str]:
    """The forge's anchors for the headings of a Markdown file (GitHub's rule: lower case,
    punctuation dropped, spaces to hyphens)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M):
        out.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return out


def test_relative_links_resolve():
    broken = []
    for f in doc_files():
        text = re.sub(r"```.*?```", "", f.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            path = (f.parent / file_part).resolve() if file_part else f
            if not path.exists():
                broken.append(f"{rel(f)}: ({target}): no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{rel(f)}: ({target}): {rel(path)} has no heading with the anchor #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_counts_in_the_docs_are_the_code_s():
    """A count the docs state is checked against the code it describes (the files a default
    export plans; the check stage may keep some out on a given model, which the docs say)."""
    from edgeclf.export.converters import plan_jobs

    planned = [j for j in plan_jobs()[0] if j.deliver]
    stated = re.search(r"the (\d+) default format and precision pairs", (REPO / "README.md").read_text(encoding="utf-8"))
    assert stated, "README.md no longer states the default export's file count; update this test"
    assert int(stated.group(1)) == len(planned), \
        f"README.md says {stated.group(0)!r}; a default export plans {len(planned)}: {planned}"


def test_rewrites_append_before_a_comment():
    assert rewrite("edgeclf data synth shapes   # or yours") == "edgeclf data synth shapes --per-class 30 --size 32   # or yours"
    assert rewrite("edgeclf train -h") == "edgeclf train -h"
    assert rewrite("edgeclf predict m.tflite photo.jpg") == "edgeclf predict m.tflite photo.jpg"


def test_only_gate_misses_are_let_through(tmp_path):
    """docs_gate passes a gate miss (exit 1, FAIL lines) and nothing else."""
    cases = {
        "printf 'FAIL m.tflite: agreement 0.9 is below 0.97\\n'; exit 1": 0,
        "printf 'FAIL m.tflite: agreement 0.9 is below 0.97\\nError: bad\\n'; exit 1": 1,
        "echo 'Error: no such file'; exit 1": 1,
        "printf 'FAIL m.tflite: agreement 0.9 is below 0.97\\n'; exit 2": 2,
    }
    for body, rc in cases.items():
        script = f"{GATE_FUNCTION}\ncmd() {{ {body}; }}\ndocs_gate cmd"
        assert subprocess.run(["bash", "-c", script], capture_output=True).returncode == rc, body


def test_console_blocks_run_only_their_commands():
    b = Block("x.md", 1, 10, "console", ("$ edgeclf models \\", "    --json -", "output line", "$ ls"))
    assert logical_lines(b) == [(11, "edgeclf models      --json -"), (14, "ls")]


# ---------------------------------------------------------------- slow: every block runs

@pytest.fixture(scope="session")
def docs_env(tmp_path_factory):
    return block_env(tmp_path_factory.mktemp("docs-cache"))


@pytest.fixture(scope="session")
def placeholders(tmp_path_factory, docs_env):
    return Placeholders(tmp_path_factory.mktemp("docs-placeholders"), docs_env)


@pytest.mark.slow
@pytest.mark.parametrize("doc", [rel(f) for f in doc_files()])
def test_every_block_runs(doc, tmp_path, placeholders, docs_env):
    parsed = parse_blocks(REPO / doc)
    runnable = [b for b in parsed.blocks if b.runs]
    made = created_by(runnable)
    for name in sorted(named_by(runnable) - made):
        dst = tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = placeholders.get(name)
        (shutil.copytree(src, dst, symlinks=True) if src.is_dir() else shutil.copy(src, dst))
    for block in runnable:
        run_block(block, tmp_path, docs_env)
    placeholders.adopt(tmp_path, made)
