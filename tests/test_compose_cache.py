"""The composition cache (runner.compose_cache) gives exactly Hydra's own sweep configs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from runner import cli, compose_cache

SWEEP_JOBS = [
    ["objective=f", "optimizer=sgd", "lr=0.01"],
    ["objective=g", "optimizer=sgd", "lr=0.3"],
    ["objective=g", "optimizer=manual", "lr=0.03", "tracking.enabled=false"],
    ["objective=rosenbrock", "objective.dim=5", "optimizer=adam", "optimizer.betas=[0.8,0.99]"],
    ["objective=custom", "objective.expr='x**2 + 3*y**2'", "objective.vars=[x,y]", "steps=7"],
    ["lr=0.2", "objective=g", "+optimizer.foreach=true", "optimizer=sgd"],  # a value before a group choice
    ["objective=g", "~objective.wrt", "seed=3"],  # deleting what is null: Hydra refuses, so must we
    ["objective=custom", "~objective.expr", "seed=3"],  # a deletion
    ["backend=finite_diff", "backend.eps=1e-4", "objective@objective=f"],  # a package override
    ["objective=f", "hydra.job.env_copy=[HOME]", "lr=0.5"],  # a hydra override with a value
    ["objective=g"],  # nothing but group choices: Hydra's own path
]


@pytest.fixture
def loader_and_master():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from runner.config import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF)):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["objective=f,g", "lr=0.1,0.2"], RunMode.MULTIRUN)
        yield loader, master
    compose_cache.uninstall()


def as_plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("overrides", SWEEP_JOBS, ids=lambda o: " ".join(o))
def test_cached_composition_equals_hydras(loader_and_master, overrides):
    loader, master = loader_and_master
    compose_cache.uninstall()
    try:
        expected = loader.load_sweep_config(master, list(overrides))
    except Exception as exc:  # noqa: BLE001 - the cache must fail the same way
        compose_cache.install()
        with pytest.raises(type(exc)) as caught:
            loader.load_sweep_config(master, list(overrides))
        assert str(caught.value) == str(exc)
        return
    compose_cache.install()
    for _ in range(2):  # the first call fills the cache, the second is served from it
        got = loader.load_sweep_config(master, list(overrides))
        assert as_plain(got) == as_plain(expected)
        assert OmegaConf.is_struct(got) == OmegaConf.is_struct(expected)
        assert OmegaConf.to_container(got.objective) == OmegaConf.to_container(expected.objective)
        assert got.hydra.job.override_dirname == expected.hydra.job.override_dirname
        assert list(got.hydra.overrides.task) == [o for o in overrides if not o.startswith("hydra.")]


def test_jobs_share_one_composition_and_do_not_leak_into_each_other(loader_and_master):
    loader, master = loader_and_master
    compose_cache.install()
    first = loader.load_sweep_config(master, ["objective=g", "optimizer=sgd", "lr=0.01"])
    first.optimizer.momentum = 0.9  # a job that edits its config must not change the next job's
    second = loader.load_sweep_config(master, ["objective=g", "optimizer=sgd", "lr=0.3"])
    assert second.lr == 0.3 and second.optimizer.lr == 0.3 and second.optimizer.momentum == 0.0
    assert first.lr == 0.01 and first.optimizer.lr == 0.01
    cache = compose_cache._CACHES[loader]
    assert len(cache) == 1 and next(iter(cache))[2] == ("objective=g", "optimizer=sgd")


def test_a_bad_value_fails_as_in_hydra(loader_and_master):
    from hydra.errors import ConfigCompositionException

    loader, master = loader_and_master
    compose_cache.install()
    with pytest.raises(ConfigCompositionException, match="lr=abc"):
        loader.load_sweep_config(master, ["objective=g", "lr=abc"])
    with pytest.raises(ConfigCompositionException):
        loader.load_sweep_config(master, ["objective=g", "objective.nope=1"])
