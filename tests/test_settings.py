"""A bad setting stops the start with one line naming it and the fix."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.errors import SettingsError
from service.settings import Settings, iceberg_catalog_properties

BASE = {"stream": "logs", "bucket": "my-bucket"}


def load(env: dict[str, str], config: Path | None = None) -> Settings:
    saved = {k: v for k, v in os.environ.items() if k.startswith("TIDEWAY_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        return Settings.load(config)
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


def test_defaults_follow_the_design() -> None:
    s = load({"TIDEWAY_STREAM": "logs", "TIDEWAY_BUCKET": "my-bucket"})
    assert (s.prefix, s.lease_table, s.flush_max_age, s.file_target_bytes) == (
        "",
        "logs-leases",
        60.0,
        134217728,
    )
    assert (s.lease_duration, s.start_position, s.api_keys, s.port) == (
        10.0,
        "TRIM_HORIZON",
        None,
        None,
    )
    assert (s.max_body_bytes, s.max_decompressed_bytes, s.max_line_bytes) == (
        16 << 20,
        64 << 20,
        1 << 20,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TIDEWAY_BUCKET": "b-1"}, "TIDEWAY_STREAM is required"),
        ({"TIDEWAY_STREAM": "s"}, "TIDEWAY_BUCKET is required"),
        (
            {**{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()}, "TIDEWAY_FLUSH_MAX_AGE": "-1"},
            "TIDEWAY_FLUSH_MAX_AGE",
        ),
        (
            {
                **{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()},
                "TIDEWAY_FLUSH_MAX_AGE": "soon",
            },
            "TIDEWAY_FLUSH_MAX_AGE",
        ),
        (
            {**{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()}, "TIDEWAY_PORT": "70000"},
            "TIDEWAY_PORT",
        ),
        (
            {
                **{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()},
                "TIDEWAY_PIN_WORKERS": "often",
            },
            "TIDEWAY_PIN_WORKERS",
        ),
        (
            {
                **{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()},
                "TIDEWAY_START_POSITION": "BEGINNING",
            },
            "TIDEWAY_START_POSITION",
        ),
        (
            {
                **{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()},
                "TIDEWAY_API_KEYS": '["not-a-digest"]',
            },
            "TIDEWAY_API_KEYS",
        ),
        (
            {**{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()}, "TIDEWAY_API_KEYS": "{broken"},
            "TIDEWAY_API_KEYS",
        ),
        ({"TIDEWAY_STREAM": "s", "TIDEWAY_BUCKET": "Bad_Bucket"}, "TIDEWAY_BUCKET"),
        (
            {
                **{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()},
                "TIDEWAY_START_POSITION": "AT_TIMESTAMP",
            },
            "TIDEWAY_START_TIMESTAMP",
        ),
        (
            {
                **{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()},
                "TIDEWAY_AVRO_SCHEMA": "/nope.avsc",
            },
            "TIDEWAY_AVRO_SCHEMA",
        ),
        (
            {**{f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()}, "TIDEWAY_GLUE_DATABASE": "db"},
            "TIDEWAY_GLUE_TABLE",
        ),
    ],
)
def test_bad_setting_is_one_line_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(env)
    message = str(err.value)
    assert named in message
    assert "\n" not in message


def test_toml_file_is_read_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('stream = "from-file"\nbucket = "file-bucket"\nprefix = "p"\n')
    s = load({}, good)
    assert (s.stream, s.bucket, s.prefix) == ("from-file", "file-bucket", "p")
    assert load({"TIDEWAY_STREAM": "env-wins"}, good).stream == "env-wins"
    bad = tmp_path / "bad.toml"
    bad.write_text('stream = "s"\nbucket = "bbb"\nflush_age = 3\n')
    with pytest.raises(SettingsError, match="unknown setting 'flush_age'"):
        load({}, bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("stream = \n")
    with pytest.raises(SettingsError, match="cannot read TOML"):
        load({}, broken)


def test_api_keys_are_digests_with_optional_service() -> None:
    digest = hashlib.sha256(b"secret").hexdigest()
    s = load(
        {
            "TIDEWAY_STREAM": "s",
            "TIDEWAY_BUCKET": "bbb",
            "TIDEWAY_API_KEYS": f'["{digest}", {{"sha256": "{"a" * 64}", "service": "billing"}}]',
        }
    )
    assert s.api_keys is not None
    assert [(k.sha256, k.service) for k in s.api_keys] == [(digest, None), ("a" * 64, "billing")]


def test_cli_exits_2_with_one_line_for_a_bad_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEWAY_")}
    env.update({"TIDEWAY_STREAM": "s", "TIDEWAY_BUCKET": "bbb", "TIDEWAY_LEASE_DURATION": "0"})
    proc = subprocess.run(
        [sys.executable, "-m", "service", "consume"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("tideway: setting TIDEWAY_LEASE_DURATION is invalid")


def test_a_put_deadline_past_the_dedupe_window_is_refused() -> None:
    # serve re-sends an envelope until put_deadline; the consumer recognises a copy only
    # within its dedupe window of the first, so a longer deadline would land copies twice.
    base = {f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()}
    with pytest.raises(SettingsError) as err:
        load({**base, "TIDEWAY_PUT_DEADLINE": "400"})
    message = str(err.value)
    assert "TIDEWAY_PUT_DEADLINE" in message and "dedupe window" in message
    assert "\n" not in message
    assert load({**base, "TIDEWAY_PUT_DEADLINE": "120"}).put_deadline == 120


ENV = {f"TIDEWAY_{k.upper()}": v for k, v in BASE.items()}


@pytest.mark.parametrize(
    ("extra", "named", "says"),
    [
        ({"TIDEWAY_TABLE_FORMAT": "delta"}, "TIDEWAY_TABLE_FORMAT", "'hive' or 'iceberg'"),
        (
            {"TIDEWAY_ICEBERG_COMMITTER": "leader"},
            "TIDEWAY_ICEBERG_COMMITTER",
            "'elected' or 'worker'",
        ),
        (
            {"TIDEWAY_ICEBERG_TABLE_LOCATION": "bucket"},
            "TIDEWAY_ICEBERG_TABLE_LOCATION",
            "'prefix' or 'catalog'",
        ),
        ({"TIDEWAY_ICEBERG_TABLE": "logs"}, "TIDEWAY_ICEBERG_TABLE", "namespace.table"),
        ({"TIDEWAY_ICEBERG_CATALOG": "hive"}, "TIDEWAY_ICEBERG_CATALOG", "rest, sql or s3tables"),
        ({"TIDEWAY_ICEBERG_CATALOG": "s3tables"}, "TIDEWAY_ICEBERG_CATALOG_URI", "bucket's ARN"),
        (
            {
                "TIDEWAY_ICEBERG_CATALOG": "s3tables",
                "TIDEWAY_ICEBERG_CATALOG_URI": "arn:aws:s3:::logs",
            },
            "TIDEWAY_ICEBERG_CATALOG_URI",
            "arn:aws:s3tables:<region>:<account>:bucket/<name>",
        ),
        (
            {
                "TIDEWAY_ICEBERG_CATALOG": '{"type": "rest", "rest.signing-name": "s3tables"}',
                "TIDEWAY_ICEBERG_CATALOG_URI": "https://s3tables.us-east-1.amazonaws.com/iceberg",
            },
            "TIDEWAY_ICEBERG_CATALOG",
            "table bucket's ARN as warehouse",
        ),
        ({"TIDEWAY_ICEBERG_CATALOG": "{oops"}, "TIDEWAY_ICEBERG_CATALOG", "JSON"),
        ({"TIDEWAY_ICEBERG_CATALOG": '{"type": "x"}'}, "TIDEWAY_ICEBERG_CATALOG", '"type"'),
        ({"TIDEWAY_ICEBERG_CATALOG": "sql"}, "TIDEWAY_ICEBERG_CATALOG_URI", "needs a URI"),
        ({"TIDEWAY_ICEBERG_CATALOG": "rest"}, "TIDEWAY_ICEBERG_CATALOG_URI", "needs a URI"),
    ],
)
def test_a_bad_iceberg_setting_is_one_line_naming_it(
    extra: dict[str, str], named: str, says: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load({**ENV, **extra})
    message = str(err.value)
    assert message.startswith(f"setting {named} is invalid")
    assert says in message
    assert "\n" not in message


def test_the_sql_catalog_without_sqlalchemy_is_one_line_naming_the_demo_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image has no SQLAlchemy (the SQL catalog is the demo's): choosing it there stops the
    start with the remedy, not with pyiceberg's ImportError at the first commit."""
    import service.settings

    monkeypatch.setattr(service.settings, "SQL_CATALOG_MODULE", "sqlalchemy_not_installed")
    sql = {"TIDEWAY_ICEBERG_CATALOG": "sql", "TIDEWAY_ICEBERG_CATALOG_URI": "sqlite:///c.db"}
    with pytest.raises(SettingsError) as err:
        load({**ENV, **sql})
    message = str(err.value)
    assert message.startswith("setting TIDEWAY_ICEBERG_CATALOG is invalid")
    assert "tideway[demo]" in message and "\n" not in message
    monkeypatch.undo()
    assert load({**ENV, **sql}).iceberg_catalog == "sql"


