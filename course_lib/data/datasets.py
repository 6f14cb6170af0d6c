"""The standard super-resolution data sets: a registry (URL + checksum) and a cached downloader.

The course never needs these data sets: the book builds and every test passes offline, on the
photos of :mod:`course_lib.data.photos` and generated images. They are for the ``gpu`` profile and
the paper-scale command lines on Colab or a workstation, where the papers' own data make the
numbers comparable with the published ones.

In the spirit of d2l's ``DATA_HUB``, :data:`DATASETS` maps a name to where the archive lives,
the checksum it must have and where the images are once it is unpacked::

    from course_lib.data import dataset_path, load_dataset_images

    folder = dataset_path("set5", download=True)   # downloads and unpacks once, then a cache hit
    images = load_dataset_images("set5")           # five (3, H, W) float tensors in [0, 1], from the cache
    lr_x2 = dataset_path("div2krk", part="lr_x2", download=True)  # DIV2KRK's blurred and subsampled images

Nothing is fetched unless a call says ``download=True`` (the command lines do so for ``--data`` and
``--eval``): by default a data set missing from the cache raises FileNotFoundError with the
manual steps, so code that runs offline never reaches for the network.

=================  ===================================  ========================================
name               images                               archive
=================  ===================================  ========================================
``div2k_train``    800 DIV2K training images (2K)       ``DIV2K_train_HR.zip`` (3.5 GB)
``div2k_valid``    100 DIV2K validation images (2K)     ``DIV2K_valid_HR.zip`` (449 MB)
``set5``           5 images                             EDSR's ``benchmark.tar`` (about 250 MB)
``set14``          14 images                            the same ``benchmark.tar``
``b100``           100 BSD100 test images               the same ``benchmark.tar``
``urban100``       100 urban scenes                     the same ``benchmark.tar``
``div2krk``        100 DIV2K validation images, each    ``DIV2KRK_public.zip`` (KernelGAN)
                   with its own random kernel: HR,
                   LR x2 and x4, and the kernels
=================  ===================================  ========================================

Where the files go
------------------
Archives are downloaded to ``<cache>/downloads`` and unpacked into ``<cache>/<archive name>``;
``<cache>`` is ``~/.cache/course_lib/datasets`` unless the environment variable
``COURSE_DATA_DIR`` names another folder (on Colab, a folder of a mounted Google Drive keeps the
data between sessions). The archive is deleted once unpacked (``keep_archive=True`` keeps it).

A folder you already have is used instead of downloading: ``dataset_path("set5", root="/my/Set5")``
or, for command lines, the environment variable ``COURSE_DATA_<NAME>`` (``COURSE_DATA_SET5``,
``COURSE_DATA_DIV2K_TRAIN``, ...). The folder may hold the images themselves or the data set's
layout as its archive has it (``Set5/HR``, ``DIV2KRK/gt``, ...); it must contain images.

Downloads
---------
Only the standard library (``urllib``) and tqdm. A download shows a progress bar, resumes after a
cut (HTTP ``Range`` requests on a ``.part`` file, also in a later call), checks the SHA-256 (or the
MD5, where only an MD5 is on public record) and unpacks zip and tar archives. A checksum mismatch
deletes the bad file, and only it, and raises :class:`ChecksumError`; an archive without a
recorded checksum is used with an :class:`UnverifiedDownloadWarning` that gives its SHA-256, so
you can pin it. Without network access, :class:`DownloadError` says how to put the file in place
by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from tqdm.auto import tqdm

from .photos import load_image

__all__ = [
    "Archive",
    "DatasetSpec",
    "DATASETS",
    "IMAGE_SUFFIXES",
    "ChecksumError",
    "DownloadError",
    "UnverifiedDownloadWarning",
    "data_dir",
    "dataset_env_var",
    "dataset_path",
    "download",
    "download_file",
    "list_images",
    "load_dataset_images",
]

#: File suffixes that :func:`list_images` counts as images (compared in lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_ARCHIVE_KINDS: dict[str, str] = {  # file name ending -> archive kind
    ".zip": "zip", ".tar": "tar", ".tar.gz": "tar.gz", ".tgz": "tar.gz",
    ".tar.bz2": "tar.bz2", ".tbz2": "tar.bz2", ".tar.xz": "tar.xz", ".txz": "tar.xz",
}
_CHUNK = 1 << 20  # bytes per read while downloading and hashing
_USER_AGENT = "course_lib-datasets (Python urllib)"
_sleep = time.sleep  # the pause between retries (tests replace it)


def _kind_of(filename: str) -> str:
    lower = filename.lower()
    for ending in sorted(_ARCHIVE_KINDS, key=len, reverse=True):
        if lower.endswith(ending):
            return _ARCHIVE_KINDS[ending]
    raise ValueError(f"cannot tell the archive kind of {filename!r}; give kind=")


class ChecksumError(ValueError):
    """A downloaded (or hand-placed) file does not have its recorded checksum; it was deleted."""


class DownloadError(ConnectionError):
    """A download failed (no network, HTTP error, cut too often); the message gives manual steps."""


class UnverifiedDownloadWarning(UserWarning):
    """A file was used although no checksum is recorded for it; the warning gives its SHA-256."""


@dataclass(frozen=True)
class Archive:
    """One downloadable file: URL, checksum(s), and how to unpack it.

    ``sha256`` and ``md5`` are lower-case hex digests; each one that is given is checked (give
    ``None`` for both where no public source records one: the file is then used with a warning
    that prints its SHA-256). ``size`` in bytes is optional (progress bar, sanity check). ``kind``
    is ``'zip'``, ``'tar'``, ``'tar.gz'``, ``'tar.bz2'`` or ``'tar.xz'``, inferred from
    ``filename`` when empty; ``filename`` defaults to the last part of the URL.
    """

    url: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    filename: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        filename = self.filename or PurePosixPath(self.url.split("?")[0]).name
        if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
            raise ValueError(f"cannot take a file name from {self.url!r}; give filename=")
        kind = self.kind or _kind_of(filename)
        if kind not in set(_ARCHIVE_KINDS.values()):
            raise ValueError(f"unknown archive kind {kind!r} for {filename!r}; "
                             f"use one of {sorted(set(_ARCHIVE_KINDS.values()))}")
        for algo, digest, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if digest is not None and not re.fullmatch(f"[0-9a-f]{{{length}}}", digest):
                raise ValueError(f"{algo} must be {length} lower-case hex digits, got {digest!r}")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"size must be a positive number of bytes, got {self.size!r}")
        object.__setattr__(self, "filename", filename)
        object.__setattr__(self, "kind", kind)

    @property
    def folder(self) -> str:
        """Name of the cache folder the archive is unpacked into (its file name minus the suffix)."""
        for ending in sorted(_ARCHIVE_KINDS, key=len, reverse=True):
            if self.filename.lower().endswith(ending):
                return self.filename[: -len(ending)]
        return self.filename  # pragma: no cover (kind given explicitly for an odd name)


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: its archive and where its images are once unpacked.

    ``home`` is the folder inside the archive that holds the data set (``"benchmark/Set5"``);
    ``parts`` maps a part name to a folder relative to ``home`` (``"."`` for ``home`` itself) and
    must have ``"hr"``, the ground-truth images. ``file_parts`` names the parts that hold other
    files than images (DIV2KRK's kernels, as ``.mat`` files). ``home_aliases`` are other names the
    home folder may carry in a copy a user already has. ``n_images`` is the expected number of HR
    images (a mismatch in a download warns).
    """

    name: str
    archive: Archive
    home: str
    parts: Mapping[str, str]
    n_images: int | None = None
    file_parts: tuple[str, ...] = ()
    home_aliases: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9_]+", self.name):
            raise ValueError(f"data set names are lower-case letters, digits and '_', got {self.name!r}")
        if "hr" not in self.parts:
            raise ValueError(f"{self.name}: parts must include 'hr' (the ground-truth images)")
        unknown = set(self.file_parts) - set(self.parts)
        if unknown:
            raise ValueError(f"{self.name}: file_parts {sorted(unknown)} are not in parts")
        if "hr" in self.file_parts:
            raise ValueError(f"{self.name}: the 'hr' part must hold images")
        for rel in [self.home, *self.parts.values()]:
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"{self.name}: {rel!r} must be a relative path inside the archive")
        object.__setattr__(self, "parts", dict(self.parts))


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------

