"""Batches on the device: uint8 NHWC -> normalised float NCHW, cropped to their boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Inputs:
    """uint8 NHWC batches -> normalised float NCHW on the device (channels_last on GPU),
    cropped to the crop boxes (random-resized-crop and flip) when the batch has them.

    Each row holds its crop (its box inside the row, the crop's last row and column repeated
    once beyond it, so that sampling clamps at the crop's edges as torchvision's resized_crop
    does). The resize is one bilinear grid_sample for the whole batch: no antialiasing, which
    matters only for crops much larger than the output (at most 1.14x for 256 px squares and
    224 px crops, 1.5x for the widest crop of a whole image at a 256 short side)."""

    def __init__(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: torch.device,
        crop: int,
    ) -> None:
        self.device = device
        self.crop = crop
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()  # channels_last strides
        if boxes.shape[1]:
            x = self.resized_crop(x, boxes.to(self.device, non_blocking=True))
        layout = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        return x.sub_(self.mean).div_(self.std)

    def resized_crop(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        top, left, h, w, flip = boxes.unbind(1)
        theta = torch.zeros(len(boxes), 2, 3, device=x.device)
        theta[:, 0, 0] = w / width * (1 - 2 * flip)  # a flip mirrors the sampling grid
        theta[:, 0, 2] = (2 * left + w) / width - 1
        theta[:, 1, 1] = h / height
        theta[:, 1, 2] = (2 * top + h) / height - 1
        grid = F.affine_grid(theta, [len(boxes), 3, self.crop, self.crop], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
