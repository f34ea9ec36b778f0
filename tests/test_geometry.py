import pytest
import torch
import torch.nn.functional as F

from mnistkit.geometry import affine_grid


@pytest.mark.parametrize("height, width", [(28, 28), (20, 33), (1, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_affine_grid_is_pytorchs(height, width, dtype):
    theta = torch.randn(7, 2, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    expected = F.affine_grid(theta, [7, 1, height, width], align_corners=False)
    grid = affine_grid(theta, height, width)
    assert grid.shape == expected.shape == (7, height, width, 2) and grid.dtype == dtype
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)


def test_the_identity_samples_each_pixel_at_its_centre():
    identity = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])
    image = torch.arange(12.0).view(1, 1, 3, 4)
    grid = affine_grid(identity, 3, 4)
    torch.testing.assert_close(F.grid_sample(image, grid, align_corners=False), image)
