"""Tests of course_lib.data.patches: exact crops, the 8 symmetries, determinism, DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib.data import PatchDataset, PatchSampler, dihedral


def _unique_image(channels: int = 3, height: int = 20, width: int = 24, seed: int = 0):
    """An image whose every value occurs once, so a crop can be located exactly."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randperm(channels * height * width, generator=g).float()
    return (values / values.numel()).reshape(channels, height, width)


def _numpy_symmetries(a: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square on the last two axes, written with numpy."""
    out = []
    for mirror in (False, True):
        for turns in range(4):
            b = np.rot90(a, turns, axes=(-2, -1))
            out.append(np.flip(b, axis=-1) if mirror else b)
    return out


def _locate(patch: torch.Tensor, image: torch.Tensor) -> tuple[int, int]:
    """Top-left corner of ``patch`` in ``image`` via its unique top-left value."""
    where = torch.nonzero(image[0] == patch[0, 0, 0])
    assert where.shape[0] == 1, "value not found exactly once"
    return int(where[0, 0]), int(where[0, 1])


def test_shapes_dtype_and_determinism():
    image = _unique_image()
    sampler = PatchSampler([image], 8, 5, seed=3)
    batch = sampler(7)
    assert batch.shape == (5, 3, 8, 8) and batch.dtype == torch.float32
    assert torch.equal(batch, sampler(7))
    assert not torch.equal(batch, sampler(8))
    fresh = PatchSampler([image], 8, 5, seed=3)
    assert torch.equal(fresh(7), batch)  # no hidden state: resume gives the same batches
    assert not torch.equal(PatchSampler([image], 8, 5, seed=4)(7), batch)


def test_patches_are_exact_crops_without_augmentation():
    image = _unique_image()
    sampler = PatchSampler({"img": image}, 6, 16, augment=False, seed=1)
    corners = set()
    for step in range(5):
        for patch in sampler(step):
            top, left = _locate(patch, image)
            assert torch.equal(patch, image[:, top:top + 6, left:left + 6])
            corners.add((top, left))
    assert len(corners) > 40  # crops do move around


def test_augmented_patches_are_symmetries_of_exact_crops():
    image = _unique_image(channels=2)
    sampler = PatchSampler([image], 7, 32, seed=2)
    for patch in sampler(0):
        matches = 0
        for candidate in _numpy_symmetries(patch.numpy()):
            # one of the inverse symmetries turns the patch back into an upright crop
            candidate = torch.from_numpy(candidate.copy())
            where = torch.nonzero(image[0] == candidate[0, 0, 0])
            top, left = int(where[0, 0]), int(where[0, 1])
            crop = image[:, top:top + 7, left:left + 7]
            matches += crop.shape[1:] == (7, 7) and torch.equal(candidate, crop)
        assert matches == 1


def test_all_eight_symmetries_occur_uniformly():
    image = _unique_image(channels=1, height=5, width=5)
    references = _numpy_symmetries(image.numpy())
    sampler = PatchSampler([image], 5, 400, seed=0)  # patch = whole image: only the symmetry varies
    counts = np.zeros(8, dtype=int)
    for patch in sampler(0):
        found = [k for k, ref in enumerate(references) if np.array_equal(patch.numpy(), ref)]
        assert len(found) == 1
        counts[found[0]] += 1
    assert (counts > 0).all()
    assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_dihedral_matches_numpy_and_inverts():
    x = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    references = _numpy_symmetries(x.numpy())
    for t in range(8):
        y = dihedral(x, t)
        assert np.array_equal(y.numpy(), references[t])
        assert torch.equal(dihedral(y, t, inverse=True), x)
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_images_are_chosen_in_proportion_to_area():
    small, large = torch.zeros(1, 10, 10), torch.ones(1, 10, 30)  # areas 1 : 3
    patches = PatchSampler([small, large], 4, 2000, seed=5)(0)
    from_large = int((patches.mean(dim=(1, 2, 3)) == 1).sum())
    assert stats.binomtest(from_large, 2000, 0.75).pvalue > 1e-3, from_large


def test_scale_aligns_crops_and_requires_divisibility():
    image = _unique_image(height=30, width=33)
    sampler = PatchSampler([image], 8, 64, augment=False, scale=4, seed=0)
    for patch in sampler(0):
        top, left = _locate(patch, image)
        assert top % 4 == 0 and left % 4 == 0
    with pytest.raises(ValueError, match="divisible"):
        PatchSampler([image], 10, 4, scale=4)


def test_dataset_with_dataloader():
    image = _unique_image()
    dataset = PatchDataset([image], 8, length=10, seed=1, augment=False)
    assert len(dataset) == 10
    assert torch.equal(dataset[3], dataset[3]) and not torch.equal(dataset[3], dataset[4])
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=0, shuffle=False)
    batches = list(loader)
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    assert batches[0].shape == (4, 3, 8, 8)
    assert torch.equal(batches[1][0], dataset[4])
    for patch in torch.cat(batches):
        top, left = _locate(patch, image)
        assert torch.equal(patch, image[:, top:top + 8, left:left + 8])
    with pytest.raises(IndexError):
        dataset[10]


def test_dead_leaves_mixing():
    gray = torch.full((3, 16, 16), 0.5)
    patches = PatchSampler([gray], 16, 200, seed=0, dead_leaves_fraction=0.5)(0)
    synthetic = int((patches.std(dim=(1, 2, 3)) > 0).sum())
    assert stats.binomtest(synthetic, 200, 0.5).pvalue > 1e-3, synthetic
    only = PatchDataset([], 12, length=2, dead_leaves_fraction=1.0,
                        dead_leaves_options={"channels": 1})
    assert only[0].shape == (1, 12, 12) and float(only[0].std()) > 0


def test_photo_names_are_accepted():
    patches = PatchSampler(["chelsea"], 32, 2, seed=0)(0)
    assert patches.shape == (2, 3, 32, 32)


def test_bad_inputs_are_named():
    small = torch.rand(3, 10, 40)
    with pytest.raises(ValueError, match="tiny"):
        PatchSampler({"ok": torch.rand(3, 40, 40), "tiny": small}, 16, 2)
    with pytest.raises(ValueError, match="image #1"):
        PatchSampler([torch.rand(3, 40, 40), small], 16, 2)
    with pytest.raises(ValueError, match="no images"):
        PatchSampler([], 8, 2)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        PatchSampler([torch.rand(40, 40)], 8, 2)
    with pytest.raises(ValueError, match="channel"):
        PatchSampler([torch.rand(3, 40, 40), torch.rand(1, 40, 40)], 8, 2)
    with pytest.raises(TypeError, match="floating"):
        PatchSampler([torch.zeros(3, 40, 40, dtype=torch.uint8)], 8, 2)
    with pytest.raises(ValueError, match="non-finite"):
        PatchSampler([torch.full((3, 40, 40), float("nan"))], 8, 2)
    with pytest.raises(ValueError, match="batch_size"):
        PatchSampler([torch.rand(3, 40, 40)], 8, 0)
    with pytest.raises(ValueError, match="seed"):
        PatchSampler([torch.rand(3, 40, 40)], 8, 2, seed=-1)
    with pytest.raises(ValueError, match="step"):
        PatchSampler([torch.rand(3, 40, 40)], 8, 2)(-1)
    with pytest.raises(ValueError, match="unknown photo"):
        PatchSampler(["no_such_photo"], 8, 2)
