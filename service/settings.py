"""The one settings object: environment (TIDEWAY_*), an optional TOML file, CLI overrides.

Validated once at start; a bad value raises SettingsError with one line naming the setting.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.envelope import DEDUPE_WINDOW_MS, SEND_QUEUE_ALLOWANCE_MS
from service.errors import SettingsError

ENV_PREFIX = "TIDEWAY_"
_TOML_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("_TOML_VALUES", default=None)
_HEX = set("0123456789abcdef")
_ICEBERG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")


class ApiKey(BaseModel):
    """An accepted API key, stored only as its SHA-256 digest; may carry a default service."""

    model_config = {"frozen": True, "extra": "forbid"}
    sha256: str
    service: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("sha256")
    @classmethod
    def _is_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if len(value) != 64 or not set(value) <= _HEX:
            raise ValueError("must be a SHA-256 hex digest (64 hex characters), not a key")
        return value


class _TomlSource(PydanticBaseSettingsSource):
    """Values from the --config TOML file; lowest priority after CLI and environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_TOML_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_TOML_VALUES.get() or {})


class _EnvSource(EnvSettingsSource):
    """The environment, except that ``TIDEWAY_API_KEYS=null`` stays visible as a value (the
    stock source drops a JSON null, which would read as "unset": open to everyone)."""

    def prepare_field_value(
        self, field_name: str, field: Any, value: Any, value_is_complex: bool
    ) -> Any:
        if field_name == "api_keys" and isinstance(value, str) and value.strip() == "null":
            return value
        return super().prepare_field_value(field_name, field, value, value_is_complex)


