"""Tests of course_lib.data.photos: packaged photos, image files of every common format."""

from __future__ import annotations

import socket
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from course_lib.data import photos
from course_lib.data.photos import (
    EVAL_PHOTOS,
    EXTRA_PHOTOS,
    TRAIN_PHOTOS,
    from_numpy_image,
    list_photos,
    load_image,
    load_photo,
    photo_info,
    read_image_file,
    save_png,
    to_numpy_image,
)

# ---------------------------------------------------------------------------------------------
# packaged photos
# ---------------------------------------------------------------------------------------------


def test_every_listed_photo_loads_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a photo tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    photos._photo_array.cache_clear()
    for name in list_photos():
        img = load_photo(name)
        info = photo_info(name)
        assert img.dtype == torch.float32 and img.shape == (3, *info["size"]), name
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert float(img.std()) > 0.05, f"{name} looks blank"


def test_split_is_disjoint_and_covers_the_list():
    names = list_photos()
    assert set(EVAL_PHOTOS) == {"astronaut", "coffee", "chelsea", "china"}
    assert not set(EVAL_PHOTOS) & set(TRAIN_PHOTOS)
    assert not set(EXTRA_PHOTOS) & (set(EVAL_PHOTOS) | set(TRAIN_PHOTOS))
    assert sorted(EVAL_PHOTOS + TRAIN_PHOTOS + EXTRA_PHOTOS) == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        split = photo_info(name)["split"]
        assert (split == "eval") == (name in EVAL_PHOTOS)
        assert (split == "train") == (name in TRAIN_PHOTOS)


def test_no_training_photo_is_an_evaluation_photo_under_another_name():
    evals = {name: load_photo(name) for name in EVAL_PHOTOS}
    for name in TRAIN_PHOTOS + EXTRA_PHOTOS:
        img = load_photo(name)
        for other, ref in evals.items():
            assert not (img.shape == ref.shape and torch.equal(img, ref)), (name, other)


def test_photos_match_the_packages_own_loaders():
    import skimage.data
    from matplotlib import cbook
    from sklearn.datasets import load_sample_image

    refs = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "china": load_sample_image("china.jpg"),
        "motorcycle": skimage.data.stereo_motorcycle()[0],
        "grace_hopper": np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg",
                                                                    asfileobj=False))),
    }
    for name, ref in refs.items():
        expected = torch.from_numpy(ref.astype(np.float32) / 255.0).permute(2, 0, 1)
        assert torch.equal(load_photo(name), expected), name


def test_load_photo_returns_a_fresh_tensor_and_gray_is_bt601_luma():
    a = load_photo("coffee")
    a.zero_()
    b = load_photo("coffee")
    assert float(b.max()) > 0.5  # the cache was not modified through the first tensor
    gray = load_photo("coffee", gray=True)
    assert gray.shape == (1, *b.shape[1:])
    expected = 0.299 * b[0] + 0.587 * b[1] + 0.114 * b[2]
    torch.testing.assert_close(gray[0], expected)


def test_unknown_photo_names_the_valid_ones():
    with pytest.raises(ValueError, match="astronaut"):
        load_photo("lena")
    with pytest.raises(ValueError, match="unknown photo"):
        photo_info("cat")  # an alias of chelsea, deliberately not listed
    with pytest.raises(TypeError):
        load_photo(3)


def test_photo_info_fields():
    info = photo_info("china")
    assert info["source"] == "scikit-learn" and info["size"] == (427, 640)
    assert "CC BY" in info["credit"] and info["split"] == "eval"


# ---------------------------------------------------------------------------------------------
# image files
# ---------------------------------------------------------------------------------------------


def _expected(array: np.ndarray, scale: float) -> torch.Tensor:
    array = array.astype(np.float64) / scale
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1))


def _close(tensor: torch.Tensor, expected: torch.Tensor, atol: float = 1e-7) -> None:
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(tensor.double(), expected, atol=atol, rtol=0)


