"""What a run records about itself, so that weeks later it can be found, explained and made again.

Tags (all strings):

* ``runner.fingerprint``: :func:`runner.tracking.fingerprint.fingerprint` of the resolved config;
* ``runner.command``: the command line as typed (``python -m runner objective=g lr=0.1``), or the
  Python call for the API;
* ``runner.version`` and, when the runner runs from a git checkout, ``mlflow.source.git.commit``
  and ``runner.git_dirty`` (``true`` when the checkout had uncommitted changes);
  ``mlflow.source.name`` (the entry point) and ``mlflow.source.type`` (``LOCAL``);
* ``versions.python``, ``versions.torch``, ``versions.mlflow``, ``versions.hydra``, ``versions.numpy``:
  the installed versions (read from the packages' metadata, without importing them);
* ``device.name``: the CPU model, or the GPU's name and CUDA version
  (:func:`runner.descent.backends.device_name`, given by the job, which has torch);
* ``seed``: the seed (also a param).
"""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from runner.processes import PACKAGE_ROOT

PACKAGES = {"torch": "torch", "mlflow": "mlflow", "hydra": "hydra-core", "numpy": "numpy"}


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``python -m runner ...`` for the module, the program's name otherwise."""
    argv = sys.argv if argv is None else argv
    program = argv[0] if argv else ""
    if program.endswith("__main__.py") or program == "-m":
        head = "python -m runner"
    elif program.endswith((".py", "-c")) or not program:
        head = "python " + (Path(program).name if program else "")
    else:
        head = Path(program).name
    return " ".join([head.strip()] + [shlex.quote(a) for a in argv[1:]])


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """``versions.<name>``: Python and the installed packages that decide the numbers."""
    found = {"versions.python": platform.python_version()}
    for name, distribution in PACKAGES.items():
        try:
            found[f"versions.{name}"] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            found[f"versions.{name}"] = "not installed"
    return found


@lru_cache(maxsize=1)
def source() -> dict[str, str]:
    """The runner's version, and its git commit when it runs from a checkout (with a dirty flag)."""
    from runner import __version__

    tags = {"runner.version": __version__, "mlflow.source.type": "LOCAL"}
    root = Path(PACKAGE_ROOT)
    if not (root / ".git").exists():
        return tags
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git on this machine: the version says enough
        return tags
    if commit.returncode == 0:
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
        tags["runner.git_dirty"] = str(bool(status.stdout.strip())).lower()
    return tags


def provenance_tags(fingerprint: str, seed: int, device_name: str, entry: str = "runner") -> dict[str, str]:
    """Every tag of the module docstring for one run."""
    tags = {
        "runner.fingerprint": fingerprint,
        "runner.command": command_line()[:5000],
        "mlflow.source.name": entry,
        "device.name": device_name,
        "seed": str(seed),
    }
    tags.update(source())
    tags.update(versions())
    return tags
