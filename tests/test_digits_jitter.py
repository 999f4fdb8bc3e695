"""The built-in digits_jitter data set: fixed by its seed, harder than digits, and split by original digit."""

from __future__ import annotations

import pytest
import torch

from autoprune.data import DATASETS, digits, digits_jitter
from autoprune.errors import ConfigError


def test_digits_jitter_is_fixed_by_its_seed_and_registered():
    first, again, other = digits_jitter(seed=0), digits_jitter(seed=0), digits_jitter(seed=1)
    x, x_again, x_other = (b.train.dataset.tensors[0] for b in (first, again, other))
    assert x.shape[1:] == (1, 16, 16) and first.input_shape == (1, 16, 16) and first.num_classes == 10
    assert torch.equal(x, x_again) and not torch.equal(x, x_other)
    assert DATASETS.get("digits_jitter", key="data.builtin") is digits_jitter


def test_digits_jitter_draws_each_digit_copies_times_and_keeps_copies_in_one_split():
    plain, jitter = digits(seed=0), digits_jitter(seed=0, copies=3, noise=0.0)
    for split in ("train", "val", "test"):
        n_plain = len(getattr(plain, split).dataset)
        assert len(getattr(jitter, split).dataset) == 3 * n_plain
    # Noise-free copies of one test digit: three jittered drawings of the same 8x8 image, never a training one.
    test_images = jitter.test.dataset.tensors[0]
    n = len(plain.test.dataset)
    assert not torch.equal(test_images[0], test_images[n])  # two copies of the first test digit differ (jitter)
    assert torch.equal(jitter.test.dataset.tensors[1][:n], jitter.test.dataset.tensors[1][n : 2 * n])


@pytest.mark.parametrize(("options", "key"), [({"copies": 0}, "copies"), ({"noise": -1.0}, "noise"), ({"scale": (1.2, 0.9)}, "scale")])
def test_bad_digits_jitter_options_are_config_errors_naming_the_key(options, key):
    with pytest.raises(ConfigError, match=f"data.options.{key}"):
        digits_jitter(**options)
