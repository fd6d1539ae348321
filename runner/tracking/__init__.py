"""The record: what a run sends to MLflow (params, metrics, tags, artifacts, figures), the writer
process that writes it, and the store. Imports neither torch nor the descent code, so that the
writer process stays light (checked by the import-linter contracts in ``pyproject.toml``)."""
