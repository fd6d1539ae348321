"""Batched sweeps: the jobs of a sweep that differ only in per-row values run as one ``(B, d)`` descent,
and every job is still recorded as its own MLflow run (``hydra/launcher=batched``).

``plan`` groups the jobs, ``group`` runs a group's descent, ``children`` turns its rows into MLflow
child runs (written in bulk by the writer process) and the parent's trajectory table. The Hydra side
(job folders, ``JobReturn``, callbacks) is the launcher's, in ``hydra_plugins/runner_plugins``.
"""
