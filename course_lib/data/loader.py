"""Training batches from an image folder (DIV2K and the like), fed by ``DataLoader`` workers.

The paper models (IRN, HCFlow) train on random HR patches of DIV2K's 800 2K images. Decoding a 2K
PNG takes tens of milliseconds, so drawing patches straight from the files would starve a GPU.
Here:

* :class:`FolderPatches` is a ``batch_fn(step) -> (batch, 3, p, p)``, like
  :class:`~course_lib.data.patches.PatchSampler`: patch ``i`` of step ``step`` is drawn from a
  generator seeded by ``(seed, step, i)`` alone, so a batch depends on ``(seed, step)`` only and a
  resumed run sees exactly the batches an uninterrupted one would have seen. Each image is decoded
  once into an 8-bit ``.npy`` copy (a cache folder, by default under
  :func:`course_lib.data.datasets.data_dir`); a patch is a slice of its memory map, so
  drawing a batch costs milliseconds.
* :class:`PrefetchedBatches` serves any such ``batch_fn`` through a
  ``torch.utils.data.DataLoader`` with worker processes that build the next batches while the
  GPU trains on this one. It returns exactly ``batch_fn(step)``, whatever the number of workers.
* :func:`training_batches` picks the source of a command line's ``--data``: ``photos`` (the
  packaged training photos and dead leaves, :func:`~course_lib.data.patches.training_sampler`),
  ``div2k`` (the DIV2K training images, downloaded once) or a folder of images.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .datasets import _is_name, data_dir, dataset_path, list_images
from .patches import dihedral, training_sampler

__all__ = ["EVAL_SETS", "FolderPatches", "PrefetchedBatches", "decoded_copies", "training_batches"]

BatchFn = Callable[[int], torch.Tensor]

# Evaluation sets: never training data (a run on them would be scored on what it trained on).
EVAL_SETS = ("set5", "set14", "b100", "urban100")


def _generator(*words: int) -> torch.Generator:
    """A CPU generator whose state depends only on the non-negative ints ``words``."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def _decode(path: Path, dest: Path) -> None:
    from .photos import load_image

    img = load_image(path, channels=3)  # (3, H, W) float in [0, 1]; 16-bit files are rounded to 8 bits
    array = (img * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, dest)  # atomic: two processes decoding the same file cannot leave half a file


