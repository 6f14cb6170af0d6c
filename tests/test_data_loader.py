"""course_lib.data.loader: patches of an image folder, deterministic per (seed, step), prefetched by workers."""

import numpy as np
import pytest
import torch

from course_lib.data import loader
from course_lib.data.photos import save_png


def make_folder(path, sizes=((40, 56), (48, 48), (12, 12))):
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for k, (h, w) in enumerate(sizes):
        save_png(torch.rand(3, h, w, generator=gen), path / f"img{k}.png")
    return path


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    return make_folder(tmp_path / "images")


def test_folder_patches_are_a_function_of_seed_and_step(folder):
    with pytest.warns(UserWarning, match="smaller than the 16-px patch"):
        fn = loader.FolderPatches(folder, 16, 4, scale=4, seed=3)
    assert len(fn) == 2  # the 12x12 image is skipped
    a, b = fn(5), fn(6)
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, fn(5)), "same (seed, step): same batch"
    assert not torch.equal(a, b), "another step: another batch"
    with pytest.warns(UserWarning):
        other_seed = loader.FolderPatches(folder, 16, 4, scale=4, seed=4)
    assert not torch.equal(a, other_seed(5))
    # patch i depends on (seed, step, i) only: a larger batch starts with the same patches
    with pytest.warns(UserWarning):
        big = loader.FolderPatches(folder, 16, 6, scale=4, seed=3)
    assert torch.equal(big(5)[:4], a)


def test_folder_patches_are_crops_on_the_lr_grid(folder):
    with pytest.warns(UserWarning):
        fn = loader.FolderPatches(folder, 16, 8, scale=4, seed=0, augment=False)
    images = [np.load(p) for p in fn.paths]
    for patch in fn(0):
        arr = (patch.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        found = [(k, top, left) for k, img in enumerate(images)
                 for top in range(0, img.shape[0] - 15, 4) for left in range(0, img.shape[1] - 15, 4)
                 if np.array_equal(img[top:top + 16, left:left + 16], arr)]
        assert found, "every patch is a crop of an image at a corner that is a multiple of the scale"


def test_decoded_copies_are_made_once_and_exact(folder, tmp_path):
    from course_lib.data import list_images, load_image

    files = list_images(folder)
    copies = loader.decoded_copies(files, tmp_path / "c")
    mtimes = [c.stat().st_mtime_ns for c in copies]
    assert loader.decoded_copies(files, tmp_path / "c") == copies
    assert [c.stat().st_mtime_ns for c in copies] == mtimes, "a second call decodes nothing"
    img = load_image(files[0])
    assert torch.equal(torch.from_numpy(np.load(copies[0])).permute(2, 0, 1).float() / 255, img)


def test_prefetched_batches_equal_direct_calls_and_resume_anywhere(folder):
    with pytest.warns(UserWarning):
        fn = loader.FolderPatches(folder, 16, 2, scale=2, seed=1)
    pre = loader.PrefetchedBatches(fn, workers=2, stop=12)
    try:
        for step in [0, 1, 2, 3, 7, 8, 2, 11, 12, 13]:  # in order, a jump (resume), back, past the stop
            assert torch.equal(pre(step), fn(step)), step
    finally:
        pre.close()
    assert torch.equal(loader.PrefetchedBatches(fn, workers=0)(4), fn(4))


def test_training_batches_sources(folder):
    fn, what = loader.training_batches(None, 16, 2, scale=4, seed=0)
    assert fn(0).shape == (2, 3, 16, 16) and "photos" in what
    with pytest.warns(UserWarning):
        fn, what = loader.training_batches(str(folder), 16, 2, scale=4, seed=0, workers=1, stop=3)
    assert isinstance(fn, loader.PrefetchedBatches) and "2 images" in what and "1 loader workers" in what
    assert fn(0).shape == (2, 3, 16, 16)
    fn.close()
    with pytest.raises(ValueError, match="evaluation set"):
        loader.training_batches("set5", 16, 2)
    with pytest.raises(FileNotFoundError, match="nor a folder"):
        loader.training_batches(str(folder / "missing"), 16, 2)
    with pytest.raises(FileNotFoundError):  # DIV2K is not in the (empty) cache, and no download is asked for
        loader.training_batches("div2k", 16, 2, download=False)


def test_folder_patches_refuse_bad_arguments(folder, tmp_path):
    with pytest.raises(ValueError, match="patch"):
        loader.FolderPatches(folder, 0, 2)
    with pytest.raises(ValueError, match="scale"):
        loader.FolderPatches(folder, 18, 2, scale=4)
    with pytest.raises(ValueError, match="smaller than the patch"), pytest.warns(UserWarning):
        loader.FolderPatches(folder, 64, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        loader.FolderPatches(tmp_path / "empty", 8, 2)


def test_starting_the_workers_leaves_the_global_random_state_alone(folder):
    with pytest.warns(UserWarning):
        fn = loader.FolderPatches(folder, 16, 2, seed=1)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    pre = loader.PrefetchedBatches(fn, workers=1, stop=3)
    pre(0)
    pre.close()
    assert torch.equal(torch.rand(3), expected)
