"""What a classifier looks at: a saliency map and the first convolution's feature maps for one image.

The saliency map is the size of the gradient of the predicted class's score before the softmax (its calibrated
logit, averaged over any test-time shifts and an ensemble's members: ``class_scores``) with respect to each input
pixel (Simonyan et al., 2013), averaged over the image and noisy copies of it (SmoothGrad, Smilkov et al., 2017:
plain gradients are speckled): where a change of ink would change the answer most. The feature maps are the
outputs of the network's first ``nn.Conv2d`` for the image itself, each scaled to 0..255 on its own; a network
without convolutions (logreg, mlp) has none.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .inference import Classifier, pixels

NOISY_COPIES = 15  # one batched pass with the image: a few milliseconds on one CPU thread
NOISE = 0.15  # standard deviation of the noise, in pixel units of [0, 1]


@dataclass
class Explanation:
    digit: int  # the class explained: the most likely one
    saliency: np.ndarray  # float32 (28, 28) in [0, 1], 1 where the gradient is largest
    feature_maps: np.ndarray  # uint8 (channels, H, W), each map scaled to 0..255; (0, 28, 28) without a convolution


def explain(classifier: Classifier, image: np.ndarray) -> Explanation:
    """Saliency and first-convolution feature maps of ``classifier`` for one (28, 28) image in MNIST form.

    Safe to call while other threads classify with the same model: only this thread's pass is recorded.
    """
    clean = pixels(image)
    noise = torch.randn((NOISY_COPIES, *clean.shape[1:]), generator=torch.Generator().manual_seed(0)) * NOISE
    x = torch.cat([clean, clean + noise]).requires_grad_(True)  # the same map every time for the same image
    # An ensemble's first convolution is its first member's.
    conv = next((module for module in classifier.inference.modules() if isinstance(module, nn.Conv2d)), None)
    recorded: list[torch.Tensor] = []
    caller = threading.get_ident()

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if threading.get_ident() == caller:
            recorded.append(output[0].detach())  # the clean image (with TTA: its unshifted copy comes first)

    hook = conv.register_forward_hook(record) if conv is not None else None
    try:
        with torch.enable_grad():
            # The class score before the softmax (averaged over any test-time shifts, and an ensemble's members):
            # a calibrated model's confident softmax saturates, and its gradient would be mostly noise.
            scores = classifier.inference.class_scores(x)
            digit = int(scores[0].argmax())
            (gradient,) = torch.autograd.grad(scores[:, digit].sum(), x)
    finally:
        if hook is not None:
            hook.remove()
    saliency = gradient[:, 0].abs().mean(0)
    saliency = saliency / saliency.max().clamp_min(1e-12)
    maps = recorded[0] if recorded else torch.zeros(0, 28, 28)
    return Explanation(digit, saliency.numpy().astype(np.float32), scaled_to_bytes(maps))


def scaled_to_bytes(maps: torch.Tensor) -> np.ndarray:
    """Each (H, W) map scaled from its own minimum to its own maximum onto 0..255."""
    low = maps.amin((1, 2), keepdim=True)
    spread = (maps.amax((1, 2), keepdim=True) - low).clamp_min(1e-12)
    return ((maps - low) / spread * 255).round().to(torch.uint8).numpy()
