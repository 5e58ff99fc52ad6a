"""/metrics is not reachable through the internet-facing ALB (issue 15, item 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "tideway.yaml"


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _tag)


def test_the_alb_answers_metrics_itself_before_forwarding_anything() -> None:
    resources = yaml.load(TEMPLATE.read_text(), Loader=_Loader)["Resources"]
    rules = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"
    ]
    blocking = [
        rule
        for rule in rules
        if any(
            "/metrics" in c.get("PathPatternConfig", {}).get("Values", [])
            for c in rule["Conditions"]
        )
        and rule["Actions"][0]["Type"] == "fixed-response"
    ]
    assert blocking, "no listener rule keeps /metrics off the internet-facing ALB"
    assert min(r["Priority"] for r in blocking) == min(r["Priority"] for r in rules)
