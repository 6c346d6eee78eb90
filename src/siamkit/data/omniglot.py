"""Omniglot: Lake et al.'s handwritten characters, in torchvision's layout.

``<root>/omniglot-py/images_background/<alphabet>/<character>/<image>.png``
(30 alphabets, 964 characters: train and tune on these) and
``images_evaluation`` (20 alphabets, 659 characters: the one-shot test
classes), the folders :class:`torchvision.datasets.Omniglot` reads. Each
character is a class named ``"<alphabet>/<character>"``, each alphabet its
group, so few-shot episodes can be drawn within one alphabet
(:func:`siamkit.evaluation.sample_episodes`).

The data is Brenden Lake's (MIT License): B. M. Lake, R. Salakhutdinov and
J. B. Tenenbaum (2015), "Human-level concept learning through probabilistic
program induction", Science 350(6266).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siamkit.data.folder import FaceFolder
from siamkit.exceptions import DataError

#: Where torchvision downloads Omniglot from, and the archives' MD5 sums it checks.
OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
#: The folder under ``root`` that holds both sets (torchvision's ``Omniglot.folder``).
OMNIGLOT_FOLDER = "omniglot-py"


class Omniglot(FaceFolder):
    """Omniglot's background or evaluation set: one class per character, grouped by alphabet.

    Args:
        root: The folder holding ``omniglot-py`` (torchvision's ``root``).
        background: The background set (training), or the evaluation set.
        download: Download and extract the set when it is missing, by
            torchvision's download path (MD5-checked).
        transform: Applied to each PIL image.
        mode: PIL mode to convert the images to (the files are 1-bit).
        url: Where the ``images_*.zip`` archives are, instead of Lake's repository.
        md5: The archive's MD5 when ``url`` is given (None: not checked).
        progress: Show the download's progress.

    Raises:
        DataError: the set is missing and ``download`` is False, or the
            download failed or was not the archive expected.

    Examples:
        >>> data = Omniglot("../shared/data/omniglot")  # doctest: +SKIP
        >>> len(data.classes), data.groups[0]  # doctest: +SKIP
        (964, 'Alphabet_of_the_Magi')
    """

    def __init__(
        self,
        root: str | os.PathLike,
        background: bool = True,
        download: bool = False,
        transform: Callable[[Any], Any] | None = None,
        mode: str | None = "L",
        *,
        url: str | None = None,
        md5: str | None = None,
        progress: bool = False,
    ) -> None:
        self.background = background
        folder = omniglot_folder(root, background)
        if not folder.is_dir():
            if not download:
                raise DataError(
                    f"Omniglot's {folder.name} is not in {folder.parent}: pass download=True "
                    "(or point root at the folder holding omniglot-py)"
                )
            download_omniglot(root, background, url=url, md5=md5, progress=progress)
        super().__init__(folder, transform=transform, mode=mode, layout="grouped")


def omniglot_folder(root: str | os.PathLike, background: bool = True) -> Path:
    """The folder of one set: ``root/omniglot-py/images_background`` (or ``_evaluation``).

    Examples:
        >>> omniglot_folder("data", background=False).as_posix()
        'data/omniglot-py/images_evaluation'
    """
    name = "images_background" if background else "images_evaluation"
    return Path(root) / OMNIGLOT_FOLDER / name


def download_omniglot(
    root: str | os.PathLike,
    background: bool = True,
    *,
    url: str | None = None,
    md5: str | None = None,
    progress: bool = False,
) -> Path:
    """Download and extract one Omniglot set into ``root/omniglot-py``, as torchvision does.

    The archive is ``<url>/images_background.zip`` (or ``images_evaluation``),
    by default from Lake's repository with torchvision's MD5 sum checked.

    Raises:
        DataError: the download failed, or the archive is not the one expected.

    Examples:
        >>> download_omniglot("data", url="http://127.0.0.1:1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        siamkit.exceptions.DataError: could not download Omniglot from http://127.0.0.1:1/...
    """
    from torchvision.datasets.utils import download_and_extract_archive

    folder = omniglot_folder(root, background)
    archive = f"{folder.name}.zip"
    address = f"{(url or OMNIGLOT_URL).rstrip('/')}/{archive}"
    checksum = OMNIGLOT_MD5[folder.name] if url is None else md5
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Fetched and extracted beside the set, then moved in whole: an interrupted
    # download never leaves a half archive or a half set to be read later.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder.parent) as staging:
        try:
            with contextlib.ExitStack() as quiet:
                if not progress:  # torchvision prints what it downloads; siamkit is quiet
                    quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
                    quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
                download_and_extract_archive(address, staging, filename=archive, md5=checksum)
        except Exception as err:  # urllib's, zipfile's and torchvision's errors alike
            raise DataError(
                f"could not download Omniglot from {address}: {err}. Check the address, or "
                f"put the extracted {folder.name} folder in {folder.parent} yourself"
            ) from None
        extracted = Path(staging) / folder.name
        if not extracted.is_dir():
            raise DataError(f"the archive {address} does not hold the folder {folder.name}")
        try:
            os.replace(extracted, folder)
        except OSError:
            if not folder.is_dir():  # not another process's finished download: a real failure
                raise DataError(
                    f"could not move the extracted {folder.name} into {folder.parent}"
                ) from None
    return folder


__all__ = ["OMNIGLOT_FOLDER", "OMNIGLOT_MD5", "OMNIGLOT_URL", "Omniglot", "download_omniglot"]
