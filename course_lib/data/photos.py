"""Photos that ship inside installed packages, and loading of any image file.

Every photo here is read from files that scikit-image, scikit-learn and matplotlib install with
themselves, so nothing is ever downloaded (scikit-image photos that need the optional ``pooch``
download, such as ``brain`` or ``eagle``, are deliberately not listed).

The split
---------
``EVAL_PHOTOS`` = astronaut, coffee, chelsea, china: held out of every training run in the course.
They are the photos for which reference numbers of MATLAB's bicubic super-resolution exist, so a
chapter can compare its PSNR with published-style baselines on exactly the same pixels.

``TRAIN_PHOTOS`` = rocket, flower, grace_hopper, motorcycle, immunohistochemistry: natural colour
photos with varied content (man-made structure, foliage, a face, a cluttered indoor scene,
microscopy texture). Training patches come from these (plus, optionally, dead-leaves images).

Listed but in neither split (:func:`list_photos` shows them): ``hubble_deep_field`` and ``retina``
are mostly black background, which would dominate area-proportional patch sampling with empty
patches; ``colorwheel`` is a synthetic chart, handy for looking at colour artefacts.
``skimage.data.cat`` is the same array as ``chelsea`` and is not listed, so that an evaluation
photo cannot slip into training under another name.

Conventions: images are float32 tensors in [0, 1], shape (C, H, W), RGB.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "EVAL_PHOTOS",
    "TRAIN_PHOTOS",
    "EXTRA_PHOTOS",
    "list_photos",
    "photo_info",
    "load_photo",
    "load_image",
    "read_image_file",
    "ImageFile",
    "save_png",
    "to_numpy_image",
    "from_numpy_image",
    "rgb_to_luma",
]

# ITU-R BT.601 luma weights (the Y' of Y'CbCr), used to turn colour into one channel.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class PhotoSpec:
    """Where a photo comes from: package, loader, size (H, W) and licence/credit."""

    name: str
    source: str
    loader: Callable[[], np.ndarray]
    size: tuple[int, int]
    credit: str


def _skimage(fn_name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, fn_name)()

    return load


def _motorcycle() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]  # the left view of the stereo pair


def _sklearn(file_name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        # Read the file that scikit-learn installs (what load_sample_image reads) directly:
        # importing sklearn.datasets alone takes over a second.
        from importlib.util import find_spec

        from PIL import Image

        spec = find_spec("sklearn")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "datasets" / "images" / file_name
            if path.is_file():
                with Image.open(path) as img:
                    return np.asarray(img.convert("RGB"))
        from sklearn.datasets import load_sample_image  # pragma: no cover (other layouts)

        return load_sample_image(file_name)  # pragma: no cover

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


_PHOTOS: dict[str, PhotoSpec] = {
    spec.name: spec
    for spec in [
        PhotoSpec("astronaut", "scikit-image", _skimage("astronaut"), (512, 512),
                  "Eileen Collins, NASA Great Images; public domain"),
        PhotoSpec("coffee", "scikit-image", _skimage("coffee"), (400, 600),
                  "Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0"),
        PhotoSpec("chelsea", "scikit-image", _skimage("chelsea"), (300, 451),
                  "Chelsea the cat, Stefan van der Walt; CC0"),
        PhotoSpec("china", "scikit-learn", _sklearn("china.jpg"), (427, 640),
                  "Flickr user danielbuechele; CC BY 2.0"),
        PhotoSpec("rocket", "scikit-image", _skimage("rocket"), (427, 640),
                  "DSCOVR launch on Falcon 9, SpaceX; public domain"),
        PhotoSpec("flower", "scikit-learn", _sklearn("flower.jpg"), (427, 640),
                  "Flickr user vultilion; CC BY 2.0"),
        PhotoSpec("grace_hopper", "matplotlib", _grace_hopper, (600, 512),
                  "Grace Hopper, U.S. Navy photograph; public domain"),
        PhotoSpec("motorcycle", "scikit-image", _motorcycle, (500, 741),
                  "left view of the Middlebury 2014 stereo 'Motorcycle' scene "
                  "(Scharstein et al., 2014), as redistributed by scikit-image"),
        PhotoSpec("immunohistochemistry", "scikit-image", _skimage("immunohistochemistry"),
                  (512, 512), "IHC staining, Center for Microscopy and Molecular Imaging; "
                  "no known copyright restrictions"),
        PhotoSpec("hubble_deep_field", "scikit-image", _skimage("hubble_deep_field"), (872, 1000),
                  "Hubble eXtreme Deep Field, NASA; public domain"),
        PhotoSpec("retina", "scikit-image", _skimage("retina"), (1411, 1411),
                  "fundus photograph, Mikael Häggström; CC0"),
        PhotoSpec("colorwheel", "scikit-image", _skimage("colorwheel"), (370, 371),
                  "synthetic colour wheel from scikit-image"),
    ]
}

EVAL_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "china")
TRAIN_PHOTOS: tuple[str, ...] = (
    "rocket", "flower", "grace_hopper", "motorcycle", "immunohistochemistry",
)
EXTRA_PHOTOS: tuple[str, ...] = ("hubble_deep_field", "retina", "colorwheel")


def list_photos() -> tuple[str, ...]:
    """Names of every available photo (evaluation, training and extra ones)."""
    return tuple(_PHOTOS)


def _spec(name: str) -> PhotoSpec:
    if not isinstance(name, str):
        raise TypeError(f"photo name must be a string, got {type(name).__name__}")
    if name not in _PHOTOS:
        raise ValueError(f"unknown photo {name!r}; valid names: {', '.join(_PHOTOS)}")
    return _PHOTOS[name]


def photo_info(name: str) -> dict[str, object]:
    """Source package, size (H, W), licence/credit and split ('eval', 'train' or 'extra')."""
    spec = _spec(name)
    split = "eval" if name in EVAL_PHOTOS else "train" if name in TRAIN_PHOTOS else "extra"
    return {"name": spec.name, "source": spec.source, "size": spec.size,
            "credit": spec.credit, "split": split}


@cache
def _photo_array(name: str) -> np.ndarray:
    array = np.ascontiguousarray(_spec(name).loader())
    array.setflags(write=False)
    return array


def load_photo(name: str, *, gray: bool = False) -> torch.Tensor:
    """Load a packaged photo as a float32 tensor in [0, 1] of shape (3, H, W).

    With ``gray=True`` the result is its BT.601 luma, shape (1, H, W). Decoded photos are
    cached; every call returns a fresh tensor that the caller may modify.
    """
    tensor = from_numpy_image(_photo_array(name))
    return rgb_to_luma(tensor) if gray else tensor


def rgb_to_luma(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma Y' = 0.299 R + 0.587 G + 0.114 B of a (3,H,W) or (N,3,H,W) image (C -> 1)."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(img).__name__}")
    if img.dim() not in (3, 4) or img.shape[-3] != 3:
        raise ValueError("expected an RGB image of shape (3,H,W) or (N,3,H,W), "
                         f"got {tuple(img.shape)}")
    weights = torch.tensor(LUMA_WEIGHTS, dtype=img.dtype, device=img.device).view(3, 1, 1)
    return (img * weights).sum(dim=-3, keepdim=True)


# ---------------------------------------------------------------------------------------------
# numpy <-> tensor
# ---------------------------------------------------------------------------------------------


def from_numpy_image(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) array -> (C, H, W) float32 tensor in [0, 1].

    uint8 is divided by 255, uint16 by 65535, bool becomes 0/1; floating arrays must already lie
    in [0, 1].
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = (array.astype(np.float64) / 65535.0).astype(np.float32)
    elif array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError("image array contains non-finite values")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(f"float image values must lie in [0, 1], got range "
                             f"[{values.min():g}, {values.max():g}]")
    else:
        raise TypeError(f"unsupported image dtype {array.dtype}; use uint8, uint16, bool or float")
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))


def to_numpy_image(img: torch.Tensor, *, dtype: str = "float") -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) numpy array for plotting ((H, W) when C == 1).

    ``dtype='float'`` gives float32 clipped to [0, 1]; ``dtype='uint8'`` rounds to 0..255.
    """
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(img).__name__}")
    if img.dim() != 3 or img.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected a (C, H, W) image with C in (1, 3, 4), got {tuple(img.shape)}")
    array = img.detach().to("cpu", torch.float32).clamp(0, 1).numpy().transpose(1, 2, 0)
    if array.shape[2] == 1:
        array = array[:, :, 0]
    if dtype == "float":
        return np.ascontiguousarray(array)
    if dtype == "uint8":
        return np.round(array * 255.0).astype(np.uint8)
    raise ValueError(f"dtype must be 'float' or 'uint8', got {dtype!r}")


