"""Ensemble prediction of one raw case: class probabilities on the case's original grid, averaged over members.

Per member: preprocess the image with the member's plans (the same code as ``nnunet-ray preprocess``), sliding
window (+ flip TTA), softmax, then each class restored to the original grid (unpad, resample back, uncrop). Members
trained with the same plans (the folds of one configuration) share one preprocessing and one restore: their
probabilities are averaged on the preprocessed grid first, which gives the same result because restoring is
linear. 2D and 3D members, each at its own spacing, meet on the original grid, as nnU-Net v2 ensembles them.

    predictor = EnsemblePredictor([load_member(p) for p in checkpoints], device="cuda", tta=True)
    probs = predictor(case)  # (K, Z, Y, X) float32 on the original grid
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from nnunet_ray.config import SlidingWindow
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.inference.members import Member, check_compatible
from nnunet_ray.inference.predictor import window_scores
from nnunet_ray.preprocessing.case import preprocess_for_prediction
from nnunet_ray.preprocessing.inverse import restore_probabilities


@dataclass(frozen=True)
class WindowOptions(SlidingWindow):
    """How each member's sliding window runs: the shared sliding-window options, plus

    Attributes:
        amp: autocast (on CUDA in each member's training ``--amp-dtype``, fp16 by default; bf16 on CPU).
        sw_device: ``"model"`` keeps the whole-volume accumulators on the model's device; ``"cpu"`` keeps them in
            host memory while windows run on the model's device (large volumes on a GPU).
    """

    amp: bool = False
    sw_device: str = "model"


def model_probabilities(model: nn.Module, image: np.ndarray, *, patch_size: Sequence[int], n_classes: int,
                        device: torch.device, options: WindowOptions = WindowOptions(),
                        cuda_dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Class probabilities of one network over a whole preprocessed image.

    Args:
        model: the network in eval mode on ``device``.
        image: ``(C, Z, Y, X)`` float32 on the plans' grid.
        patch_size: the window, (Z, Y, X), or (Y, X) slice-wise for a 2D network.
        n_classes: output classes, background included.
        device: where the model runs.
        options: window settings.
        cuda_dtype: the autocast dtype on CUDA with ``options.amp`` (the one the network validated in).

    Returns:
        ``(K, Z, Y, X)`` float32 probabilities (softmax of the blended logits; with TTA, blended flip-averaged
        probabilities), on the accumulator device (``device``, or the CPU with ``sw_device="cpu"``).
    """
    accumulate = torch.device("cpu") if options.sw_device == "cpu" else device
    dtype = None
    if options.amp:
        dtype = cuda_dtype if device.type == "cuda" else torch.bfloat16
    volume = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)  # (1, C, Z, Y, X)
    scores = window_scores(model, volume, options, patch_size=list(patch_size), n_classes=n_classes, device=device,
                           dtype=dtype, out_device=accumulate)[0]  # (K, Z, Y, X)
    return scores if options.tta else torch.softmax(scores, dim=0)


class EnsemblePredictor:
    """Holds every member's network once; ``__call__(case)`` gives the averaged probabilities on the original grid.

    Args:
        members: the ensemble (same classes and channels).
        device: where the networks run.
        options: window settings shared by all members.

    Raises:
        ConfigError: no member, or members that disagree on classes or channels.
    """

    def __init__(self, members: Sequence[Member], *, device: torch.device | str = "cpu",
                 options: WindowOptions = WindowOptions()) -> None:
        if not members:
            raise ValueError("EnsemblePredictor needs at least one member")
        check_compatible(members)
        self.device, self.options = torch.device(device), options
        self.n_members = len(members)
        self.n_classes = members[0].n_classes
        # Members preprocessed identically (the folds of one configuration) share preprocessing and restore.
        # Each network with the autocast dtype it trained and validated in (--amp-dtype; fp16 has less range).
        self.groups: dict[str, tuple[Member, list[tuple[nn.Module, torch.dtype]]]] = {}
        for member in members:
            _, models = self.groups.setdefault(member.preprocessing_key, (member, []))
            dtype = torch.bfloat16 if member.config.train.amp_dtype == "bfloat16" else torch.float16
            models.append((member.build(self.device), dtype))

    def __call__(self, case: CaseFiles) -> np.ndarray:
        """Predict one raw case.

        Returns:
            ``(K, Z, Y, X)`` float32 probabilities on the case's original grid (shape of its image file).

        Raises:
            CaseError: the case is unreadable or does not fit the plans (e.g. the wrong number of channels).
        """
        total: np.ndarray | None = None
        for first, models in self.groups.values():
            image, props = preprocess_for_prediction(case, first.plans)
            # (K, Z, Y, X), the group's members summed on the plans' grid (a group has a model: never sum()'s 0)
            summed = cast(torch.Tensor, sum(model_probabilities(model, image, patch_size=first.patch_size,
                                                                n_classes=self.n_classes, device=self.device,
                                                                options=self.options, cuda_dtype=dtype)
                                            for model, dtype in models))
            restored = restore_probabilities((summed / len(models)).cpu().numpy(), props) * len(models)
            total = restored if total is None else total + restored
        assert total is not None, "an ensemble has at least one member"
        return total / self.n_members