def test_iceberg_catalog_is_a_type_or_pyiceberg_properties_with_the_warehouse_in_the_bucket() -> (
    None
):
    s = load({**ENV, "TIDEWAY_PREFIX": "t/"})
    assert (s.table_format, s.iceberg_table) == ("hive", "tideway.logs")
    assert s.iceberg_committer == "elected"
    assert iceberg_catalog_properties(s) == {
        "type": "glue",
        "warehouse": "s3://my-bucket/t/warehouse",
    }
    s = load(
        {
            **ENV,
            "TIDEWAY_TABLE_FORMAT": "iceberg",
            "TIDEWAY_ICEBERG_CATALOG": '{"type": "rest", "warehouse": "arn:aws:s3tables:x"}',
            "TIDEWAY_ICEBERG_CATALOG_URI": "https://s3tables.us-east-1.amazonaws.com/iceberg",
        }
    )
    assert iceberg_catalog_properties(s) == {
        "type": "rest",
        "warehouse": "arn:aws:s3tables:x",
        "uri": "https://s3tables.us-east-1.amazonaws.com/iceberg",
    }


def test_s3_tables_is_the_rest_catalog_signed_for_s3tables_at_the_table_bucket() -> None:
    arn = "arn:aws:s3tables:eu-west-1:123456789012:bucket/tideway-logs"
    settings = load(
        {**ENV, "TIDEWAY_ICEBERG_CATALOG": "s3tables", "TIDEWAY_ICEBERG_CATALOG_URI": arn}
    )
    assert iceberg_catalog_properties(settings) == {
        "type": "rest",
        "uri": "https://s3tables.eu-west-1.amazonaws.com/iceberg",
        "warehouse": arn,
        "rest.sigv4-enabled": "true",
        "rest.signing-name": "s3tables",
        "rest.signing-region": "eu-west-1",
        "client.region": "eu-west-1",
    }