# ---------------------------------------------------------------------------------------------
# loading any image file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFile:
    """An image file as read by :func:`read_image_file`: the tensor and what was done to get it.

    ``image``: float32 ``(C, H, W)`` in [0, 1]. ``bit_depth``: bits per sample in the file (1, 8, 16,
    or 32 for float TIFFs). ``file_channels``: colour channels in the file, alpha not counted (1 gray,
    3 colour). ``alpha``: ``None`` (the file has none), ``"composited"`` (over ``background``) or
    ``"dropped"``. ``orientation``: the EXIF orientation that was undone (1: none).
    """

    image: torch.Tensor
    path: Path
    bit_depth: int
    file_channels: int
    alpha: str | None
    background: float | None
    orientation: int

    def notes(self) -> list[str]:
        """One short sentence per thing that was done to the file's pixels (empty: nothing)."""
        out = []
        if self.orientation != 1:
            out.append(f"EXIF orientation {self.orientation} applied (the image is shown upright, as viewers do)")
        if self.alpha == "composited":
            shade = {1.0: "white", 0.0: "black"}.get(float(self.background), f"grey {self.background:g}")
            out.append(f"alpha channel composited on {shade}")
        elif self.alpha == "dropped":
            out.append("alpha channel dropped")
        if self.file_channels == 1 and self.image.shape[0] == 3:
            out.append("grayscale image processed as 3 identical channels")
        elif self.file_channels == 3 and self.image.shape[0] == 1:
            out.append("colour image turned into its BT.601 luma")
        if self.bit_depth == 16:
            out.append("16-bit image read at full precision")
        return out


