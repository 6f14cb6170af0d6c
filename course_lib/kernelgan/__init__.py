"""KernelGAN: blind estimation of the SR kernel of one LR image with an internal GAN (chapter 7).

Bell-Kligler, Shocher & Irani, "Blind Super-Resolution Kernel Estimation using an Internal-GAN",
NeurIPS 2019. The LR image is assumed to be ``y = (x * k) downsampled by s`` with an unknown kernel
``k``. Small patches of a natural image recur across scales, and they recur best when the image is
downscaled with its own kernel (Michaeli & Irani, 2013). KernelGAN turns this into a GAN trained on
the one image ``y``:

* the **generator** ``G`` downscales crops of ``y`` by 2. It is a deep *linear* network (convolutions
  without biases or activations; kernel sizes 7, 5, 3, 1, 1, 1; 64 channels; stride 2 in the last
  layer) applied to each colour channel alone, so it *is* a blur-and-subsample operator with an
  effective 13x13 kernel, which :meth:`~course_lib.kernelgan.networks.DeepLinearGenerator.kernel`
  reads out by passing a delta through the layers;
* the **discriminator** ``D`` is a fully convolutional patch discriminator (a 7x7 convolution, then
  1x1 convolutions with batch norm and ReLU, spectral norm on every convolution, a sigmoid): it maps
  an image to a map of "is this 7x7 patch from ``y``?" probabilities;
* ``G`` wins when the patches of ``G(y)`` cannot be told from the patches of ``y``. Regularisers on
  the kernel (:func:`~course_lib.kernelgan.regularizers.kernel_regularizers`) keep it a plausible
  blur kernel; a bicubic prior pulls ``G`` towards bicubic downscaling at the start
  (:class:`~course_lib.kernelgan.schedule.ConstraintSchedule`).

After training the kernel is cleaned (:func:`~course_lib.degradation.kernels.post_process_kernel`);
the x4 kernel is computed analytically from the x2 kernel
(:func:`~course_lib.degradation.kernels.analytic_x4_kernel`). One call does everything:
:func:`~course_lib.kernelgan.gan.estimate_kernel`. The estimated kernel then feeds a non-blind SR
method that takes a kernel, e.g. :func:`~course_lib.zssr.zssr` (the pipeline of the paper:
KernelGAN + ZSSR).

The modules, one concept each:

* :mod:`course_lib.kernelgan.config`: ``KernelGANConfig`` (the official defaults), ``REGULARIZERS``,
  ``PAPER_ITERATIONS``;
* :mod:`course_lib.kernelgan.networks`: ``DeepLinearGenerator``, ``KernelGANDiscriminator``,
  ``downscale_valid``;
* :mod:`course_lib.kernelgan.crops`: the gradient weight map, crop probabilities, crop sampling;
* :mod:`course_lib.kernelgan.regularizers`: the kernel terms of ``R`` and the boundary mask;
* :mod:`course_lib.kernelgan.schedule`: ``ConstraintSchedule`` (when the bicubic prior fades and the
  late terms start);
* :mod:`course_lib.kernelgan.recurrence`: ``cross_scale_recurrence``, the principle measured directly;
* :mod:`course_lib.kernelgan.gan`: the trainer ``KernelGAN`` and ``estimate_kernel``;
* :mod:`course_lib.kernelgan.fkp`: FKP's flow-based kernel prior (``KernelFlow``,
  ``load_kernel_flow``) and KernelGAN-FKP (``KernelGANFKP``, ``estimate_kernel_fkp``);
* :mod:`course_lib.kernelgan.diagram`: the schematic of FKP in the loop (``draw_kernelgan_fkp``);
  KernelGAN's G and D are drawn by :func:`course_lib.viz.diagrams.kernelgan_architecture`.

Kernel utilities that are not GAN-specific live in :mod:`course_lib.degradation.kernels`
(``post_process_kernel``, ``analytic_x4_kernel``, ``embed_kernel``) and the kernel error in
:mod:`course_lib.metrics` (``kernel_error``); all are re-exported here.

Command line: ``python -m course_lib.kernelgan estimate IMAGE --scale 2 --out kernel.npy``.

Facts from the official code (``sefibk/KernelGAN``) that the defaults of
:class:`~course_lib.kernelgan.config.KernelGANConfig` follow: 64x64 crops for ``G`` (26x26 outputs),
Adam with lr 2e-4 and betas (0.5, 0.999), both learning rates divided by 10 every 750 iterations,
3000 iterations, an L1 GAN loss against 0/1 label maps, images mapped to [-1, 1] inside the GAN,
Gaussian noise on D's inputs (std 1/255 of the [0, 1] range on real crops, 1/255 of the [-1, 1]
range on G's outputs, as the official code adds it), regulariser weights 0.5 (sum to one), 0.5
(boundaries), 5 (sparsity) and 1 (centre) with the last two switched on late, and post-processing
with ``n = 40``. The stride sits in the last layer, as in the official code since its pull request
#10 (earlier versions strided the first layer, which made ``G`` differ from the extracted 13x13
kernel).

Two details of the official code decide whether ``G`` trains at all (chapter 7, "The collapse"):
its bicubic prior compares each output channel with the *sum* of the three channels' bicubic
downscalings, so that its switch threshold (0.4) is not met by a zero kernel
(``KernelGANConfig.bicubic_reference``); and ``G`` must reach the bicubic-like kernel before the
adversarial term can pull it around (``KernelGANConfig.adversarial_after_bicubic``; our addition,
see the config's docstring).

Deliberate differences: the official data loader adds the real crops' noise *in place* to the stored
image, so the image grows noisier during training; here every step draws fresh noise on a copy. Our
crop sampler weights a crop by the total gradient weight inside it (the official code blurs the
weight map with a box of half the crop size). The learning-rate and constraint periods are
compressed for runs shorter than 1000 iterations (see
:meth:`~course_lib.kernelgan.config.KernelGANConfig.period`).

Conventions. Kernels are *correlation* kernels as in
:class:`~course_lib.degradation.operators.BlurDownsample`:
``(A x)[j] = sum_t k[t] x[s*j + t - c]`` with ``c = ceil((K - s) / 2)``; for the 13x13 kernel at
scale 2 its centre of mass belongs at 6.5 (``kernel_target_centre(13, 2)``), which is also the
official code's convention. ``G`` itself uses 'valid' convolutions, so its output pixel ``j`` equals
``(A x)[j + c/s]`` away from the borders.

Speed. Because ``G`` is linear, ``G(x)`` equals "correlate ``x`` with ``G.kernel()``, keep every
second pixel" exactly, values and gradients alike (``tests/test_kernelgan.py`` checks both). The
training loop uses that form: it costs one pass of a delta through the layers instead of a pass of
the whole crop, about 15 times less work for the same updates.
"""

