"""Optimizers: the hand-written update, torch.optim classes through instantiate, clear errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from runner.descent.optimizers import ManualDescent, is_plain_descent, make_optimizer, needs_closure, optimizer_name
from runner.errors import UserError


def param():
    return [torch.tensor([[1.0, -2.0]], dtype=torch.float64, requires_grad=True)]


def test_any_torch_optim_class_by_target():
    cfg = OmegaConf.create({"_target_": "torch.optim.NAdam", "_partial_": True, "name": None, "lr": 0.01, "momentum_decay": 0.004})
    opt = make_optimizer(cfg, param())
    assert isinstance(opt, torch.optim.NAdam)
    assert opt.defaults["lr"] == 0.01 and opt.defaults["momentum_decay"] == 0.004
    assert optimizer_name(cfg) == "nadam"


def test_manual_descent_is_x_minus_lr_grad():
    (x,) = param()
    x.grad = torch.tensor([[0.5, 4.0]], dtype=torch.float64)
    ManualDescent([x], 0.1).step()
    assert x.detach().tolist() == [[1.0 - 0.05, -2.0 - 0.4]]
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        ManualDescent(param(), -1)


def test_unknown_hyperparameter_lists_what_the_class_takes():
    cfg = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "name": "sgd", "lr": 0.1, "momentom": 0.9})
    with pytest.raises(UserError) as err:
        make_optimizer(cfg, param())
    assert str(err.value).startswith("optimizer: torch.optim.SGD takes no argument momentom; it takes: lr, momentum")


def test_a_class_that_does_not_exist():
    cfg = OmegaConf.create({"_target_": "torch.optim.Nope", "_partial_": True, "name": None, "lr": 0.1})
    with pytest.raises(UserError, match="optimizer._target_: cannot import 'torch.optim.Nope'"):
        make_optimizer(cfg, param())


def test_which_updates_count_as_plain_descent():
    sgd = {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "maximize": False}
    assert is_plain_descent(OmegaConf.create({"_target_": "runner.descent.optimizers.ManualDescent"}))
    assert is_plain_descent(OmegaConf.create(sgd))
    assert not is_plain_descent(OmegaConf.create({**sgd, "momentum": 0.9}))
    assert not is_plain_descent(OmegaConf.create({**sgd, "maximize": True}))
    assert not is_plain_descent(OmegaConf.create({"_target_": "torch.optim.Adam"}))
    assert needs_closure(OmegaConf.create({"_target_": "torch.optim.LBFGS"}))