_DIV2K_TRAIN_HR = Archive(
    # URL: the DIV2K page, data.vision.ee.ethz.ch/cvl/DIV2K (Agustsson and Timofte, 2017).
    url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
    # SHA-256 and size: TensorFlow Datasets, tensorflow_datasets/url_checksums/div2k.txt.
    sha256="9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335", size=3530603713,
)
_DIV2K_VALID_HR = Archive(
    # URL: the DIV2K page, data.vision.ee.ethz.ch/cvl/DIV2K.
    url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
    # SHA-256 and size: TensorFlow Datasets, tensorflow_datasets/url_checksums/div2k.txt.
    sha256="20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc", size=448993893,
)
_EDSR_BENCHMARK = Archive(
    # URL: the EDSR authors' test sets (README of github.com/sanghyun-son/EDSR-PyTorch).
    url="https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
    # MD5 (no SHA-256 is on record): torchSR verifies it, torchsr/datasets/benchmarks.py.
    md5="4ace41d33c2384b97e6b320cd0afd6ba",
)
_DIV2KRK = Archive(
    # URL: KernelGAN's README and project page, wisdom.weizmann.ac.il/~vision/kernelgan.
    url="https://www.wisdom.weizmann.ac.il/~vision/kernelgan/DIV2KRK_public.zip",
    sha256=None,  # no public source records a checksum: the first download prints its SHA-256
)


