"""Which variant of the running experiment a user sees.

A salted hash of the user id, so the assignment is the same in every replica and after every restart, and
needs no state: ``u = sha256(salt + 0x1f + user_id)[:8] / 2**64`` is uniform on [0, 1), and the user gets the
first variant (in the order declared) whose cumulative share of the weights exceeds ``u``. A new salt
reshuffles everyone; the experiment's name is the salt unless one is given, so two experiments assign
independently.
"""
from __future__ import annotations

import hashlib
from itertools import accumulate

from streamrec.config import ConfigError, ExperimentConfig, VariantConfig

DEFAULT = "default"  # the variant of every list when no experiment runs


def running(experiment: ExperimentConfig) -> bool:
    return bool(experiment.name)


def check(experiment: ExperimentConfig) -> None:
    """A ConfigError unless the experiment (if any) can assign users."""
    if running(experiment) and len(experiment.variants) < 2:
        raise ConfigError(f"experiments.variants: experiment {experiment.name!r} needs at least two variants, "
                          f"got {sorted(experiment.variants)}")
    if not running(experiment) and experiment.variants:
        raise ConfigError("experiments.variants are set but experiments.name is empty: name the experiment")


def unit_interval(salt: str, user_id: str) -> float:
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: ExperimentConfig, user_id: str) -> tuple[str, VariantConfig]:
    """The user's variant: its name and its settings (``DEFAULT`` and no changes when no experiment runs)."""
    if not running(experiment):
        return DEFAULT, VariantConfig()
    names = list(experiment.variants)
    weights = [experiment.variants[n].weight for n in names]
    u = unit_interval(experiment.salt or experiment.name, user_id) * sum(weights)
    for name, edge in zip(names, accumulate(weights), strict=True):
        if u < edge:
            return name, experiment.variants[name]
    return names[-1], experiment.variants[names[-1]]  # u within rounding of the total


def shares(experiment: ExperimentConfig) -> dict[str, float]:
    """Each variant's expected share of users."""
    total = sum(v.weight for v in experiment.variants.values())
    return {name: v.weight / total for name, v in experiment.variants.items()}
