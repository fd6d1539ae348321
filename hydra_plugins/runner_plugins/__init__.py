"""The runner's Hydra plugins (Hydra finds plugins only in the ``hydra_plugins`` namespace package).

Hydra imports every module here when it starts, in every process that uses it: keep their imports to
Hydra and OmegaConf, and import the runner's code inside the methods that need it.
"""