def _benchmark(name: str, folder: str, n_images: int, description: str) -> DatasetSpec:
    # Layout of EDSR's benchmark.tar, as torchSR's track_dirs read it: <set>/HR, <set>/LR_bicubic/X<s>.
    return DatasetSpec(
        name=name, archive=_EDSR_BENCHMARK, home=f"benchmark/{folder}",
        parts={"hr": "HR", "lr_bicubic_x2": "LR_bicubic/X2", "lr_bicubic_x3": "LR_bicubic/X3",
               "lr_bicubic_x4": "LR_bicubic/X4"},
        n_images=n_images, description=description,
        source="EDSR benchmark.tar (Lim et al., 2017): HR images and MATLAB-bicubic LR images",
    )


#: The registry, from a name to its :class:`DatasetSpec`; add an entry to make a data set downloadable.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="div2k_train", archive=_DIV2K_TRAIN_HR, home="DIV2K_train_HR", parts={"hr": "."},
            n_images=800, description="DIV2K training images 0001-0800, 2K resolution",
            source="DIV2K (Agustsson and Timofte, NTIRE 2017)",
        ),
        DatasetSpec(
            name="div2k_valid", archive=_DIV2K_VALID_HR, home="DIV2K_valid_HR", parts={"hr": "."},
            n_images=100, description="DIV2K validation images 0801-0900, 2K resolution",
            source="DIV2K (Agustsson and Timofte, NTIRE 2017)",
        ),
        _benchmark("set5", "Set5", 5, "Set5 (Bevilacqua et al., 2012)"),
        _benchmark("set14", "Set14", 14, "Set14 (Zeyde et al., 2010)"),
        _benchmark("b100", "B100", 100, "BSD100, the 100 test images of BSDS300 (Martin et al., 2001)"),
        _benchmark("urban100", "Urban100", 100, "Urban100 (Huang et al., 2015)"),
        DatasetSpec(
            # Layout as the release's readme lists it: gt, gt_k_x2, lr_x2, gt_k_x4, lr_x4.
            name="div2krk", archive=_DIV2KRK, home="DIV2KRK",
            parts={"hr": "gt", "lr_x2": "lr_x2", "lr_x4": "lr_x4",
                   "kernels_x2": "gt_k_x2", "kernels_x4": "gt_k_x4"},
            file_parts=("kernels_x2", "kernels_x4"), home_aliases=("DIV2KRK_public",),
            n_images=100,
            description="the 100 DIV2K validation images, each blurred with its own random "
                        "anisotropic kernel and subsampled by 2 and 4; the kernels as .mat files",
            source="KernelGAN (Bell-Kligler, Shocher and Irani, NeurIPS 2019)",
        ),
    ]
}
_ALIASES = {"bsd100": "b100", "div2k_val": "div2k_valid", "div2k_validation": "div2k_valid"}


