"""Data for the course: packaged photos, image files, dead-leaves images, patches, 2D toys.

Everything works offline: photos come from files that scikit-image, scikit-learn and matplotlib
install with themselves; everything else is generated.
"""

from __future__ import annotations

from .datasets import (
    DATASETS,
    Archive,
    ChecksumError,
    DatasetSpec,
    DownloadError,
    UnverifiedDownloadWarning,
    data_dir,
    dataset_env_var,
    dataset_path,
    download,
    download_file,
    list_images,
    load_dataset_images,
)
from .dead_leaves import dead_leaves, dead_leaves_batch
from .patches import PatchDataset, PatchSampler, dihedral, seeded_generator, training_sampler
from .photos import (
    EVAL_PHOTOS,
    EXTRA_PHOTOS,
    TRAIN_PHOTOS,
    ImageFile,
    from_numpy_image,
    list_photos,
    load_image,
    load_photo,
    photo_info,
    read_image_file,
    rgb_to_luma,
    save_png,
    to_numpy_image,
)
from .toy2d import (
    TOY_NAMES,
    EntropyEstimate,
    GaussianMixture,
    Ridge,
    Rings,
    Toy2D,
    TwoMoons,
    make_toy,
)

__all__ = [
    "EVAL_PHOTOS", "TRAIN_PHOTOS", "EXTRA_PHOTOS", "list_photos", "photo_info", "load_photo",
    "load_image", "read_image_file", "ImageFile", "save_png", "to_numpy_image", "from_numpy_image", "rgb_to_luma",
    "dead_leaves", "dead_leaves_batch",
    "PatchSampler", "PatchDataset", "dihedral", "seeded_generator", "training_sampler",
    "Toy2D", "GaussianMixture", "Rings", "TwoMoons", "Ridge", "EntropyEstimate", "make_toy",
    "TOY_NAMES",
    "DATASETS", "Archive", "DatasetSpec", "ChecksumError", "DownloadError",
    "UnverifiedDownloadWarning", "data_dir", "dataset_env_var", "dataset_path", "download",
    "download_file", "list_images", "load_dataset_images",
]