def load_image(path: str | os.PathLike, *, channels: int | None = 3,
               background: float | None = 1.0) -> torch.Tensor:
    """Read an image file into a float32 tensor in [0, 1] of shape (C, H, W).

    * 8-bit images are divided by 255; 16-bit ones (PNG, TIFF) by 65535, so their full precision
      is kept (Pillow alone would truncate 16-bit colour PNGs to 8 bits; we read their low bytes
      too); 1-bit images give 0/1; 32-bit float images must already be in [0, 1].
    * Palette images are expanded to RGB(A). The EXIF orientation is applied, as viewers do.
    * Transparency: ``background=1.0`` (default) composites the image over white,
      ``c * a + background * (1 - a)``; ``background=None`` drops the alpha channel.
    * ``channels=3`` (default) replicates a grayscale image to RGB; ``channels=1`` turns a colour
      image into its BT.601 luma; ``channels=None`` keeps the file's own count (1 or 3).

    A missing path raises FileNotFoundError; a file that is not a readable image raises
    ValueError; both name the path. :func:`read_image_file` also says what was done (bit depth,
    alpha, EXIF rotation, channels).
    """
    return read_image_file(path, channels=channels, background=background).image


def read_image_file(path: str | os.PathLike, *, channels: int | None = 3,
                    background: float | None = 1.0) -> ImageFile:
    """:func:`load_image` with what it did: an :class:`ImageFile` (the tensor, the file's bit depth
    and channel count, what happened to its alpha channel, the EXIF orientation undone).

    ``python -m course_lib`` reads its inputs with it and prints :meth:`ImageFile.notes`.
    """
    if channels not in (1, 3, None):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    if background is not None and not (0.0 <= float(background) <= 1.0):
        raise ValueError(f"background must be a grey level in [0, 1] or None, got {background!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an image file, got a directory: {path}")

    try:
        array, orientation = _read_array(path)
        bit_depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.bool_): 1}.get(array.dtype, 32)
        img = from_numpy_image(array)
    except Exception as err:  # Pillow, tifffile, zlib and our checks raise many kinds
        raise ValueError(f"cannot read image file {path}: {err}") from err

    alpha = None
    if img.shape[0] in (2, 4):  # gray + alpha or RGB + alpha
        color, a = img[:-1], img[-1:]
        img = color if background is None else color * a + float(background) * (1 - a)
        alpha = "dropped" if background is None else "composited"
    if img.shape[0] not in (1, 3):
        raise ValueError(f"{path} has {img.shape[0]} channels; expected gray or RGB (+ alpha)")
    file_channels = img.shape[0]
    if channels == 3 and img.shape[0] == 1:
        img = img.expand(3, -1, -1).clone()
    elif channels == 1 and img.shape[0] == 3:
        img = rgb_to_luma(img)
    return ImageFile(image=img, path=path, bit_depth=bit_depth, file_channels=file_channels, alpha=alpha,
                     background=None if background is None else float(background), orientation=orientation)


