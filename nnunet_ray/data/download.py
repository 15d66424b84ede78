"""Fetch Medical Segmentation Decathlon tasks from their public mirror: resumable, checksum-verified, extracted.

    nnunet-ray download --task 01 04 --out data

Each task is one ``TaskNN_Name.tar`` (the archives MONAI's ``DecathlonDataset`` and NVIDIA's nnU-Net ``download.py``
fetch, same mirror, same MD5 sums). The download goes to ``OUT/.TaskNN_Name.tar.part`` and resumes from its size
with an HTTP range request after an interruption; the MD5 sum is checked before anything is extracted; extraction
goes to a temporary folder renamed to ``OUT/TaskNN_Name/`` when complete, so a folder with that name is always a
whole dataset (its ``dataset.json`` next to ``imagesTr/``, ``labelsTr/``, ``imagesTs/``). A finished task is skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable

from nnunet_ray.config import MSD_MIRROR
from nnunet_ray.data.dataset import DATASET_FILE

# Task number -> (folder name, MD5 of the archive), as published with the mirror.
MSD_TASKS: dict[int, tuple[str, str]] = {
    1: ("Task01_BrainTumour", "240a19d752f0d9e9101544901065d872"),
    2: ("Task02_Heart", "06ee59366e1e5124267b774dbd654057"),
    3: ("Task03_Liver", "a90ec6c4aa7f6a3d087205e23d4e6397"),
    4: ("Task04_Hippocampus", "9d24dba78a72977dbd1d2e110310f31b"),
    5: ("Task05_Prostate", "35138f08b1efaef89d7424d2bcc928db"),
    6: ("Task06_Lung", "8afd997733c7fc0432f71255ba4e52dc"),
    7: ("Task07_Pancreas", "4f7080cfca169fa8066d17ce6eb061e4"),
    8: ("Task08_HepaticVessel", "641d79e80ec66453921d997fbf12a29c"),
    9: ("Task09_Spleen", "410d4a301da4e5b2f6f86ec3ddba524e"),
    10: ("Task10_Colon", "bad7a188931dc2f6acf72b08eb6202d0"),
}
CHUNK = 1 << 20  # bytes per read
TIMEOUT_S = 60.0  # per network operation; a stalled connection fails and the next run resumes


class DownloadError(RuntimeError):
    """A task could not be fetched, verified or extracted; the message names the task and the problem."""


def download_task(task: int, out: str | Path, *, mirror: str = MSD_MIRROR, keep_archive: bool = False,
                  progress: Callable[[str], None] = lambda line: None) -> Path:
    """Fetch, verify and extract one MSD task into ``out/TaskNN_Name/`` (skipped when already there).

    Args:
        task: the task number, 1-10.
        out: the folder the dataset folder is created in.
        mirror: base URL holding ``TaskNN_Name.tar``.
        keep_archive: keep the verified archive next to the dataset.
        progress: called with one human-readable line now and then.

    Returns:
        The dataset folder.

    Raises:
        DownloadError: unknown task, network failure (the partial download is kept for resuming), checksum
            mismatch (the download is removed), or an archive member that would land outside the dataset folder.
    """
    if task not in MSD_TASKS:
        raise DownloadError(f"task {task}: MSD tasks are 1-10")
    name, md5 = MSD_TASKS[task]
    out = Path(out)
    target = out / name
    if (target / DATASET_FILE).is_file():
        progress(f"{name}: already in {target}")
        return target
    _check_no_partial_task(target)  # before gigabytes are fetched for nowhere to go
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.tar"
    placed = archive.is_file()  # the user's own copy: used if it verifies, and left where it is either way
    if placed and file_md5(archive) != md5:
        raise DownloadError(f"{name}: {archive} is not the MSD archive (MD5 differs from {md5}); move it away to "
                            "download a fresh copy")
    if not placed:
        partial = out / f".{name}.tar.part"
        _fetch(f"{mirror.rstrip('/')}/{name}.tar", partial, name=name, progress=progress)
        if file_md5(partial) != md5:
            partial.unlink()
            raise DownloadError(f"{name}: checksum mismatch (expected MD5 {md5}); the download was removed, "
                                "run the command again")
        os.replace(partial, archive)
    _extract(archive, out, name)
    if not (keep_archive or placed):
        archive.unlink()
    progress(f"{name}: extracted to {target}")
    return target


def file_md5(path: Path) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, partial: Path, *, name: str, progress: Callable[[str], None]) -> None:
    """Download ``url`` to ``partial``, continuing from its current size when the server supports ranges."""
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # range past the end: the partial file is already complete
            return
        raise DownloadError(f"{name}: {url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{name}: {url}: {getattr(err, 'reason', err)}") from err
    with response:
        resumed = response.status == 206
        if have and not resumed:
            progress(f"{name}: the server ignored the resume request; downloading from the start")
        total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
        progress(f"{name}: {'resuming at' if resumed else 'downloading'} {have if resumed else 0} of {total} bytes")
        _copy(response, partial, append=resumed, name=name, total=total, progress=progress)


def _copy(response: BinaryIO, partial: Path, *, append: bool, name: str, total: int,
          progress: Callable[[str], None]) -> None:
    done = partial.stat().st_size if append else 0
    next_report = done + max(total // 10, CHUNK)
    try:
        with partial.open("ab" if append else "wb") as f:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                done += len(chunk)
                if done >= next_report:
                    progress(f"{name}: {done / max(total, 1):.0%} of {total / 1e9:.2f} GB")
                    next_report += max(total // 10, CHUNK)
    except OSError as err:  # a dropped connection: keep what arrived, the next run resumes
        raise DownloadError(f"{name}: interrupted after {done} bytes ({err}); run again to resume") from err


def _extract(archive: Path, out: Path, name: str) -> None:
    """Extract ``archive`` (members under ``name/``) into ``out/name`` via a temporary folder."""
    staging = out / f".extract.{name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            members = [_checked(m, name) for m in tar.getmembers()]
            # macOS metadata files ("._case.nii.gz") ship in some MSD archives: they are not images.
            # filter="data": no setuid/setgid or device bits, no absolute paths or links leaving the folder.
            tar.extractall(staging, members=[m for m in members if not Path(m.name).name.startswith("._")],
                           filter="data")
        if not (staging / name / DATASET_FILE).is_file():
            raise DownloadError(f"{name}: the archive has no {name}/dataset.json")
        os.replace(staging / name, out / name)
    except tarfile.TarError as err:
        raise DownloadError(f"{name}: {archive} is not a readable tar archive ({err})") from err
    except OSError as err:  # disk full, no permission: the archive is kept, a rerun extracts it again
        raise DownloadError(f"{name}: cannot extract {archive.name} into {out} ({err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_no_partial_task(task: Path) -> None:
    """The extracted task replaces an empty folder only: one holding files but no dataset.json is someone's work
    (or a copy cut short), never deleted here."""
    if task.is_dir() and any(task.iterdir()):
        raise DownloadError(f"{task.name}: {task} exists without dataset.json and is not empty; move it away (or "
                            "complete it) and run again")
    if task.exists() and not task.is_dir():
        raise DownloadError(f"{task.name}: {task} exists and is not a folder; move it away and run again")


def _checked(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    parts = Path(member.name).parts
    if not parts or parts[0] != name or ".." in parts or member.name.startswith("/"):
        raise DownloadError(f"{name}: archive member {member.name!r} is outside {name}/")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{name}: archive member {member.name!r} is a link or device, not a file")
    return member