from __future__ import annotations

from course_lib.degradation.kernels import analytic_x4_kernel, embed_kernel, post_process_kernel
from course_lib.metrics import kernel_error

from .config import PAPER_ITERATIONS, REGULARIZERS, KernelGANConfig
from .crops import crop_probabilities, gradient_weight_map, sample_crop_corners
from .diagram import draw_kernelgan_fkp
from .fkp import KernelFlow, KernelGANFKP, estimate_kernel_fkp, load_kernel_flow
from .gan import KernelGAN, estimate_kernel
from .networks import DeepLinearGenerator, KernelGANDiscriminator, downscale_valid
from .recurrence import cross_scale_recurrence
from .regularizers import (
    boundaries_loss,
    boundary_mask,
    centre_loss,
    kernel_regularizers,
    sparsity_loss,
    sum_to_one_loss,
)
from .schedule import ConstraintSchedule

__all__ = [
    "KernelGANConfig",
    "DeepLinearGenerator",
    "KernelGANDiscriminator",
    "downscale_valid",
    "gradient_weight_map",
    "crop_probabilities",
    "sample_crop_corners",
    "boundary_mask",
    "sum_to_one_loss",
    "boundaries_loss",
    "sparsity_loss",
    "centre_loss",
    "kernel_regularizers",
    "ConstraintSchedule",
    "post_process_kernel",
    "analytic_x4_kernel",
    "embed_kernel",
    "kernel_error",
    "cross_scale_recurrence",
    "KernelGAN",
    "estimate_kernel",
    "REGULARIZERS",
    "PAPER_ITERATIONS",
    "KernelFlow",
    "KernelGANFKP",
    "estimate_kernel_fkp",
    "load_kernel_flow",
    "draw_kernelgan_fkp",
]
