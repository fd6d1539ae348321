"""The descent core: the problem (objective, variables, start), gradient backends, optimizers, the
batch-first loop and its compiled step. Knows nothing of MLflow or Hydra's runtime."""