def decoded_copies(files: list[Path], cache_dir: str | os.PathLike | None = None, *,
                   progress: bool = True) -> list[Path]:
    """8-bit ``(H, W, 3)`` ``.npy`` copies of image ``files``, made once (again when a file changes).

    They go to ``cache_dir`` (default ``<data_dir()>/decoded``), in a sub-folder named after the
    images' folder. DIV2K's 800 training images take about 6.6 GB and a minute or two to decode.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else data_dir() / "decoded"
    out, todo = [], []
    for path in files:
        path = Path(path).resolve()
        folder = root / hashlib.sha1(str(path.parent).encode()).hexdigest()[:16]
        stat = path.stat()
        dest = folder / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}.npy"
        out.append(dest)
        if not dest.is_file():
            todo.append((path, dest))
    if todo:
        from tqdm.auto import tqdm

        todo[0][1].parent.mkdir(parents=True, exist_ok=True)
        for path, dest in tqdm(todo, desc=f"decoding {len(todo)} images once", disable=not progress or len(todo) < 20):
            dest.parent.mkdir(parents=True, exist_ok=True)
            _decode(path, dest)
    return out


class FolderPatches:
    """``batch_fn(step) -> (batch, 3, patch, patch)`` float32 random HR patches of a folder's images.

    Patch ``i`` of ``step`` comes from a generator seeded by ``(seed, step, i)``: an image chosen
    with probability proportional to its area, a uniformly random corner (a multiple of ``scale``
    when given, so the crop lines up with the LR grid) and, with ``augment``, one of the 8
    flips/rotations of the square (:func:`~course_lib.data.patches.dihedral`). Images smaller than
    the patch are skipped with a warning. Picklable, so it can run in ``DataLoader`` workers.

    Args:
        folder: a folder of image files (:func:`~course_lib.data.datasets.list_images`).
        patch: side of the square patches; batch: patches per step; seed: with the step, the only
            source of randomness.
        cache_dir: where the decoded copies go (:func:`decoded_copies`).
    """

    def __init__(self, folder: str | os.PathLike, patch: int, batch: int, *, scale: int | None = None,
                 seed: int = 0, augment: bool = True, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True):
        for name, value in (("patch", patch), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1 or patch % scale):
            raise ValueError(f"scale must be a positive int dividing the patch size {patch}, got {scale!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.folder = Path(folder).expanduser()
        files = list_images(self.folder)
        if not files:
            raise ValueError(f"no images in {self.folder}")
        copies = decoded_copies(files, cache_dir, progress=progress)
        shapes = [np.load(c, mmap_mode="r").shape for c in copies]
        keep = [k for k, s in enumerate(shapes) if min(s[:2]) >= patch]
        if len(keep) < len(files):
            small = [files[k].name for k in range(len(files)) if k not in keep]
            warnings.warn(f"{len(small)} image(s) smaller than the {patch}-px patch are skipped: {small[:5]}",
                          stacklevel=2)
        if not keep:
            raise ValueError(f"every image in {self.folder} is smaller than the patch size {patch}")
        self.names = [files[k].name for k in keep]
        self.paths = [str(copies[k]) for k in keep]
        self.shapes = [shapes[k][:2] for k in keep]
        self.patch, self.batch, self.scale, self.seed, self.augment = patch, batch, scale, seed, bool(augment)
        step = scale or 1
        self._positions = torch.tensor([[(h - patch) // step + 1, (w - patch) // step + 1] for h, w in self.shapes],
                                       dtype=torch.float64)
        self._area = torch.tensor([h * w for h, w in self.shapes], dtype=torch.float64)
        self._arrays: list | None = None

    def __len__(self) -> int:
        """The number of images patches are drawn from."""
        return len(self.paths)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # memory maps are reopened in each worker
        return state

    def patch_at(self, step: int, i: int) -> torch.Tensor:
        """Patch ``i`` of ``step``: (3, p, p) float32 in [0, 1], a function of ``(seed, step, i)`` only."""
        if self._arrays is None:
            self._arrays = [np.load(p, mmap_mode="r") for p in self.paths]
        g = _generator(self.seed, step, i)
        k = int(torch.multinomial(self._area, 1, generator=g))
        corner = torch.rand(2, generator=g, dtype=torch.float64) * self._positions[k]
        corner = corner.floor().long() * (self.scale or 1)
        t = int(torch.randint(8, (1,), generator=g))
        top, left, p = int(corner[0]), int(corner[1]), self.patch
        crop = np.ascontiguousarray(self._arrays[k][top:top + p, left:left + p])
        patch = torch.from_numpy(crop).permute(2, 0, 1).float().div_(255.0)
        return dihedral(patch, t).contiguous() if self.augment else patch

    def __call__(self, step: int) -> torch.Tensor:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        return torch.stack([self.patch_at(int(step), i) for i in range(self.batch)])

    def __repr__(self) -> str:
        return (f"FolderPatches({str(self.folder)!r}: {len(self)} images, patch {self.patch}, batch {self.batch}, "
                f"scale {self.scale}, seed {self.seed})")


class _Steps(torch.utils.data.Dataset):
    """Item ``step`` is ``batch_fn(step)``: one whole batch per item."""

    def __init__(self, batch_fn: BatchFn, stop: int):
        self.batch_fn, self.stop = batch_fn, stop

    def __len__(self) -> int:
        return self.stop

    def __getitem__(self, step: int) -> torch.Tensor:
        return self.batch_fn(int(step))


class PrefetchedBatches:
    """``batch_fn(step)``, built ahead by ``workers`` ``DataLoader`` processes.

    Calling it with the steps ``s, s + 1, s + 2, ...`` (as a training loop does) returns the batches
    the workers prepared in order; a call out of sequence (a resumed run) restarts the workers at
    that step. The result is always exactly ``batch_fn(step)``: the batches depend on the step
    only, never on which worker made them, and starting the workers does not draw from torch's
    global random state (a training run's other random numbers stay the same). ``workers=0``
    calls ``batch_fn`` directly.

    Args:
        batch_fn: a picklable ``batch_fn(step)`` (:class:`FolderPatches`,
            :class:`~course_lib.data.patches.PatchSampler`).
        workers: worker processes (Colab has 2 CPU cores: 2 is right there).
        stop: the first step never asked for (the run's total steps); later steps are computed
            directly.
        pin_memory: page-locked batches, for faster copies to a CUDA device.
    """

    def __init__(self, batch_fn: BatchFn, *, workers: int = 2, stop: int = 2**62, prefetch: int = 2,
                 pin_memory: bool = False):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {workers!r}")
        self.batch_fn, self.workers, self.stop = batch_fn, workers, int(stop)
        self.prefetch, self.pin_memory = prefetch, pin_memory
        self._iter = None
        self._next = -1

    def _start(self, step: int) -> None:
        self.close()
        loader = torch.utils.data.DataLoader(
            _Steps(self.batch_fn, self.stop), batch_size=None, sampler=range(step, self.stop),
            num_workers=self.workers, prefetch_factor=self.prefetch, pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(0))  # its own: starting workers leaves torch's random state alone
        self._iter, self._next = iter(loader), step

    def __call__(self, step: int) -> torch.Tensor:
        if self.workers == 0 or step >= self.stop:
            return self.batch_fn(step)
        if self._iter is None or step != self._next:
            self._start(step)
        batch = next(self._iter)
        self._next += 1
        return batch

    def close(self) -> None:
        """Stop the worker processes (they also stop when this object is deleted)."""
        if self._iter is not None and hasattr(self._iter, "_shutdown_workers"):
            self._iter._shutdown_workers()
        self._iter, self._next = None, -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to clean
            pass


def training_batches(data: str | os.PathLike | None, patch: int, batch: int, *, scale: int | None = None,
                     seed: int = 0, dead_leaves_fraction: float = 0.25, images=None, workers: int = 0,
                     stop: int = 2**62, pin_memory: bool = False, download: bool = False,
                     progress: bool = True) -> tuple[BatchFn, str]:
    """The training batches of ``--data`` and a line that says what they are.

    ``data``: ``None`` or ``"photos"``: the packaged training photos (or ``images``) and a fraction
    ``dead_leaves_fraction`` of dead-leaves patches
    (:func:`~course_lib.data.patches.training_sampler`); ``"div2k"`` (or ``"div2k_train"``): the
    800 DIV2K training images (:func:`~course_lib.data.datasets.dataset_path`: from the cache,
    downloaded into it only with ``download=True``); any other string: a folder of images (:class:`FolderPatches`).
    The evaluation sets (``EVAL_SETS``) are refused. With ``workers`` > 0 the batches come from a
    :class:`PrefetchedBatches` (``stop``: the run's total steps).
    """
    if data is None or str(data) == "photos":
        fn: BatchFn = training_sampler(patch, batch, scale=scale, seed=seed,
                                       dead_leaves_fraction=dead_leaves_fraction, images=images)
        what = (f"packaged training photos and {dead_leaves_fraction:.0%} dead leaves"
                if images is None else f"{len(list(images))} given images and {dead_leaves_fraction:.0%} dead leaves")
    else:
        name = str(data).strip().lower()
        if name in EVAL_SETS:
            raise ValueError(f"{data!r} is an evaluation set; train on div2k, photos or a folder of your own")
        if name == "div2k":
            name = "div2k_train"
        folder = (dataset_path(name, download=download) if isinstance(data, str) and _is_name(name)
                  else Path(data).expanduser())
        if not folder.is_dir():
            raise FileNotFoundError(f"--data {data}: not a data set name (div2k, photos) nor a folder")
        fn = FolderPatches(folder, patch, batch, scale=scale, seed=seed, progress=progress)
        what = f"{len(fn)} images of {folder}"
    if workers:
        fn = PrefetchedBatches(fn, workers=workers, stop=stop, pin_memory=pin_memory)
        what += f" ({workers} loader workers)"
    return fn, what
