"""Objectives for the gradient-check tests, importable as ``objective.target=gradcheck_helpers.<module>:<fn>``
(the tests put ``tests/`` on ``PYTHONPATH``)."""