def save_png(img: torch.Tensor, path: str | os.PathLike, *, bits: int = 8) -> Path:
    """Write a ``(C, H, W)`` image (C = 1 gray or 3 RGB; values clipped to [0, 1]) as an 8- or
    16-bit PNG: ``round(x * 255)`` or ``round(x * 65535)``. Returns the path.

    16-bit PNGs are encoded here (Pillow writes 16-bit gray but not 16-bit colour); :func:`load_image`
    reads them back exactly.
    """
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(img).__name__}")
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected a (C, H, W) image with C = 1 or 3, got {tuple(img.shape)}")
    if not img.is_floating_point() or not bool(torch.isfinite(img).all()):
        raise ValueError("expected a finite floating-point image in [0, 1]")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_png writes PNG files; the name must end in .png, got {path.name!r}")
    array = np.ascontiguousarray(img.detach().to("cpu", torch.float64).clamp(0, 1).numpy().transpose(1, 2, 0))
    if bits == 8:
        from PIL import Image

        levels = np.round(array * 255.0).astype(np.uint8)
        Image.fromarray(levels[:, :, 0] if levels.shape[2] == 1 else levels).save(path, format="PNG")
        return path
    levels = np.ascontiguousarray(np.round(array * 65535.0).astype(">u2"))
    height, width, n = levels.shape
    rows = levels.reshape(height, width * n).view(np.uint8).reshape(height, 2 * width * n)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 16, 0 if n == 1 else 2, 0, 0, 0)
    path.write_bytes(_PNG_SIGNATURE + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _png_chunk(b"IEND", b""))
    return path


