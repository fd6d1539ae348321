"""What Hydra's ``run_job`` leaves behind for a job, without running the job: its folder, its
``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, its ``JobReturn`` and its callbacks.

The ``batched`` launcher computes a thousand jobs in one descent, so their task function has nothing
left to do; Hydra's ``run_job`` would still copy each job's whole config twice, write it as YAML
through OmegaConf and configure logging: ~70 ms a job on the loaded 2-core dev box (~70 s for a
1,000-job sweep), against ~5 ms here. The files hold the same data (the task config as composed,
interpolations kept; the job's ``hydra`` node with its number, overrides, ``override_dirname`` and
output folder), written by libyaml from plain data. The job's empty ``<job name>.log`` is created as
Hydra's file handler creates it. Callbacks that act on jobs (``on_job_start``/``on_job_end``) get the
job's full config, composed for them only when a configured callback has such a method.

Only Hydra's public pieces are used: ``JobReturn``, ``JobStatus``, ``JobRuntime`` and the callbacks'
``on_job_start``/``on_job_end`` through ``HydraContext``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobRuntime, JobStatus
from omegaconf import DictConfig, OmegaConf

DEFAULT_SUBDIR = "${hydra.job.num}"
DEFAULT_LOG = "${hydra.runtime.output_dir}/${hydra.job.name}.log"


class LazyJobReturn(JobReturn):
    """Hydra's ``JobReturn`` whose ``hydra_cfg`` is made into a DictConfig when first read (no
    sweeper reads it; building it for every job would cost ~20 ms each)."""

    def __init__(self, hydra_node: dict) -> None:
        self._hydra_node = hydra_node
        self._hydra_cfg: Optional[DictConfig] = None
        super().__init__()

    @property
    def hydra_cfg(self) -> Optional[DictConfig]:  # type: ignore[override]
        if self._hydra_cfg is None and self._hydra_node is not None:
            self._hydra_cfg = OmegaConf.create({"hydra": self._hydra_node})
        return self._hydra_cfg

    @hydra_cfg.setter
    def hydra_cfg(self, value: Optional[DictConfig]) -> None:
        self._hydra_cfg = value


def job_node(base: dict, num: int, overrides: list[str], dirname: str, env_set: dict, sweep_dir: str) -> dict:
    """The job's ``hydra`` node: the sweep's (``base``, plain data) with the job's own values, as
    Hydra's launcher and ``run_job`` set them (the parts that change are copied, the rest shared):
    its number, overrides, ``override_dirname``, ``env_set`` and output folder."""
    node = dict(base)
    node["job"] = {**base["job"], "num": num, "id": str(num), "override_dirname": dirname, "env_set": dict(env_set)}
    node["overrides"] = {**base["overrides"], "task": list(overrides)}
    node["runtime"] = {**base["runtime"], "output_dir": str(_output_dir(node, sweep_dir))}
    return node


def _output_dir(node: dict, sweep_dir: str) -> Path:
    """``hydra.sweep.dir``/``hydra.sweep.subdir`` of the job (the subdir resolved in the job's node)."""
    subdir = node["sweep"]["subdir"]
    if subdir == DEFAULT_SUBDIR:
        sub = str(node["job"]["num"])
    else:
        sub = str(OmegaConf.select(OmegaConf.create({"hydra": node}), "hydra.sweep.subdir"))
    return Path(os.path.abspath(os.path.join(sweep_dir, sub)))


def write_files(folder: Path, task: DictConfig, node: dict) -> None:
    """The job's folder: ``.hydra/`` (unless ``hydra.output_subdir`` is null) and its log file."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    if node.get("output_subdir") is not None:
        hydra_dir = folder / str(node["output_subdir"])
        hydra_dir.mkdir(parents=True, exist_ok=True)
        files = {
            "config.yaml": OmegaConf.to_container(task, resolve=False, enum_to_str=True),
            "hydra.yaml": {"hydra": node},
            "overrides.yaml": node["overrides"]["task"],
        }
        for name, data in files.items():
            text = yaml.dump(data, Dumper=yaml.CSafeDumper, default_flow_style=False, allow_unicode=True, sort_keys=False)
            (hydra_dir / name).write_text(text, encoding="utf-8")
    handler = ((node.get("job_logging") or {}).get("handlers") or {}).get("file") or {}
    if handler.get("filename") == DEFAULT_LOG:
        (folder / f"{node['job']['name']}.log").touch()


def job_return(task: DictConfig, node: dict, value: Any, error: BaseException | None = None) -> JobReturn:
    """The job's ``JobReturn``: COMPLETED with ``value``, or FAILED with ``error``."""
    ret = LazyJobReturn(node)
    ret.cfg = task
    ret.overrides = list(node["overrides"]["task"])
    ret.working_dir = node["runtime"]["output_dir"] if node["job"].get("chdir") else os.getcwd()
    ret.task_name = JobRuntime.instance().get("name")
    if error is None:
        ret.status, ret.return_value = JobStatus.COMPLETED, value
    else:
        ret.status, ret.return_value = JobStatus.FAILED, error
    return ret


def job_callbacks(config: DictConfig) -> bool:
    """Whether a configured callback acts on jobs (overrides ``on_job_start`` or ``on_job_end``)."""
    from hydra.experimental.callback import Callback
    from hydra.utils import get_class

    for spec in (OmegaConf.select(config, "hydra.callbacks") or {}).values():
        cls = get_class(str(spec["_target_"]))
        if cls.on_job_start is not Callback.on_job_start or cls.on_job_end is not Callback.on_job_end:
            return True
    return False