def _spec(name: str) -> DatasetSpec:
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def _is_name(name: str) -> bool:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key) in DATASETS


# ---------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------


def data_dir() -> Path:
    """The cache folder: ``$COURSE_DATA_DIR`` if set, else ``~/.cache/course_lib/datasets``."""
    env = os.environ.get("COURSE_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "course_lib" / "datasets"


def dataset_env_var(name: str) -> str:
    """The environment variable that points a data set at a local folder (``COURSE_DATA_SET5``)."""
    return "COURSE_DATA_" + _spec(name).name.upper()


def _natural_key(path: Path) -> list[object]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder`` (suffixes in :data:`IMAGE_SUFFIXES`), in natural order.

    Natural order sorts ``im_2`` before ``im_10``, so the i-th LR image of DIV2KRK pairs with the
    i-th HR image. Hidden files and sub-folders are skipped. A missing folder raises
    FileNotFoundError.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def _has_files(folder: Path, images: bool) -> bool:
    if not folder.is_dir():
        return False
    if images:
        return bool(list_images(folder))
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def _part_dir(home: Path, spec: DatasetSpec, part: str) -> Path:
    rel = spec.parts[part]
    return home if rel in (".", "") else home.joinpath(*PurePosixPath(rel).parts)


def _find_home(spec: DatasetSpec, base: Path, *, max_dirs: int = 5000) -> Path | None:
    """The folder under ``base`` that holds ``spec``'s layout (its 'hr' part, with images).

    Tried in order: ``base/<home>``; ``base`` itself; then, breadth first and at most three levels
    down, folders named like the home or one of its aliases. None when there is none.
    """
    def holds(folder: Path) -> bool:
        return _has_files(_part_dir(folder, spec, "hr"), images=True)

    if not base.is_dir():
        return None
    exact = base.joinpath(*PurePosixPath(spec.home).parts)
    if holds(exact):
        return exact
    if holds(base):
        return base
    names = {PurePosixPath(spec.home).name.lower(), *(a.lower() for a in spec.home_aliases)}
    queue, seen = deque([(base, 0)]), 0
    while queue and seen < max_dirs:
        folder, depth = queue.popleft()
        if depth >= 3:
            continue
        try:
            children = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
        except OSError:
            continue
        for child in children:
            seen += 1
            if child.name.lower() in names and holds(child):
                return child
            queue.append((child, depth + 1))
    return None


def _resolve_part(spec: DatasetSpec, home: Path, part: str, where: str) -> Path:
    folder = _part_dir(home, spec, part)
    images = part not in spec.file_parts
    if not _has_files(folder, images=images):
        what = "images" if images else "files"
        raise FileNotFoundError(f"{spec.name}: the part {part!r} should be the folder {folder} "
                                f"({where}), but it holds no {what}")
    return folder


def _check_part(spec: DatasetSpec, part: str) -> None:
    if part not in spec.parts:
        raise ValueError(f"{spec.name} has no part {part!r}; its parts: {', '.join(spec.parts)}")


def _local_folder(spec: DatasetSpec, root: Path, part: str, origin: str) -> Path:
    """Resolve ``part`` in a folder the user gave (``root=`` or ``COURSE_DATA_<NAME>``)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{spec.name}: the folder {root} ({origin}) does not exist")
    home = _find_home(spec, root)
    if home is not None:
        return _resolve_part(spec, home, part, origin)
    if part == "hr" and list_images(root):
        return root  # the folder holds the HR images themselves
    layout = ", ".join(f"{p}: {spec.home}/{r}" for p, r in spec.parts.items())
    raise ValueError(f"{spec.name}: the folder {root} ({origin}) holds no images for part {part!r}; "
                     f"give a folder of image files, or one with the archive's layout ({layout})")


# ---------------------------------------------------------------------------------------------
# downloading one file
# ---------------------------------------------------------------------------------------------


class _CutError(Exception):
    """The connection broke off before the whole body arrived."""


class _UnreachableError(Exception):
    """No connection to the server (no network, refused, name not resolved, timeout)."""


def _manual_steps(url: str, dest: Path, sha256: str | None, md5: str | None,
                  again: str = "run the same call again") -> str:
    if sha256 or md5:
        algo, digest = ("SHA-256", sha256) if sha256 else ("MD5", md5)
        check = f"its {algo} is checked against {digest} before it is used"
    else:
        check = ("no checksum is recorded for it, so its SHA-256 is computed and printed for you "
                 "to pin")
    return (f"To install it by hand: (1) on a machine with internet access, download\n"
            f"    {url}\n"
            f"(2) copy the file, unchanged and under this name, to\n"
            f"    {dest}\n"
            f"(3) {again}: {check}, then it is unpacked.")


def _digests(path: Path, want_md5: bool, quiet: bool) -> tuple[str, str | None]:
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"checking {path.name}",
                                     disable=quiet or size < 64 * _CHUNK) as bar:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
            bar.update(len(chunk))
    return sha.hexdigest(), (md5.hexdigest() if md5 is not None else None)


def _verify(path: Path, sha256: str | None, md5: str | None, quiet: bool) -> str:
    """Check ``path``'s checksums; delete it and raise ChecksumError on a mismatch. Returns its SHA-256."""
    actual_sha, actual_md5 = _digests(path, want_md5=md5 is not None, quiet=quiet)
    wrong = []
    if sha256 is not None and actual_sha != sha256.lower():
        wrong.append(f"SHA-256: expected {sha256.lower()}, got {actual_sha}")
    if md5 is not None and actual_md5 != md5.lower():
        wrong.append(f"MD5: expected {md5.lower()}, got {actual_md5}")
    if wrong:
        path.unlink()
        raise ChecksumError(f"checksum mismatch for {path.name} ({path}): " + "; ".join(wrong)
                            + ". The file was deleted; the next call downloads it again. If it "
                            "fails again, the file on the server has changed: check its source.")
    if sha256 is None and md5 is None:
        warnings.warn(f"{path.name} could not be verified: no checksum is recorded for it. "
                      f"Its SHA-256 is {actual_sha} (pin it with Archive(..., sha256=...) "
                      f"once you trust this copy).", UnverifiedDownloadWarning, stacklevel=4)
    return actual_sha


def _fetch_once(url: str, part: Path, *, size: int | None, timeout: float, quiet: bool,
                desc: str) -> None:
    """One HTTP request that appends to (or restarts) ``part``; raises _CutError when cut short."""
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:  # not a prefix of the file we want
        part.unlink()
        start = 0
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # nothing left to send: the .part is the whole file
            err.close()
            return
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _UnreachableError(str(getattr(err, "reason", err))) from err
    with response:
        mode = "wb"
        if start and response.status == 206:
            match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == start:
                mode = "ab"
        if mode == "wb":
            start = 0  # the server ignored the Range header (or sent another range): restart
        length_header = response.headers.get("Content-Length", "")
        length = int(length_header) if length_header.isdigit() else None
        total = start + length if length is not None else size
        received = 0
        with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=desc, disable=quiet) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError) as err:  # reset, timeout, ...
                    raise _CutError(f"{err.__class__.__name__}: {err}") from err
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if length is not None and received < length:
            raise _CutError(f"the connection closed after {start + received} of {start + length} bytes")


