"""runner: config-driven optimisation experiments (Hydra + PyTorch + MLflow).

From Python (a notebook, a script)::

    import runner

    result = runner.run("objective=g", "optimizer=sgd", lr=0.1)   # one run, recorded in MLflow
    result.final_loss, result.x_final, result.trajectory            # numbers, a DataFrame
    loss_figure, path_figure = result.plot()
    sweep = runner.multirun("objective=f", lr="0.01,0.1")          # a Hydra multirun
    runner.runs(parent=sweep.parent_run_id)                          # its children as a DataFrame
    runner.derivatives("objective=g").hessian_matrix()               # [[None, 6.0], [6.0, 14.0]]

The functions are loaded on first use (this module's ``__getattr__``): ``import runner`` imports
nothing heavy, so the command line and the MLflow writer process (``python -m runner...``) pay
nothing for the API.
"""

__version__ = "0.1.0"

_API = {
    "run": "runner.api.calls",
    "multirun": "runner.api.calls",
    "derivatives": "runner.api.calls",
    "runs": "runner.api.calls",
    "trajectory": "runner.api.calls",
    "RunnerError": "runner.api.compose",
    "RunResult": "runner.api.results",
    "SweepResult": "runner.api.results",
    "DerivativesResult": "runner.api.results",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