def _read_array(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file into an (H, W) or (H, W, C) uint8/uint16/bool/float array, upright; and the
    EXIF orientation that was undone (1: none)."""
    from PIL import Image

    if path.suffix.lower() in (".tif", ".tiff"):
        array = _read_tiff(path)
        if array is not None:
            return array, 1

    with Image.open(path) as img:
        orientation = img.getexif().get(0x0112, 1)  # EXIF orientation tag
        wide = _read_png16_color(path) if img.format == "PNG" else None
        array = wide if wide is not None else _pillow_array(img)
    orientation = orientation if orientation in range(1, 9) else 1
    return _apply_orientation(array, orientation), orientation


def _pillow_array(img) -> np.ndarray:
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=bool)
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(img)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)
    if mode == "I":
        values = np.asarray(img)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"32-bit integer image with values outside 0..65535 "
                             f"(range {values.min()}..{values.max()}) is not supported")
        return values.astype(np.uint16)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    return np.asarray(img.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, ...


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Undo an EXIF orientation (values 1..8), as image viewers and Pillow's exif_transpose do."""
    if orientation in (5, 6, 7, 8):
        array = np.swapaxes(array, 0, 1)  # transpose first, then flip
    flip_rows = orientation in (3, 4, 7, 8)
    flip_cols = orientation in (2, 3, 6, 7)
    if flip_rows:
        array = array[::-1]
    if flip_cols:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


def _read_tiff(path: Path) -> np.ndarray | None:
    """TIFF through tifffile (exact 16-bit colour); None when tifffile is missing."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover
        return None
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array, axes = series.asarray(), series.axes
    for axis in [a for a in axes if a not in "YXS"]:  # extra axes (pages, time...): first entry
        array = np.take(array, 0, axis=axes.index(axis))
        axes = axes.replace(axis, "")
    if "S" not in axes:
        return np.ascontiguousarray(np.transpose(array, [axes.index("Y"), axes.index("X")]))
    array = np.transpose(array, [axes.index("Y"), axes.index("X"), axes.index("S")])
    return np.ascontiguousarray(array[:, :, 0] if array.shape[2] == 1 else array)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _read_png16_color(path: Path) -> np.ndarray | None:
    """Exact decoding of 16-bit gray+alpha / RGB / RGBA PNGs (None for every other PNG).

    Pillow decodes these at 8 bits, keeping each sample's high byte. PNG's row filters act on
    each byte position within a pixel independently (the "left" byte is ``bpp`` bytes back), so
    shifting every row's filtered bytes right by one and decoding again puts the low bytes where
    Pillow reads the high ones. Two decodes by Pillow's own C code then give all 16 bits.
    """
    from PIL import Image

    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, header, idat = len(_PNG_SIGNATURE), None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        return None
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    n_channels = {4: 2, 2: 3, 6: 4}.get(color_type)
    if depth != 16 or n_channels is None:
        return None
    if interlace:
        raise ValueError("interlaced 16-bit colour PNGs are not supported; save without "
                         "interlacing or as 16-bit TIFF")
    bpp = 2 * n_channels
    raw = zlib.decompress(b"".join(idat))
    row_len = 1 + width * bpp
    if len(raw) < height * row_len:
        raise ValueError("truncated PNG image data")
    rows = np.frombuffer(raw[:height * row_len], dtype=np.uint8).reshape(height, row_len)

    # Same rows shifted by one byte: [filter type, 0, bytes..., padding] over width + 1 pixels.
    shifted = np.zeros((height, 1 + (width + 1) * bpp), dtype=np.uint8)
    shifted[:, 0] = rows[:, 0]
    shifted[:, 2:2 + width * bpp] = rows[:, 1:]

    def decode(filtered: np.ndarray, w: int) -> np.ndarray:
        png = (_PNG_SIGNATURE
               + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, height, 16, color_type, 0, 0, 0))
               + _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 1))
               + _png_chunk(b"IEND", b""))
        with Image.open(io.BytesIO(png)) as img:
            out = np.asarray(img)
        if n_channels == 2 and out.ndim == 3 and out.shape[2] == 4:
            out = out[:, :, [0, 3]]  # Pillow opens 16-bit gray+alpha as RGBA
        return out.reshape(height, w, n_channels)

    high = decode(rows, width).astype(np.uint16)
    low_shifted = decode(shifted, width + 1).astype(np.uint16)
    # Byte lane 2c of the shifted stream holds the low byte of channel c-1 (the last channel's
    # low byte comes from lane 0 of the next pixel).
    low = np.empty_like(high)
    low[:, :, :-1] = low_shifted[:, :width, 1:]
    low[:, :, -1] = low_shifted[:, 1:width + 1, 0]
    return (high << 8) | low
