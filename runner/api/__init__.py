"""The Python API: the runner from a notebook or a script, without a shell.

``import runner`` loads none of this until a function is used (see ``runner/__init__.py``):

* :func:`runner.run` — one run, composed like the command line; a :class:`~runner.api.results.RunResult`.
* :func:`runner.multirun` — a Hydra multirun (same launchers, parent run and summary); a
  :class:`~runner.api.results.SweepResult`.
* :func:`runner.derivatives` — value, gradient, Hessian at a point; a
  :class:`~runner.api.results.DerivativesResult`.
* :func:`runner.runs` — runs of an experiment (or a sweep's children) as a pandas DataFrame.
* :func:`runner.trajectory` — a recorded run's trajectory as a DataFrame.

Errors in what is asked are raised as :class:`runner.api.compose.RunnerError`, whose message is the
line the command line would print.
"""