def cpu_mask() -> frozenset[int]:
    """The CPUs of this process's affinity mask; empty where the OS has none (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset()


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(cpu_mask()) or os.cpu_count() or 1


class Settings(BaseSettings):
    """Every option of both services. Environment name = TIDEWAY_ + upper-case field name."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    # Where the data goes (DESIGN §10).
    stream: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.-]+$")
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    prefix: str = ""
    lease_table: str = ""
    port: int | None = Field(default=None, ge=0, le=65535)
    host: str = "0.0.0.0"
    # OTLP/gRPC listener of serve (DESIGN §10); 0 turns it off.
    grpc_port: int = Field(default=4317, ge=0, le=65535)

    # Ingest.
    api_keys: tuple[ApiKey, ...] | None = None
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_decompressed_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_line_bytes: int = Field(default=1024 * 1024, gt=0, le=4 * 1024 * 1024)
    max_inflight_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # serve worker processes sharing the port (SO_REUSEPORT); None: one per CPU this process
    # may run on (os.sched_getaffinity: what the ECS task's vCPUs give it, not the host's).
    workers: int | None = Field(default=None, ge=1, le=256)
    # With exactly one worker per CPU of the task, worker i runs on the i-th CPU only (as
    # nginx's ``worker_cpu_affinity auto``): no migrations between cores (docs/http-api.md).
    pin_workers: bool = True
    max_decompression_ratio: float = Field(default=200.0, ge=1)
    body_read_timeout: float = Field(default=30.0, gt=0)
    # Lines (text, NDJSON), array elements, bulk actions or OTLP messages in one request:
    # each costs a parse step and an answer item whatever its size (issue 15).
    max_lines_per_request: int = Field(default=500_000, ge=1)
    header_read_timeout: float = Field(default=10.0, gt=0)
    # Kinesis bills PUT payload units of 25 KB (pricing: "a 1MB record contains 40 units").
    record_target_bytes: int = Field(default=25_000, ge=1024, le=1_000_000)
    es_version: str = Field(default="8.17.0", pattern=r"^\d+\.\d+\.\d+$")
    es_cluster_name: str = "tideway"
    linger_ms: float = Field(default=5.0, ge=0, le=5000)
    put_deadline: float = Field(default=20.0, gt=0)
    shutdown_grace: float = Field(default=20.0, gt=0, le=120)
    # Detectors (comma-separated) serve applies to every line before Kinesis, for data that
    # must never be stored (docs/pipelines.md); the names are checked when serve starts.
    ingest_redact: str = ""

    # Decoding.
    avro_schema: Path | None = None
    avro_schema_dir: Path | None = None
    extra_columns: Path | None = None  # an Avro record schema (.avsc): extra typed columns
    pipelines: Path | None = None  # the pipeline document (TOML, DESIGN §12, docs/pipelines.md)
    pipelines_reload: float = Field(default=0.0, ge=0)  # s between reads of the stored one; 0 off

    # Consumer and writer.
    flush_max_age: float = Field(default=60.0, gt=0)
    file_target_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    memory_budget_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)
    lease_duration: float = Field(default=10.0, gt=0)
    start_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    start_timestamp: float | None = None
    partition_template: str = "dt={date}/hour={hour}/service={service}"
    max_partitions_per_flush: int = Field(default=1000, ge=1)
    event_time_max_past: float = Field(default=7 * 86400.0, gt=0)
    event_time_max_future: float = Field(default=3600.0, gt=0)
    worker_id: str = ""
    idle_wait: float = Field(default=1.0, gt=0, le=60)
    shard_count: int = Field(default=2, ge=1, le=500)
    glue_database: str | None = None
    glue_table: str | None = None
    # Table format (DESIGN §11): hive objects only, or the same objects committed to an
    # Iceberg table. The catalog is a type (glue, rest, sql) or a JSON object of pyiceberg
    # catalog properties; rest and sql need a URI.
    table_format: Literal["hive", "iceberg"] = "hive"
    iceberg_table: str = "tideway.logs"
    iceberg_catalog: str = "glue"
    iceberg_catalog_uri: str | None = Field(default=None, min_length=1)
    # Who commits flushes to the tables: one worker elected per table, or each worker its
    # own shards' (group commit). docs/tables.md "The elected committer".
    iceberg_committer: Literal["elected", "worker"] = "elected"
    # Where a table Tideway creates lives: "prefix" (s3://{bucket}/{prefix}{table}) or
    # "catalog" (where the catalog puts it; S3 Tables has no other). Default: catalog for
    # S3 Tables, prefix for every other catalog. The consumer writes wherever a table lives.
    iceberg_table_location: Literal["prefix", "catalog"] | None = None

    # Console (DESIGN §13, docs/console.md). "oidc": behind the ALB's authenticate action,
    # every request carries its signed x-amzn-oidc-data; "token": a one-time sign-in URL.
    console_auth: Literal["token", "oidc"] = "token"
    console_oidc_key_url: str = "https://public-keys.auth.elb.{region}.amazonaws.com/{kid}"
    console_oidc_signer: str | None = None  # the ALB's ARN; checked when set
    console_oidc_issuer: str | None = None  # the identity provider's issuer; checked when set
    console_operator_claim: str = "cognito:groups"
    console_operator_value: str = "tideway-operators"
    console_local_role: Literal["operator", "viewer"] = "operator"  # token sign-in grants it
    console_secret: str | None = Field(default=None, min_length=32)  # cookies, CSRF; or random
    console_workers: tuple[str, ...] = ()  # consume base URLs whose /status the console reads
    console_base_path: str = Field(default="", pattern=r"^(/[A-Za-z0-9._~-]+)*$")  # ALB path rule
    console_sample_interval: float = Field(default=10.0, gt=0)  # s between lease-table samples

    # Telemetry.
    emf_interval: float = Field(default=60.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_digests(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple({"sha256": v} if isinstance(v, str) else v for v in value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _keys_named_when_given(cls, data: Any) -> Any:
        # Unset means open (with a warning at start); a value that names no key at all (a
        # secret that resolved to "null" or "") is a mistake, never a way to open every route.
        if isinstance(data, dict):
            for name, value in data.items():
                if name.lower() != "api_keys":
                    continue
                if value is None or (isinstance(value, str) and value.strip() in ("", "null")):
                    raise ValueError(
                        "api_keys: set a JSON list of SHA-256 digests, or leave it unset"
                    )
                if isinstance(value, list | tuple) and not value:
                    raise ValueError("api_keys: an empty list accepts no key; leave it unset")
        return data

    @field_validator("iceberg_table")
    @classmethod
    def _namespace_dot_table(cls, value: str) -> str:
        if not _ICEBERG_NAME.fullmatch(value):
            raise ValueError("must be namespace.table (letters, digits, _), e.g. tideway.logs")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_folder(cls, value: str) -> str:
        # Literal, as Firehose prefixes are: "team-a/" gives team-a/logs/, "raw-" raw-logs/.
        if value.startswith("/"):
            raise ValueError("must not start with '/'; use e.g. 'tideway/'")
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if not self.lease_table:
            object.__setattr__(self, "lease_table", f"{self.stream}-leases")
        if (self.glue_database is None) != (self.glue_table is None):
            raise ValueError("glue_table: set both glue_database and glue_table, or neither")
        if self.start_position == "AT_TIMESTAMP" and self.start_timestamp is None:
            raise ValueError("start_timestamp: required when start_position is AT_TIMESTAMP")
        longest = (DEDUPE_WINDOW_MS - SEND_QUEUE_ALLOWANCE_MS) / 1000
        if self.put_deadline > longest:
            raise ValueError(
                f"put_deadline: {self.put_deadline:g} s outlasts the consumer's dedupe window"
                f" ({DEDUPE_WINDOW_MS // 1000} s, less {SEND_QUEUE_ALLOWANCE_MS // 1000} s for"
                f" queueing in serve): a later re-send would land twice; use at most {longest:g}"
            )
        if "{kid}" not in self.console_oidc_key_url:
            raise ValueError("console_oidc_key_url: must contain {kid} (the ALB's key id)")
        _check_iceberg_catalog(self)
        for field in ("avro_schema", "avro_schema_dir", "extra_columns", "pipelines"):
            path = getattr(self, field)
            if path is not None and not path.exists():
                raise ValueError(f"{field}: {path} does not exist")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls), _TomlSource(settings_cls))

    @classmethod
    def load(cls, config: Path | None = None, **overrides: Any) -> Settings:
        """Read TOML (if given), then the environment, then ``overrides``; raise SettingsError."""
        toml_values: dict[str, Any] = {}
        if config is not None:
            try:
                toml_values = tomllib.loads(config.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SettingsError(f"--config {config}: cannot read TOML: {exc}") from None
            unknown = sorted(set(toml_values) - set(cls.model_fields))
            if unknown:
                raise SettingsError(
                    f"--config {config}: unknown setting {unknown[0]!r}; "
                    f"known settings are the TIDEWAY_* names in lower case"
                )
        token = _TOML_VALUES.set(toml_values)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise SettingsError(describe_error(exc)) from None
        finally:
            _TOML_VALUES.reset(token)


def logs_location(settings: Settings) -> str:
    """The S3 URL of the table root (DESIGN §4): what Glue and Athena point at."""
    return f"s3://{settings.bucket}/{settings.prefix}logs"


def iceberg_catalog_properties(settings: Settings) -> dict[str, str]:
    """The pyiceberg catalog properties of TIDEWAY_ICEBERG_CATALOG (a type or a JSON object)
    and TIDEWAY_ICEBERG_CATALOG_URI, with the warehouse in the data bucket by default."""
    text = settings.iceberg_catalog.strip()
    props = (
        {str(k): str(v) for k, v in orjson.loads(text).items()}
        if text.startswith("{")
        else {"type": text}
    )
    if props["type"] == S3_TABLES:
        return s3_tables_properties(settings.iceberg_catalog_uri or "")
    if settings.iceberg_catalog_uri:
        props["uri"] = settings.iceberg_catalog_uri
    props.setdefault("warehouse", f"s3://{settings.bucket}/{settings.prefix}warehouse")
    return props


def catalog_locates(settings: Settings) -> bool:
    """Whether a new Iceberg table goes where the catalog chooses, not under the prefix
    (TIDEWAY_ICEBERG_TABLE_LOCATION; S3 Tables by default)."""
    if settings.iceberg_table_location is not None:
        return settings.iceberg_table_location == "catalog"
    return iceberg_catalog_properties(settings).get("rest.signing-name") == S3_TABLES


ICEBERG_CATALOGS = ("glue", "rest", "sql", "s3tables")
SQL_CATALOG_MODULE = "sqlalchemy"
S3_TABLES = "s3tables"
# An S3 table bucket's ARN: partition, region, account, bucket name (3-63 of a-z 0-9 -).
_TABLE_BUCKET_ARN = re.compile(
    r"arn:(aws[a-z-]*):s3tables:([a-z0-9-]+):(\d{12}):bucket/([a-z0-9][a-z0-9-]{1,61}[a-z0-9])"
)


def s3_tables_properties(table_bucket_arn: str) -> dict[str, str]:
    """The REST catalog properties of Amazon S3 Tables for a table bucket's ARN: its
    Iceberg REST endpoint in the bucket's region, SigV4 signing as ``s3tables``, and the
    ARN as the warehouse. Raises ValueError (one line) for anything but such an ARN."""
    match = _TABLE_BUCKET_ARN.fullmatch(table_bucket_arn)
    if match is None:
        raise ValueError(
            "iceberg_catalog_uri: the s3tables catalog needs the table bucket's ARN, "
            "arn:aws:s3tables:<region>:<account>:bucket/<name>"
        )
    partition, region = match.group(1), match.group(2)
    domain = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
    return {
        "type": "rest",
        "uri": f"https://s3tables.{region}.{domain}/iceberg",
        "warehouse": table_bucket_arn,
        "rest.sigv4-enabled": "true",
        "rest.signing-name": S3_TABLES,
        "rest.signing-region": region,
        "client.region": region,
    }


def _check_iceberg_catalog(settings: Settings) -> None:
    text = settings.iceberg_catalog.strip()
    if text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("iceberg_catalog: not a JSON object; use glue, rest or sql") from None
        if not isinstance(doc, dict) or doc.get("type") not in ("glue", "rest", "sql"):
            raise ValueError('iceberg_catalog: the JSON object needs "type": glue, rest or sql')
    elif text not in ICEBERG_CATALOGS:
        raise ValueError(f"iceberg_catalog: {text!r} is not glue, rest, sql or s3tables")
    kind = iceberg_catalog_properties(settings)
    if kind.get("rest.signing-name") == S3_TABLES and not _TABLE_BUCKET_ARN.fullmatch(
        kind.get("warehouse", "")
    ):
        raise ValueError(
            "iceberg_catalog: signing as s3tables needs the table bucket's ARN as warehouse"
        )
    if kind["type"] in ("rest", "sql") and "uri" not in kind:
        raise ValueError(
            f"iceberg_catalog_uri: the {kind['type']} catalog needs a URI"
            " (e.g. sqlite:////var/tideway/catalog.db or https://…)"
        )
    if kind["type"] == "sql" and importlib.util.find_spec(SQL_CATALOG_MODULE) is None:
        # A SQL catalog is one process's file (SQLite) or a database whose driver the image
        # lacks, so it is the demo's and the tests' catalog; its SQLAlchemy stays out of the image.
        raise ValueError(
            "iceberg_catalog: the sql catalog needs SQLAlchemy, which is in the demo extra"
            " (pip install 'tideway[demo]'); use glue, rest or s3tables in production"
        )


def partition_keys(template: str) -> list[str]:
    """Hive partition column names of a template such as ``dt={date}/hour={hour}/...``."""
    return [segment.partition("=")[0] for segment in template.split("/")]


def describe_error(exc: ValidationError) -> str:
    """One line naming the first bad setting, what was wrong and how to fix it."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    msg = err["msg"].removeprefix("Value error, ")
    if not loc and ":" in msg:
        name, _, msg = msg.partition(": ")
        loc = [name]
    name = loc[0] if loc else "settings"
    env = ENV_PREFIX + name.upper()
    if err["type"] == "missing":
        return f"setting {env} is required: set {env} or '{name}' in the --config file"
    got = err.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"setting {env} is invalid: {msg}{shown}"
