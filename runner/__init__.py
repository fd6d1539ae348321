"""runner: config-driven optimisation experiments (Hydra + PyTorch + MLflow).

This package's ``__init__`` stays empty of imports on purpose: the MLflow writer process imports
``runner.tracking_writer`` and must not pay for torch or Hydra.
"""

__version__ = "0.1.0"
