"""Class-per-folder datasets: ``root/<class>/**/<image>``, class names sorted as Keras sorts them.

Scanning only lists files; decoding (and so finding the unreadable ones) is the cache's job.
Hidden files and folders (``.DS_Store``, ``.git``) are ignored, symlinked folders and files are
followed only inside their own class folder (folders once; a link up the tree or out of it is
listed as ignored), a file reached twice through links keeps its first label only, files whose
suffix is not an image suffix are listed as ignored rather than read, and a class folder whose
name holds a control character (a newline, ESC) is refused: it would become a label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .._term import has_control_character, printable
from ..errors import DataError
from ..runtime.preprocess import IMAGE_SUFFIXES, is_image_file


@dataclass(frozen=True)
class ImageFolder:
    """What a scan of a class-per-folder directory found.

    ``files`` holds ``(absolute path, label index)`` in a stable order (class, then path);
    ``ignored`` holds ``(path, reason)`` for files that were not considered images.
    """

    root: Path
    class_names: tuple[str, ...]
    files: tuple[tuple[str, int], ...]
    ignored: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.files]

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.files]

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in self.class_names}
        for _, y in self.files:
            out[self.class_names[y]] += 1
        return out


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk_images(top: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """All image files below ``top``. A symlinked folder is followed only when it points inside
    ``top`` itself (each real folder once): a link up the tree or out to ``/usr`` would give
    files two labels or pull foreign images into the class; it is listed as ignored."""
    images: list[str] = []
    ignored: list[tuple[str, str]] = []
    base = os.path.realpath(top)
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        kept = []
        for d in sorted(dirnames):
            if _hidden(d):
                continue
            sub = os.path.join(dirpath, d)
            target = os.path.realpath(sub)
            if os.path.islink(sub) and not _inside(target, base):
                ignored.append((os.path.abspath(sub), f"symlink to a folder outside its class folder ({target}); "
                                "not followed"))
                continue
            if target in seen:
                continue  # a link back up the tree: a loop
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if _hidden(name):
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), base):
                # as with folders: a link out of the class folder would pull in foreign files
                ignored.append((os.path.abspath(path), f"symlink to a file outside its class folder "
                                f"({os.path.realpath(path)}); not followed"))
            elif is_image_file(name):
                images.append(os.path.abspath(path))
            else:
                ignored.append((os.path.abspath(path), "not an image suffix "
                                f"(reads {', '.join(IMAGE_SUFFIXES)})"))
    images.sort()
    return images, ignored


def list_classes(root) -> list[str]:
    """The class folder names under ``root``, sorted (hidden folders skipped)."""
    root = Path(root)
    return sorted(e.name for e in os.scandir(root) if not _hidden(e.name) and e.is_dir())


def scan_folder(root, *, what: str = "data directory") -> ImageFolder:
    """List the images of a class-per-folder directory.

    Raises:
        DataError: the directory is missing or empty, holds images but no class folders,
            has fewer than two classes, or a class folder has no images.

    Example:
        >>> folder = scan_folder("flower_photos")          # doctest: +SKIP
        >>> folder.class_names[:2], len(folder.files)
        (('daisy', 'dandelion'), 3670)
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a directory; give a folder with one subfolder per class")
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        raise DataError(f"cannot read {what} {root} ({exc.strerror or exc})") from None
    root = root.resolve()
    classes = sorted(e.name for e in entries if not _hidden(e.name) and e.is_dir())
    for name in classes:
        if has_control_character(name):
            # The name becomes a label: printed, written one per line in labels files, shown by apps.
            raise DataError(f"{what} {printable(root)}: the class folder name '{printable(name)}' holds a control "
                            "character (a newline, an escape, ...); rename the folder to a plain name")
    loose = [e.name for e in entries if not _hidden(e.name) and e.is_file() and is_image_file(e.name)]
    if not classes:
        if loose:
            raise DataError(
                f"{what} {root} holds {len(loose)} image{'s' if len(loose) != 1 else ''} but no class folders; the likely mistake "
                f"is pointing at one class's folder, or images not yet sorted: put each class's "
                f"images in its own subfolder ({root}/<class>/image.jpg)"
            )
        raise DataError(f"{what} {root} is empty; it needs one subfolder of images per class")
    files: list[tuple[str, int]] = []
    ignored: list[tuple[str, str]] = [(str(root / n), "image at the top level, outside any class folder")
                                      for n in sorted(loose)]
    empty = []
    owner: dict[str, str] = {}  # real file -> the class it was first found in
    for label, name in enumerate(classes):
        images, skipped = _walk_images(root / name)
        ignored += skipped
        unique = []
        class_real = os.path.realpath(root / name)
        for p in images:
            real = os.path.realpath(p)
            if _inside(real, str(root)) and not _inside(real, class_real):
                # a link to another class's file: that file keeps its own label
                ignored.append((p, f"a link to {real}, a file of another class; a file has one label"))
                continue
            if real in owner:  # a link to a file listed already: one file, one label
                ignored.append((p, f"the same file as one in class {owner[real]!r} (a link); a file has one label"))
                continue
            owner[real] = name
            unique.append(p)
        images = unique
        if not images:
            empty.append(name)
        files += [(p, label) for p in images]
    if empty:
        raise DataError(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(repr(n) for n in empty)} in {root} "
            f"{'hold' if len(empty) > 1 else 'holds'} no images; add images or remove the folder"
        )
    if len(classes) < 2:
        raise DataError(
            f"{what} {root} has one class ({classes[0]!r}); a classifier needs at least two class folders"
        )
    return ImageFolder(root=root, class_names=tuple(classes), files=tuple(files), ignored=tuple(ignored))


def drop_bad(folder: ImageFolder, bad: dict[str, str], *, what: str = "data directory") -> ImageFolder:
    """``folder`` without the files in ``bad``; raises DataError when a class is left empty."""
    files = tuple((p, y) for p, y in folder.files if p not in bad)
    kept = {y for _, y in files}
    empty = [n for i, n in enumerate(folder.class_names) if i not in kept]
    if empty:
        raise DataError(
            f"class{'es' if len(empty) > 1 else ''} {', '.join(repr(n) for n in empty)} in {what} "
            f"{folder.root} {'have' if len(empty) > 1 else 'has'} no readable images left after "
            f"skipping {len(bad)} unreadable file(s); see the list above"
        )
    return ImageFolder(root=folder.root, class_names=folder.class_names, files=files, ignored=folder.ignored)
