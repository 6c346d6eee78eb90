"""Listing a folder of people, ``root/<person>/<image>``, without PyTorch.

:class:`~siamkit.data.FaceFolder` (a torchvision ``ImageFolder``),
:meth:`~siamkit.FaceIndex.add_folder`, ``siamkit eval`` and ``siamkit index
build`` all list a folder with :func:`list_image_folder`, so they see the same
classes (sorted folder names), the same images in the same order (each class
folder walked as ``sorted(os.walk(...))`` walks it) and leave out the same
files, each with its reason (:attr:`FolderListing.skipped`).

Which files are images:

* a file whose extension is one of :data:`siamkit._images.IMAGE_EXTENSIONS`
  (Pillow's names for JPEG, PNG, GIF, BMP, TIFF, WebP and the PNM family,
  ``.jfif`` and ``.jpe`` included); it is not opened while listing;
* a file of another extension whose first bytes are one of those formats (a
  JPEG saved as ``.HEIC``): Pillow reads by content, so it is listed too;
* any other file in a class folder is left out and reported (an HEIF, a text
  file, a pipe), except hidden files and the system's own (``Thumbs.db``).

Links are followed once, and never out of a person's folder: every real file
and every real folder is listed once, under the path the walk reaches it by
without links when there is one. A person's folder may itself be a link (a
gallery put together from folders kept elsewhere): it is that person's folder
wherever it lies. A link is left out, and reported, when it is broken, loops
back to a folder holding it, leads out of the (real) folder of the person it
is in, or reaches a file or folder listed already. So a link loop cannot list
an image many times, a link cannot make one person's photo another's, and a
link planted in a person's folder cannot enrol a file from elsewhere.
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from siamkit._images import is_image_file
from siamkit.exceptions import ConfigError, DataError

#: Files the system puts in folders of pictures: never reported.
SYSTEM_FILES = frozenset({"Thumbs.db", "ehthumbs.db", "desktop.ini", "Icon\r"})


@dataclass(frozen=True)
class SkippedFile:
    """A file or link of an image folder that the listing left out, and why.

    Examples:
        >>> SkippedFile("faces/ann/notes.txt", "not an image siamkit reads").reason
        'not an image siamkit reads'
    """

    path: str
    reason: str


@dataclass(frozen=True)
class FolderListing:
    """The images of a folder of people, in dataset order.

    Attributes:
        root: The folder, as given (the paths start with it).
        classes: The class (person) folder names, sorted; a label is a position here.
        paths: Every image file, class by class.
        labels: The class of each image, an index into ``classes``.
        skipped: The files and links left out, with the reason (see the module's rules).
        groups: In the grouped layout, each class's group (``classes`` are then
            ``"<group>/<class>"``, as Omniglot's ``<alphabet>/<character>``); None
            in the flat one.

    Examples:
        >>> listing = FolderListing("faces", ["ann", "bob"], ["faces/ann/1.png"], [0])
        >>> listing.counts
        {'ann': 1, 'bob': 0}
    """

    root: str
    classes: list[str]
    paths: list[str]
    labels: list[int]
    skipped: list[SkippedFile] = field(default_factory=list)
    groups: list[str] | None = None

    @property
    def layout(self) -> str:
        """``"flat"`` (``root/<class>/<image>``) or ``"grouped"`` (``<group>/<class>/<image>``)."""
        return "flat" if self.groups is None else "grouped"

    @property
    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counts = dict.fromkeys(self.classes, 0)
        for label in self.labels:
            counts[self.classes[label]] += 1
        return counts


def list_image_folder(
    root: str | os.PathLike, min_images_per_class: int = 1, layout: str = "flat"
) -> FolderListing:
    """List ``root/<person>/<image>`` as torchvision's ``ImageFolder`` does, with checks.

    Every sub-folder of ``root`` is a class; its images (in sub-folders too)
    are its images; files directly in ``root`` are ignored. Which files are
    images and which links are followed: see :mod:`siamkit._folders`; what is
    left out is in :attr:`FolderListing.skipped`, each with its reason.

    ``layout="grouped"`` reads ``root/<group>/<class>/<image>`` (Omniglot's
    ``<alphabet>/<character>``): classes ``"<group>/<class>"``; ``"auto"``
    reads whichever the folder shows (:func:`grouped_layout`).

    Raises:
        DataError: ``root`` is missing, holds no class folder or no image, or a
            class folder holds no image or fewer than ``min_images_per_class``;
            in the grouped layout, an image directly in a group folder.
        ConfigError: an unknown ``layout``.

    Examples:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for person in ("bob", "ann"):
        ...     os.makedirs(os.path.join(root, person))
        ...     Image.new("L", (8, 8)).save(os.path.join(root, person, "1.png"))
        >>> os.symlink("1.png", os.path.join(root, "ann", "again.png"))
        >>> listing = list_image_folder(root)
        >>> listing.classes, listing.labels
        (['ann', 'bob'], [0, 1])
        >>> print(listing.skipped[0].reason)
        a link to the file ann/1.png, listed already: each file is listed once
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    walk = _Walk(os.fspath(root))
    images = walk.run()
    groups = None
    if layout == "grouped" or (layout == "auto" and grouped_layout(os.fspath(root), images)):
        images, groups = _by_group(os.fspath(root), images)
    classes = sorted(images)
    if not classes:
        raise DataError(
            f"{path} has no sub-folders: put each person's (or class's) images in a "
            f"folder of their own, e.g. {path}/alice/1.jpg{_left_out(walk.skipped)}"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        paths += images[name]
        labels += [label] * len(images[name])
    skipped = sorted(walk.skipped, key=lambda item: item.path)
    of_class = None if groups is None else [groups[name] for name in classes]
    listing = FolderListing(os.fspath(root), classes, paths, labels, skipped, of_class)
    _check_counts(path, listing, min_images_per_class)
    return listing


#: How :func:`list_image_folder` reads a folder: one class per top-level folder, one per
#: second-level folder (``<group>/<class>``), or whichever the folder shows.
LAYOUTS = ("flat", "grouped", "auto")


def grouped_layout(root: str, images: dict[str, list[str]]) -> bool:
    """True when ``images`` (per top-level folder) look like ``<group>/<class>/<image>``.

    No image lies directly in a top-level folder, and at least one of them
    holds two or more class folders.

    Examples:
        >>> grouped_layout("r", {"Latin": ["r/Latin/a/1.png", "r/Latin/b/1.png"]})
        True
        >>> grouped_layout("r", {"ann": ["r/ann/1.png"], "bob": ["r/bob/2019/1.png"]})
        False
    """
    widest = 0
    for group, paths in images.items():
        base = os.path.join(root, group)
        inner = {Path(os.path.relpath(p, base)).parts[:-1][:1] for p in paths}
        if () in inner:
            return False
        widest = max(widest, len(inner))
    return widest >= 2


def _by_group(
    root: str, images: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The images of each ``<group>/<class>``, and each class's group."""
    classes: dict[str, list[str]] = {}
    groups: dict[str, str] = {}
    for group, paths in images.items():
        base = os.path.join(root, group)
        for p in paths:
            parts = Path(os.path.relpath(p, base)).parts
            if len(parts) < 2:
                raise DataError(
                    f"{p} lies directly in the group folder {group}: in the grouped layout "
                    "(root/<group>/<class>/<image>) every image is in a class folder; move it "
                    "into one, or read the folder flat (layout='flat')"
                )
            name = f"{group}/{parts[0]}"
            classes.setdefault(name, []).append(p)
            groups[name] = group
    return classes, groups


class _Walk:
    """One listing: the class folders walked without links, then the links, once each."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.dirs: dict[str, str] = {}  # real folder -> the path it is listed under
        self.files: dict[str, str] = {}  # real image file -> the path it is listed under
        self.found: dict[str, dict[str, list[str]]] = {}  # class -> folder -> image names
        self.trees: dict[str, str] = {}  # class -> the real folder its links must stay in
        self.links: deque[tuple[str | None, str, str]] = deque()  # (class, folder, name)
        self.skipped: list[SkippedFile] = []

    def run(self) -> dict[str, list[str]]:
        """The image paths of each class, in ``sorted(os.walk(...))`` order."""
        with os.scandir(self.root) as entries:
            top = sorted(entries, key=lambda entry: entry.name)
        for entry in top:
            if entry.is_symlink() and entry.is_dir():  # a link to a file beside the people
                self.links.append((None, self.root, entry.name))  # is ignored, as files are
            elif entry.is_dir():
                self._walk(entry.name, entry.path, os.path.join(self.real_root, entry.name))
        while self.links:  # after every folder the walk reaches without links
            self._follow(*self.links.popleft())
        return {
            name: [os.path.join(d, n) for d in sorted(folders) for n in sorted(folders[d])]
            for name, folders in self.found.items()
        }

    def _walk(self, cls: str, folder: str, real: str) -> None:
        """Record the images under ``folder`` (real path ``real``); queue its links."""
        self.trees.setdefault(cls, real)
        pending = [(folder, real)]
        while pending:
            folder, real = pending.pop()
            self.dirs[real] = folder
            names = self.found.setdefault(cls, {}).setdefault(folder, [])
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as err:
                self.skipped.append(SkippedFile(folder, f"cannot be read ({err.strerror})"))
                continue
            for entry in entries:
                inner = os.path.join(real, entry.name)
                if entry.is_symlink():
                    self.links.append((cls, folder, entry.name))
                elif (inner in self.dirs) if entry.is_dir() else (inner in self.files):
                    # Reached again through another person's folder that is a link.
                    self.skipped.append(SkippedFile(entry.path, self._listed(inner, "")))
                elif entry.is_dir():
                    pending.append((entry.path, inner))
                elif self._is_image(entry.path, inner, entry.is_file()):
                    self.files[inner] = entry.path
                    names.append(entry.name)

    def _follow(self, cls: str | None, folder: str, name: str) -> None:
        """Follow one link, or report why not."""
        link = os.path.join(folder, name)
        target = os.path.realpath(link)
        is_dir = os.path.isdir(target)
        reason = self._refusal(cls, target, is_dir, os.path.realpath(folder))
        if reason:
            self.skipped.append(SkippedFile(link, reason))
        elif is_dir:
            self._walk(name if cls is None else cls, link, target)
        elif cls is not None and self._is_image(link, target, os.path.isfile(target)):
            self.files[target] = link
            self.found[cls][folder].append(name)

    def _refusal(self, cls: str | None, target: str, is_dir: bool, real_folder: str) -> str | None:
        """Why the link from ``real_folder`` to ``target`` is not followed; None if it is."""
        if not os.path.exists(target):
            return "a broken link: its target does not exist"
        if is_dir and _inside(real_folder, target):
            return f"a link loop: it leads back to {self._shown(target)}, which holds it"
        # A person's folder may be a link (kept elsewhere); links inside it stay inside it.
        if cls is not None and not _inside(target, self.trees[cls]):
            return (
                f"a link to {target}, outside the folder of {cls}: links in a person's folder "
                "are followed only within it (copy the file in instead)"
            )
        if target in (self.dirs if is_dir else self.files):
            return self._listed(target)
        return None

    def _listed(self, real: str, prefix: str = "a link to ") -> str:
        kind = "folder" if real in self.dirs else "file"
        listed = self.dirs[real] if real in self.dirs else self.files[real]
        shown = Path(os.path.relpath(listed, self.root)).as_posix()
        return f"{prefix}the {kind} {shown}, listed already: each file is listed once"

    def _shown(self, real: str) -> str:
        if _inside(real, self.real_root) and real != self.real_root:
            return os.path.relpath(real, self.real_root)
        return self.root if real == self.real_root else real

    def _is_image(self, path: str, real: str, regular: bool) -> bool:
        """True for an image to list; a file that is not is reported (or silently ignored)."""
        name = os.path.basename(path)
        if regular and is_image_file(path):
            return True
        if name.startswith(".") or name in SYSTEM_FILES:
            return False
        reason = _not_image_reason(real) if regular else "not a regular file"
        if reason is None:
            return True
        self.skipped.append(SkippedFile(path, reason))
        return False


def skipped_lines(
    skipped: list[SkippedFile], shown: int = 10, heading: str = "  left out           "
) -> list[str]:
    """What the folder listing left out: a count, then the first files with their reasons.

    Examples:
        >>> skipped_lines([SkippedFile("g/ann/x.heic", "an HEIF image")])
        ['  left out           1 file of the folder:', '    g/ann/x.heic: an HEIF image']
    """
    if not skipped:
        return []
    files = f"{len(skipped)} file{'s' if len(skipped) > 1 else ''}"
    lines = [f"{heading}{files} of the folder:"]
    lines += [f"    {item.path}: {item.reason}" for item in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"    ... and {len(skipped) - shown} more (evaluation.json lists them)")
    return lines


def _inside(path: str, folder: str) -> bool:
    """True if the real ``path`` is ``folder`` or lies inside it."""
    try:
        return os.path.commonpath([folder, path]) == folder
    except ValueError:  # another drive (Windows)
        return False


#: The first bytes of the formats siamkit reads (Pillow opens a file by its content).
_SIGNATURES = re.compile(
    rb"\xff\xd8\xff|\x89PNG\r\n\x1a\n|GIF8[79]a|II\*\x00|MM\x00\*|RIFF....WEBP|P[1-6]\s+[#\d]"
    rb"|BM.{12}(?:\x0c|\x28|\x34|\x38|\x40|\x6c|\x7c)\x00\x00\x00",
    re.DOTALL,
)
_HEIF = re.compile(rb"....ftyp(?:heic|heix|hevc|heim|heis|mif1|msf1|avif|avis)", re.DOTALL)


def _not_image_reason(path: str) -> str | None:
    """None when the file's content is an image siamkit reads; else why it is left out."""
    extension = Path(path).suffix.lower() or "no extension"
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if _SIGNATURES.match(head):
        return None
    if _HEIF.match(head):
        return "an HEIF or AVIF image, which siamkit does not read: convert it to JPEG or PNG"
    return (
        f"not an image siamkit reads ({extension}; it reads .jpg, .png, .pgm, .bmp, .tif, "
        ".webp, .gif and their aliases)"
    )


def _left_out(skipped: list[SkippedFile]) -> str:
    if not skipped:
        return ""
    first = min(skipped, key=lambda item: item.path)
    return f"; {len(skipped)} files or links were left out, e.g. {first.path}: {first.reason}"


def _check_counts(path: Path, listing: FolderListing, min_images_per_class: int) -> None:
    counts = listing.counts
    if sum(counts.values()) == 0:
        raise DataError(
            f"{path} holds no image files (looked for .png, .jpg, .pgm, ...)"
            f"{_left_out(listing.skipped)}"
        )
    empty = sorted(name for name, count in counts.items() if count == 0)
    if empty:
        raise DataError(
            f"class folders without images in {path}: {', '.join(empty[:10])}"
            f"{_left_out(listing.skipped)}"
        )
    few = sorted(name for name, count in counts.items() if count < min_images_per_class)
    if few:
        raise DataError(
            f"classes with fewer than {min_images_per_class} images in {path}: "
            f"{', '.join(few[:10])}{'...' if len(few) > 10 else ''}. Training needs at least "
            "two images of each person to form a matching pair: add images or remove these folders"
        )
