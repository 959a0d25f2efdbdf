"""Learn layer widths inside the trainers people already use (optional extras).

- :mod:`widthlab.integrations.lightning`: ``WidthCallback`` for PyTorch Lightning
  (``pip install widthlab[lightning]``);
- :mod:`widthlab.integrations.transformers`: ``WidthCallback`` and ``WidthTrainer`` for
  Hugging Face's ``Trainer`` (``pip install widthlab[transformers]``).

The core of widthlab never imports this package, and this package imports neither trainer
until one of its modules is imported. Both callbacks share :class:`~._core.WidthSizer`: gate
the model before training, add ``price * size_penalty`` to the optimised loss, shrink dead
units at an interval with the optimizer state kept in place (parameters keep their identity,
so the learning-rate scheduler keeps working), and save the sizes needed to resume.
"""

from widthlab.integrations._core import WidthSizer

__all__ = ["WidthSizer"]
