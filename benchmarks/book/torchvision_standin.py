"""A small stand-in for the parts of torchvision that d2l 1.0.3's PyTorch code touches.

No torchvision build matches the local torch 2.13.0+cpu, and d2l.torch imports torchvision at module level.
`install()` puts a module named `torchvision` into sys.modules with `datasets.FashionMNIST` (reading the
local IDX files, never downloading) and `transforms.Compose/Resize/ToTensor`, computing what torchvision's
do for a 28x28 grayscale image: a PIL 'L' image, a bilinear resize (PIL returns an unchanged copy when the
size already matches, so the book's Resize((28, 28)) is the identity), and ToTensor's uint8 -> float32 / 255.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable

import numpy as np

from benchmarks.book import idx


class Compose:
    """torchvision.transforms.Compose: apply the transforms in order."""

    def __init__(self, transforms: list[Callable[[Any], Any]]):
        self.transforms = transforms

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img


class Resize:
    """torchvision.transforms.Resize for PIL images and a (height, width) size, bilinear as torchvision's default."""

    def __init__(self, size: tuple[int, int] | list[int] | int):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, img: Any) -> Any:
        from PIL import Image

        height, width = self.size
        return img.resize((width, height), Image.BILINEAR)


class ToTensor:
    """torchvision.transforms.ToTensor for a PIL 'L' image: (1, H, W) float32, pixels divided by 255."""

    def __call__(self, img: Any) -> Any:
        import torch

        array = np.array(img, np.uint8, copy=True)
        tensor = torch.from_numpy(array).view(array.shape[0], array.shape[1], 1).permute((2, 0, 1)).contiguous()
        return tensor.to(dtype=torch.get_default_dtype()).div(255)


class FashionMNIST:
    """torchvision.datasets.FashionMNIST over the local IDX files; `root` and `download` are ignored.

    `cache_transformed=True` keeps each image's transformed tensor after its first use: the book's transforms
    (Resize to the same size, ToTensor) are deterministic, so every later epoch gets the same values, only
    without re-running PIL per image (which dominates an epoch on a loaded 2-core machine). Use it only with
    `num_workers=0` (a worker's cache dies with the worker) and deterministic transforms.
    """

    cache_transformed: bool = False

    def __init__(self, root: str = "", train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, download: bool = False):
        import torch

        images, labels = idx.load_split("train" if train else "test")
        self.data = torch.from_numpy(images.copy())
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.transform, self.target_transform, self.train = transform, target_transform, train
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        index = int(index)
        target = int(self.targets[index])
        if self.target_transform is not None:
            target = self.target_transform(target)
        if index in self._cache:
            return self._cache[index], target
        img = Image.fromarray(self.data[index].numpy(), mode="L")
        if self.transform is not None:
            img = self.transform(img)
        if self.cache_transformed:
            self._cache[index] = img
        return img, target


def install() -> types.ModuleType:
    """Register the stand-in as `torchvision` (and its submodules) unless a real torchvision imports."""
    module = types.ModuleType("torchvision")
    module.__version__ = "0.0-standin"
    module.datasets = types.ModuleType("torchvision.datasets")
    module.datasets.FashionMNIST = FashionMNIST
    module.transforms = types.ModuleType("torchvision.transforms")
    module.transforms.Compose, module.transforms.Resize, module.transforms.ToTensor = Compose, Resize, ToTensor
    sys.modules.update({"torchvision": module, "torchvision.datasets": module.datasets,
                        "torchvision.transforms": module.transforms})
    return module
