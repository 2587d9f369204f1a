"""augment_crop_flip: shapes, determinism, that it really crops and flips."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ctxbudget.data import augment_crop_flip


def test_shape_dtype_and_determinism():
    x = torch.rand(16, 3, 32, 32)
    a = augment_crop_flip(x, generator=torch.Generator().manual_seed(0))
    b = augment_crop_flip(x, generator=torch.Generator().manual_seed(0))
    c = augment_crop_flip(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert augment_crop_flip(torch.rand(0, 1, 28, 28)).shape == (0, 1, 28, 28)


def test_each_output_is_a_shifted_window_possibly_flipped():
    n, pad = 64, 4
    x = torch.rand(n, 2, 10, 12)
    out = augment_crop_flip(x, pad=pad, generator=torch.Generator().manual_seed(5))
    padded = F.pad(x, (pad,) * 4)
    seen_flip, seen_noflip, offsets = 0, 0, set()
    for i in range(n):
        found = False
        for oy in range(2 * pad + 1):
            for ox in range(2 * pad + 1):
                win = padded[i, :, oy:oy + 10, ox:ox + 12]
                if torch.equal(out[i], win):
                    seen_noflip += 1
                elif torch.equal(out[i], win.flip(-1)):
                    seen_flip += 1
                else:
                    continue
                offsets.add((oy, ox))
                found = True
                break
            if found:
                break
        assert found, f"sample {i} is not a padded crop (flipped or not)"
    assert seen_flip > 10 and seen_noflip > 10
    assert len(offsets) > 20


def test_zero_padding_appears_and_pad_zero_only_flips():
    x = torch.ones(200, 1, 8, 8)
    out = augment_crop_flip(x, pad=4, generator=torch.Generator().manual_seed(0))
    assert (out == 0).any() and (out.sum((1, 2, 3)) < 64).float().mean() > 0.5
    y = torch.arange(16.0).view(1, 1, 4, 4).repeat(50, 1, 1, 1)
    o = augment_crop_flip(y, pad=0, generator=torch.Generator().manual_seed(0))
    flipped = (o == y.flip(-1)).flatten(1).all(1)
    same = (o == y).flatten(1).all(1)
    assert (flipped ^ same).all() and flipped.any() and same.any()