def download_file(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
                  md5: str | None = None, size: int | None = None, timeout: float = 60.0,
                  retries: int = 5, quiet: bool = False) -> Path:
    """Download ``url`` to ``dest`` (resuming a ``.part`` file) and check its checksum.

    * A ``dest`` that exists is not downloaded again, only checked (so a file put there by hand
      is used).
    * Bytes go to ``dest + '.part'``; after a cut the download goes on with an HTTP ``Range``
      request, up to ``retries`` times in this call and again in any later call.
    * Each given checksum (``sha256``, ``md5``) is checked once the file is complete. A mismatch
      deletes ``dest`` (nothing else) and raises :class:`ChecksumError` naming the file, the
      expected and the actual digest. With neither, :class:`UnverifiedDownloadWarning` gives the
      file's SHA-256.
    * Network failures raise :class:`DownloadError` with the steps to place the file by hand.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = Path(dest)
    if dest.is_file():
        _verify(dest, sha256, md5, quiet)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    cuts = 0
    while True:
        try:
            _fetch_once(url, part, size=size, timeout=timeout, quiet=quiet, desc=dest.name)
            break
        except _CutError as cut:
            cuts += 1
            if cuts > retries:
                raise DownloadError(
                    f"the download of {url} was cut {cuts} times (last: {cut}); the "
                    f"{part.stat().st_size if part.exists() else 0} bytes received are kept in "
                    f"{part} and the next call resumes from there.\n"
                    + _manual_steps(url, dest, sha256, md5)) from None
            _sleep(min(2.0 ** (cuts - 2), 30.0) if cuts > 1 else 0.0)
        except urllib.error.HTTPError as err:
            raise DownloadError(f"the server answered HTTP {err.code} ({err.reason}) for {url}.\n"
                                + _manual_steps(url, dest, sha256, md5)) from err
        except _UnreachableError as err:
            kept = part.stat().st_size if part.exists() else 0
            note = (f" The {kept} bytes received so far are kept in {part}; the next call resumes."
                    if kept else "")
            raise DownloadError(f"could not reach {url} (no network access? {err}).{note}\n"
                                + _manual_steps(url, dest, sha256, md5)) from err.__cause__
    os.replace(part, dest)
    _verify(dest, sha256, md5, quiet)
    return dest


# ---------------------------------------------------------------------------------------------
# unpacking
# ---------------------------------------------------------------------------------------------


def _safe_name(name: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"{archive.name}: refusing to unpack the unsafe member {name!r}")


def _unpack(archive: Path, kind: str, dest: Path, quiet: bool) -> None:
    """Unpack into ``dest`` (which must not exist) through a temporary folder, so a cut leaves
    no half-filled ``dest``."""
    tmp = dest.with_name(dest.name + ".unpacking")
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from an interrupted run
    tmp.mkdir(parents=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for member in members:
                    _safe_name(member.filename, archive)
                for member in tqdm(members, desc=f"unpacking {archive.name}", unit="file",
                                   disable=quiet):
                    zf.extract(member, tmp)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members, skipped = [], []
                for member in tf.getmembers():
                    _safe_name(member.name, archive)
                    (members if member.isfile() or member.isdir() else skipped).append(member)
                if skipped:
                    warnings.warn(f"{archive.name}: skipped {len(skipped)} links or special files "
                                  f"(first: {skipped[0].name!r})", stacklevel=3)
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(tmp, members=tqdm(members, desc=f"unpacking {archive.name}",
                                                unit="file", disable=quiet), **extra)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dest)


def _describe(folder: Path, depth: int = 2) -> str:
    lines: list[str] = []

    def walk(path: Path, level: int) -> None:
        for child in sorted(p for p in path.iterdir() if p.is_dir())[:12]:
            lines.append("  " * level + child.name + "/")
            if level + 1 < depth:
                walk(child, level + 1)

    walk(folder, 0)
    return "\n".join(lines) or "(no folders)"


# ---------------------------------------------------------------------------------------------
# the public entry points
# ---------------------------------------------------------------------------------------------


def download(name: str, *, cache_dir: str | os.PathLike | None = None, keep_archive: bool = False,
             timeout: float = 60.0, retries: int = 5, quiet: bool = False) -> Path:
    """Make sure data set ``name`` is in the cache; return its home folder (all its parts).

    A cache hit (the unpacked layout is there, with images) does nothing. Otherwise the archive
    is downloaded to ``<cache>/downloads`` (see :func:`download_file`: resume, checksum, manual
    steps without network), unpacked into ``<cache>/<archive name>`` and, unless
    ``keep_archive``, deleted. ``cache_dir`` defaults to :func:`data_dir`.
    """
    spec = _spec(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else data_dir()
    unpacked = cache / spec.archive.folder
    home = _find_home(spec, unpacked)
    if home is not None:
        return home
    if unpacked.exists():
        raise FileExistsError(
            f"{spec.name}: {unpacked} exists but does not hold the data set ({spec.home}/"
            f"{spec.parts['hr']} with images). Remove that folder to download again, or pass "
            f"root= to dataset_path. It holds:\n{_describe(unpacked)}")
    archive_path = cache / "downloads" / spec.archive.filename
    hint = (f"\nOr use a folder that already holds the images: dataset_path({spec.name!r}, "
            f"root=...) or the environment variable {dataset_env_var(spec.name)}.")
    try:
        download_file(spec.archive.url, archive_path, sha256=spec.archive.sha256,
                      md5=spec.archive.md5, size=spec.archive.size, timeout=timeout,
                      retries=retries, quiet=quiet)
    except DownloadError as err:
        raise DownloadError(f"{spec.name}: {err}{hint}") from err
    _unpack(archive_path, spec.archive.kind, unpacked, quiet)
    if not keep_archive:
        archive_path.unlink()
    home = _find_home(spec, unpacked)
    if home is None:
        raise FileNotFoundError(
            f"{spec.name}: unpacked {spec.archive.filename} into {unpacked} but found no "
            f"{spec.home}/{spec.parts['hr']} with images in it; the archive's layout may have "
            f"changed. Pass root= to dataset_path with the right folder. It holds:\n"
            f"{_describe(unpacked)}")
    if spec.n_images is not None:
        count = len(list_images(_part_dir(home, spec, "hr")))
        if count != spec.n_images:
            warnings.warn(f"{spec.name}: expected {spec.n_images} HR images, found {count} in "
                          f"{_part_dir(home, spec, 'hr')}", stacklevel=2)
    return home


_download = download  # dataset_path's keyword ``download`` hides the function there


def dataset_path(name: str, *, part: str = "hr", root: str | os.PathLike | None = None,
                 download: bool = False, cache_dir: str | os.PathLike | None = None,
                 quiet: bool = False) -> Path:
    """The folder of data set ``name``'s images (``part='hr'``: the ground truth).

    Looked up in this order: ``root`` (a folder you have: its images, or the archive's layout);
    the environment variable ``COURSE_DATA_<NAME>`` (same); the cache. A data set missing from the
    cache is downloaded into it only with ``download=True``; by default it raises FileNotFoundError
    with the manual steps. Other
    parts: ``'lr_bicubic_x2'`` ... ``'lr_bicubic_x4'`` for Set5, Set14, B100 and Urban100;
    ``'lr_x2'``, ``'lr_x4'``, ``'kernels_x2'``, ``'kernels_x4'`` for DIV2KRK. The folder is
    checked to hold images (files, for kernel parts).
    """
    spec = _spec(name)
    _check_part(spec, part)
    env_name = dataset_env_var(spec.name)
    if root is not None:
        return _local_folder(spec, Path(root).expanduser(), part, "root=")
    if os.environ.get(env_name, "").strip():
        return _local_folder(spec, Path(os.environ[env_name].strip()).expanduser(), part,
                             f"${env_name}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else data_dir()
    if not download:
        unpacked = cache / spec.archive.folder
        home = _find_home(spec, unpacked)
        if home is None:
            raise FileNotFoundError(
                f"{spec.name} is not in the cache {cache} and download=False.\n"
                + _manual_steps(spec.archive.url, cache / "downloads" / spec.archive.filename,
                                spec.archive.sha256, spec.archive.md5,
                                again="call again with download=True (a file in place is not fetched)")
                + f"\nOr pass root= (or set {env_name}) to a folder that holds the images.")
        return _resolve_part(spec, home, part, f"in the cache {cache}")
    home = _download(spec.name, cache_dir=cache, quiet=quiet)
    return _resolve_part(spec, home, part, f"in the cache {cache}")


def load_dataset_images(name_or_dir: str | os.PathLike, *, max_images: int | None = None,
                        part: str = "hr", root: str | os.PathLike | None = None,
                        download: bool = False, channels: int | None = 3) -> list[torch.Tensor]:
    """Read a data set's images (a registered name, or any folder) as (C, H, W) float tensors.

    Images are read in natural file order by :func:`course_lib.data.photos.load_image` (values
    in [0, 1]; ``channels=3`` makes gray images RGB, ``1`` gives luma, ``None`` keeps the file's).
    ``max_images`` keeps the first ones. Mind the memory: all 800 DIV2K training images take
    about 27 GB as float32; sample patches from the files for training instead.
    """
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
    if isinstance(name_or_dir, str) and _is_name(name_or_dir):
        folder = dataset_path(name_or_dir, part=part, root=root, download=download)
    else:
        folder = Path(name_or_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"not a folder: {folder} (registered data sets: "
                                    f"{', '.join(DATASETS)})")
    files = list_images(folder)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if max_images is not None:
        files = files[:max_images]
    return [load_image(path, channels=channels) for path in files]