def test_rgb_png_is_exact(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    _close(load_image(tmp_path / "a.png"), _expected(rgb, 255))


def test_rgba_composites_on_white_or_drops_alpha(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    color, alpha = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
    over_white = color * alpha + (1 - alpha)
    _close(load_image(tmp_path / "a.png"), torch.from_numpy(over_white.transpose(2, 0, 1)))
    over_black = load_image(tmp_path / "a.png", background=0.0)
    _close(over_black, torch.from_numpy((color * alpha).transpose(2, 0, 1)))
    _close(load_image(tmp_path / "a.png", background=None), _expected(rgba[..., :3], 255))
    assert torch.all(load_image(tmp_path / "a.png")[:, 0, 0] == 1.0)  # transparent -> white


def test_grayscale_replicated_or_single_channel(tmp_path):
    gray = np.random.default_rng(2).integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    three = load_image(tmp_path / "g.png")
    assert three.shape == (3, 6, 5)
    for c in range(3):
        _close(three[c:c + 1], _expected(gray, 255))
    _close(load_image(tmp_path / "g.png", channels=1), _expected(gray, 255))
    assert load_image(tmp_path / "g.png", channels=None).shape == (1, 6, 5)


def test_gray_alpha_composite(tmp_path):
    la = np.random.default_rng(3).integers(0, 256, (3, 4, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    g, a = la[..., 0] / 255.0, la[..., 1] / 255.0
    out = load_image(tmp_path / "la.png", channels=1)
    _close(out, torch.from_numpy((g * a + (1 - a))[None]))


def test_color_to_one_channel_is_bt601_luma(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    _close(load_image(tmp_path / "c.png", channels=1), torch.from_numpy(luma[None]), atol=1e-6)


def test_16bit_gray_png_keeps_full_precision(tmp_path):
    gray = np.array([[0, 1, 255, 256], [32768, 65534, 65535, 12345]], dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png", channels=1)
    _close(out, _expected(gray, 65535))
    assert float(out[0, 0, 1]) > 0  # 1/65535 is not rounded away


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _write_png16(path, array: np.ndarray) -> None:
    """A 16-bit PNG written by hand from the PNG specification, cycling all five row filters."""
    height, width, channels = array.shape
    color_type = {2: 4, 3: 2, 4: 6}[channels]
    bpp = 2 * channels
    raw, prior = b"", [0] * (width * bpp)
    for i in range(height):
        row = list(array[i].astype(">u2").tobytes())
        kind = i % 5
        out = []
        for j, value in enumerate(row):
            left = row[j - bpp] if j >= bpp else 0
            up_left = prior[j - bpp] if j >= bpp else 0
            predictor = [0, left, prior[j], (left + prior[j]) // 2,
                         _paeth(left, prior[j], up_left)][kind]
            out.append((value - predictor) % 256)
        raw += bytes([kind] + out)
        prior = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_color_png_keeps_full_precision(tmp_path, channels):
    rng = np.random.default_rng(5 + channels)
    array = rng.integers(0, 65536, (11, 9, channels), dtype=np.uint16)
    array[0, 0, :] = [0, 65535, 1, 256][:channels]
    _write_png16(tmp_path / "c16.png", array)
    out = load_image(tmp_path / "c16.png", channels=None, background=None)
    color = array[..., :1] if channels == 2 else array[..., :3]
    _close(out, _expected(color, 65535))
    if channels in (2, 4):  # alpha composited over white, at 16-bit precision
        a = array[..., -1:] / 65535.0
        expected = color / 65535.0 * a + (1 - a)
        _close(load_image(tmp_path / "c16.png", channels=None),
               torch.from_numpy(expected.transpose(2, 0, 1)))


def test_16bit_rgb_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    array = np.random.default_rng(9).integers(0, 65536, (6, 4, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", array, photometric="rgb")
    _close(load_image(tmp_path / "c16.tif"), _expected(array, 65535))


def test_palette_images_with_and_without_transparency(tmp_path):
    colors = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], dtype=np.uint8)
    index = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(colors.flatten().tolist())
    img.save(tmp_path / "p.png")
    _close(load_image(tmp_path / "p.png"), _expected(colors[index], 255))
    img.save(tmp_path / "pt.png", transparency=1)  # palette entry 1 is transparent
    expected = colors[index] / 255.0
    expected[index == 1] = 1.0  # composited over white
    _close(load_image(tmp_path / "pt.png"), torch.from_numpy(expected.transpose(2, 0, 1)))


def test_one_bit_image(tmp_path):
    bits = np.array([[True, False], [False, True]])
    Image.fromarray(bits).save(tmp_path / "b.png")
    _close(load_image(tmp_path / "b.png", channels=1), torch.from_numpy(bits[None] * 1.0))


def test_jpeg_matches_pillow_decode(tmp_path):
    rgb = np.random.default_rng(6).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=90)
    reference = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    _close(load_image(str(tmp_path / "a.jpg")), _expected(reference, 255))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    rgb = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.png", exif=exif)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    _close(load_image(tmp_path / "o.png"), _expected(reference, 255))


def test_bad_files_name_the_path(tmp_path):
    missing = tmp_path / "nowhere.png"
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        load_image(missing)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        load_image(text)
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="channels"):
        load_image(tmp_path / "ok.png", channels=2)
    with pytest.raises(ValueError, match="background"):
        load_image(tmp_path / "ok.png", background=2.0)


def test_numpy_round_trip():
    rgb = np.random.default_rng(7).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    t = from_numpy_image(rgb)
    assert t.shape == (3, 4, 5) and t.dtype == torch.float32
    assert np.array_equal(to_numpy_image(t, dtype="uint8"), rgb)
    assert to_numpy_image(t[:1]).shape == (4, 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        from_numpy_image(np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="non-finite"):
        from_numpy_image(np.full((2, 2), np.nan))
    with pytest.raises(TypeError, match="dtype"):
        from_numpy_image(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError):
        to_numpy_image(torch.zeros(2, 4, 4))


def test_float_tiff_out_of_range_and_odd_channel_counts_are_named(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4), 3.0, np.float32))
    with pytest.raises(ValueError, match=r"f\.tif.*\[0, 1\]"):
        load_image(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "ok.tif", np.full((4, 4), 0.25, np.float32))
    _close(load_image(tmp_path / "ok.tif", channels=1), torch.full((1, 4, 4), 0.25).double())
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((4, 4, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(ValueError, match="five.tif"):
        load_image(tmp_path / "five.tif")


def test_planar_rgb_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    array = np.random.default_rng(10).integers(0, 256, (3, 4, 5), dtype=np.uint8)  # (S, Y, X)
    tifffile.imwrite(tmp_path / "planar.tif", array, photometric="rgb", planarconfig="separate")
    _close(load_image(tmp_path / "planar.tif"), _expected(array.transpose(1, 2, 0), 255))


# ---------------------------------------------------------------------------------------------
# read_image_file (what was done) and save_png
# ---------------------------------------------------------------------------------------------


def test_read_image_file_says_what_it_did(tmp_path):
    rgba = np.random.default_rng(11).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    info = read_image_file(tmp_path / "a.png")
    assert (info.bit_depth, info.file_channels, info.alpha, info.orientation) == (8, 3, "composited", 1)
    assert torch.equal(info.image, load_image(tmp_path / "a.png"))
    assert info.notes() == ["alpha channel composited on white"]
    assert read_image_file(tmp_path / "a.png", background=None).notes() == ["alpha channel dropped"]

    gray = np.array([[0, 1], [65535, 300]], dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    info = read_image_file(tmp_path / "g16.png")
    assert (info.bit_depth, info.file_channels, info.alpha) == (16, 1, None)
    assert info.image.shape == (3, 2, 2)
    assert info.notes() == ["grayscale image processed as 3 identical channels", "16-bit image read at full precision"]
    assert read_image_file(tmp_path / "g16.png", channels=None).notes() == ["16-bit image read at full precision"]

    rgb = np.random.default_rng(12).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    info = read_image_file(tmp_path / "o.jpg")
    assert info.orientation == 6 and info.image.shape == (3, 5, 3)  # rotated: W x H
    assert info.notes()[0].startswith("EXIF orientation 6 applied")


def _png_rows(path) -> tuple[tuple[int, ...], np.ndarray]:
    """IHDR fields and the unfiltered bytes of a PNG whose rows all use filter 0 (decoded by hand)."""
    data = path.read_bytes()
    pos, header, idat = 8, None, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        header = struct.unpack(">IIBBBBB", body) if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height = header[:2]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
    assert np.all(raw[:, 0] == 0)
    return header, raw[:, 1:]


@pytest.mark.parametrize("channels", [1, 3])
def test_save_png_16bit_round_trip_and_independent_decode(tmp_path, channels):
    levels = np.random.default_rng(13).integers(0, 65536, (channels, 5, 7)).astype(np.float64)
    levels[:, 0, :3] = [0, 1, 65535]  # the extremes and the smallest step
    img = torch.from_numpy(levels / 65535.0)
    path = save_png(img, tmp_path / "x16.png", bits=16)
    header, rows = _png_rows(path)
    assert header[2:4] == (16, 0 if channels == 1 else 2)
    decoded = rows.view(">u2").reshape(5, 7, channels).transpose(2, 0, 1)
    assert np.array_equal(decoded, levels.astype(np.uint16))
    _close(load_image(path, channels=None), img)
    with Image.open(path) as pil:  # an independent decoder reads it too (at 8 bits for colour)
        high = np.asarray(pil)
    expected_high = levels[0].astype(np.uint16) if channels == 1 else (levels.astype(np.uint16) >> 8).transpose(1, 2, 0)
    assert np.array_equal(high.astype(np.uint16), expected_high)


def test_save_png_8bit_and_refusals(tmp_path):
    rgb = np.random.default_rng(14).integers(0, 256, (4, 3, 3), dtype=np.uint8)
    img = from_numpy_image(rgb)
    save_png(img + 0.3 * (torch.rand_like(img) - 0.5) / 255, tmp_path / "a.png")  # rounds to the same levels
    with Image.open(tmp_path / "a.png") as pil:
        assert pil.mode == "RGB" and np.array_equal(np.asarray(pil), rgb)
    save_png(img[:1] * 2 - 0.4, tmp_path / "g.png")  # gray; clipped to [0, 1]
    with Image.open(tmp_path / "g.png") as pil:
        assert pil.mode == "L"
        assert np.array_equal(np.asarray(pil), np.clip(2 * rgb[..., 0].astype(int) - 102, 0, 255))
    with pytest.raises(ValueError, match=r"\.png"):
        save_png(img, tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="bits"):
        save_png(img, tmp_path / "b.png", bits=12)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_png(torch.zeros(4, 2, 2), tmp_path / "c.png")
