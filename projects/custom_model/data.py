"""The data of the study: scikit-learn's bundled 8x8 digits (offline, 1797 images).

mltune calls ``load()`` once per process. It returns the arrays by split; without
``x_val``/``y_val`` mltune holds out ``data.validation_split`` of the training images for
validation. ``x_test``/``y_test`` are only used to evaluate a registered model.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

TEST_FRACTION = 0.2
SEED = 0


def load() -> dict[str, np.ndarray]:
    """Images of shape (N, 8, 8, 1), float32 pixels 0..16, labels 0..9 (int64)."""
    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    n_test = round(len(x) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
