"""Train handwritten-digit classifiers with fastsoftmax alone, optionally matched against torch.

    python examples/train_digits.py [--model softreg|mlp|both] [--epochs N] [--dtype float32|float64]
                                    [--subset N] [--compare-torch] [--plot PATH] ...
    python -m fastsoftmax train [the same options]

scikit-learn's bundled digits (no download), standardised, a fixed train/test split; softmax
regression and a one-hidden-layer ReLU network, trained with the loss and gradient of
``fastsoftmax.cross_entropy_with_grad(..., out=logits)``, the rest of the backward pass in
NumPy, and ``fastsoftmax.SGD`` (momentum 0.9, weight decay 1e-4 on the weights, 0 on the
biases).  ``--compare-torch`` trains the same models with torch from the same weights over the
same mini-batches and reports how far the loss curves are apart.  Needs
``pip install 'fastsoftmax[examples]'`` (scikit-learn; tqdm and matplotlib optional); torch
for ``--compare-torch`` (``pip install torch==2.13.0``).

The code lives in the package (``fastsoftmax/_train_digits.py``) so that an installed
fastsoftmax can run it too; this file is the script form.
"""

import os
import sys

if "fastsoftmax" not in sys.modules:
    # Run from a source checkout (`python examples/train_digits.py`): use the checkout's package.
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(_root, "fastsoftmax", "__init__.py")) and _root not in sys.path:
        sys.path.insert(0, _root)

from fastsoftmax._train_digits import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
