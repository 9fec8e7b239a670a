"""An A/B test end to end: the API assigns, explores and logs exposures to Kafka; the users of the stack's
synthetic world answer from its ground truth through the SDK; ``ab report`` joins the two topics.

Which variant is truly better is what the world says of the lists each one served (``simulate``'s expected
clicks of every list, from the ground truth the users answer by): the report must call the same one
significantly better. An exploring variant's off-policy estimate of the greedy list must cover the true worth
of the control's lists, which are exactly that list; an A/A run must find no difference. The re-rank is off
(no LLM): what differs is only what the variants change."""
from __future__ import annotations

import time

import numpy as np
import pytest

from serving.experiments.cli import register
from serving.experiments.report import build, render
from serving.experiments.simulate import attractiveness, click_probabilities, simulate
from serving.metrics import counts
from streamrec.config import ExperimentConfig, Settings, VariantConfig
from streamrec.vocabulary import latest_at_hour
from streams.producer import EventProducer
from streams.world import load_world
from tests.fixtures.serving_stack import stack_settings
from tests.helpers import run_cli
from tests.integration.test_recommend_api import client_for, recommend

pytestmark = pytest.mark.integration

ROUNDS = 20
HOUR = 20


def experiment_settings(serving_stack, kafka_settings, experiment: ExperimentConfig) -> Settings:
    settings = stack_settings(serving_stack, "http://127.0.0.1:9/v1", llm__enabled=False)
    settings.kafka = kafka_settings.kafka
    settings.experiments = experiment
    return settings


def run_experiment(settings: Settings, serving_stack, seed: int) -> dict[str, float]:
    """The simulated users' answers published; returns each variant's true clicks per list, and under "greedy"
    that of the unexplored lists the exploring variant's requests would have got."""
    world = load_world(serving_stack.world_dir)
    variants: list[str] = []
    greedy: list[float] = []
    at = latest_at_hour(int(time.time() * 1000), HOUR, "UTC")  # as simulate() takes it
    with client_for(settings) as client, EventProducer(settings, source="ab-test") as producer:
        def ask(user_id: str, device: str, hour: int) -> list[str]:
            # compare: the list before the re-rank, which (off here) is the greedy list exploration departs from
            body = recommend(client, user_id=user_id, k=10, device=device, hour=hour, compare=True)
            assert body["experiment"]["name"] == settings.experiments.name
            variants.append(body["experiment"]["variant"])
            if body["experiment"]["variant"] == "explore":
                ids = [item["item_id"] for item in body["before_rerank"]]
                greedy.append(float(click_probabilities(attractiveness(world, world.user_index[user_id], ids, at,
                                                                       device)).sum()))
            return [item["item_id"] for item in body["items"]]

        tally = simulate(world, ask, producer.send, users=serving_stack.user_ids, rounds=ROUNDS, hour=HOUR, seed=seed)
    assert tally.lists == ROUNDS * len(serving_stack.user_ids)
    # Closing the app waited for the exposure log: every list acknowledged by the broker.
    assert counts(client.app.state.services.metrics.exposures) == {"sent": tally.lists}
    worth = np.array(tally.expected_clicks)
    truth = {v: float(worth[np.array(variants) == v].mean()) for v in settings.experiments.variants}
    return {**truth, "greedy": float(np.mean(greedy))} if greedy else truth


def test_the_report_finds_the_worse_variant_and_estimates_the_greedy_list_off_policy(serving_stack, kafka_settings,
                                                                                    capsys):
    settings = experiment_settings(serving_stack, kafka_settings, ExperimentConfig(name="mmr-test", variants={
        "control": VariantConfig(), "variety_only": VariantConfig(mmr_lambda=0.0),
        "explore": VariantConfig(exploration="epsilon_greedy", epsilon=0.3)}))
    truth = run_experiment(settings, serving_stack, seed=1)

    report = build(settings)
    print(render(report), truth)
    control, variety, explore = report.variants
    assert sum(v.lists for v in report.variants) == ROUNDS * len(serving_stack.user_ids)
    assert not report.srm
    # The variants differ in truth (by a fifth or more): the report's difference tracks the true one (within two
    # half-widths of its 95 % interval, ~4 standard errors), never calls the worse variant better, and calls the
    # better one better once the difference outgrows its noise. (The test stack's 40 users bound its power: which
    # variant is better, and by how much, follows the hour its world was generated at.)
    true_diff = truth["variety_only"] - truth["control"]
    assert abs(true_diff) > 0.2 * truth["control"]
    found = variety.vs_control["clicks"]
    width = found.diff.high - found.diff.low
    assert abs(found.diff.value - true_diff) <= width, (found, true_diff)
    assert not found.significant or (found.diff.value > 0) == (true_diff > 0), (found, true_diff)
    if abs(true_diff) > width:
        assert found.significant, (found, true_diff)
    assert explore.explored_slots > 0 and explore.snips is not None and explore.ips is not None
    assert variety.explored_slots == 0 and variety.ips is None
    # The greedy lists the exploring variant departed from: their true worth within two half-widths of each
    # estimate's 95 % interval (about four standard errors: a biased estimator fails, a noisy one does not).
    for estimate in (explore.snips, explore.ips):
        assert abs(estimate.value - truth["greedy"]) <= estimate.high - estimate.low, (estimate, truth["greedy"])

    assert run_cli(register, settings, "ab", "report") == 0
    out = capsys.readouterr().out
    assert "| variety_only |" in out and "greedy, SNIPS" in out and "no sample-ratio mismatch" in out


def test_an_a_a_test_finds_no_difference(serving_stack, kafka_settings):
    settings = experiment_settings(serving_stack, kafka_settings, ExperimentConfig(name="a-a-test", variants={
        "a": VariantConfig(), "b": VariantConfig()}))
    run_experiment(settings, serving_stack, seed=2)

    report = build(settings)
    print(render(report))
    a, b = report.variants
    assert a.users + b.users == len(serving_stack.user_ids) and not report.srm
    assert not any(c.significant for c in b.vs_control.values()), b.vs_control
