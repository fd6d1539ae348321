"""The batched launcher's composition and job folders: ``compose_task`` gives the task part of Hydra's
own composition, and ``job_shell`` writes the ``.hydra/`` files Hydra's ``run_job`` writes (the same
data once loaded), in process, without running anything."""

from __future__ import annotations

import copy

import pytest
import yaml
from omegaconf import OmegaConf, open_dict
from test_compose_cache import COMPOSED, loader_and_master  # noqa: F401 - the fixture

from hydra_plugins.runner_plugins import job_shell
from runner.sweeps import compose


def hydras_own(loader, master, overrides: list[str], num: int, folder: str):
    """The job's config as Hydra's launcher and ``run_job`` make it."""
    cfg = loader.load_sweep_config(master, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = num
        cfg.hydra.job.num = num
        cfg.hydra.runtime.output_dir = folder
    return cfg


@pytest.mark.parametrize("overrides", COMPOSED, ids=lambda o: " ".join(o))
def test_the_task_part_and_the_jobs_hydra_node_are_hydras(loader_and_master, overrides, tmp_path):  # noqa: F811
    loader, master = loader_and_master
    job = compose.compose_task(loader, master, list(overrides))
    sweep_dir = str(tmp_path / "sweep")
    node = job_shell.job_node(compose.hydra_node(loader, job.key), 3, job.task_overrides, job.override_dirname,
                              job.env_set, sweep_dir)
    expected = hydras_own(loader, master, overrides, 3, node["runtime"]["output_dir"])
    task = copy.deepcopy(expected)
    with open_dict(task):
        del task["hydra"]
    assert OmegaConf.to_container(job.task, resolve=False) == OmegaConf.to_container(task, resolve=False)
    assert node["runtime"]["output_dir"] == str(tmp_path / "sweep" / "3")
    want = OmegaConf.to_container(expected.hydra, resolve=False, enum_to_str=True)
    want["job"]["id"] = str(want["job"]["id"])  # Hydra writes the id it was given as a string
    for key in ("job", "overrides", "runtime", "sweep", "launcher", "sweeper", "callbacks"):
        assert node[key] == want[key], key


def test_the_job_files_load_as_hydra_writes_them(loader_and_master, tmp_path):  # noqa: F811
    loader, master = loader_and_master
    overrides = ["objective=g", "optimizer=adam", "optimizer.betas=[0.8,0.99]", "lr=0.3"]
    job = compose.compose_task(loader, master, overrides)
    node = job_shell.job_node(compose.hydra_node(loader, job.key), 0, job.task_overrides, job.override_dirname,
                              job.env_set, str(tmp_path))
    folder = tmp_path / "0"
    job_shell.write_files(folder, job.task, node)
    expected = hydras_own(loader, master, overrides, 0, str(folder))
    task = copy.deepcopy(expected)
    with open_dict(task):
        del task["hydra"]
    assert yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) == yaml.safe_load(OmegaConf.to_yaml(task))
    assert yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) == overrides
    written = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]
    hydras = yaml.safe_load(OmegaConf.to_yaml(expected.hydra))
    hydras["job"]["id"] = str(hydras["job"]["id"])
    assert written == hydras
    assert (folder / f"{node['job']['name']}.log").read_text() == ""
    ret = job_shell.job_return(job.task, node, 1.5)
    assert (ret.return_value, ret.overrides, ret.cfg) == (1.5, overrides, job.task)
    assert ret.hydra_cfg.hydra.job.num == 0 and ret.hydra_cfg.hydra.runtime.output_dir == str(folder)
