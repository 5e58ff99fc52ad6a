"""The pipeline document: what loads, and the one line that names pipeline, step and field
for what does not."""

from __future__ import annotations

import hashlib
import sys

import pytest

from service.pipeline.config import MAX_DOCUMENT_BYTES, PipelineConfigError, load_pipelines
from tests.pipeline_support import load

WAF = """
[[pipeline]]
name = "waf"
match = 'log_group == "aws-waf-logs-edge"'
parse = "json"
redact = ["email"]
drop = 'severity_number < 9'
sample = 1
table = "waf"

[[pipeline]]
name = "web"
parse = { regex = '^(?P<method>[A-Z]+) (?P<path>\\S+)' }
table = "web"

[[pipeline.transform]]
rename = { path = "uri" }

[[pipeline.transform]]
cast = { status = "int32" }

[[pipeline.transform]]
hash = ["client"]
key = "0123456789abcdef"
"""


def test_a_document_loads_with_its_version_the_hash_of_its_text() -> None:
    pipelines = load(WAF)
    assert [p.name for p in pipelines.pipelines] == ["waf", "web"]
    assert [p.table for p in pipelines.pipelines] == ["waf", "web"]
    assert pipelines.version == hashlib.sha256(WAF.encode()).hexdigest()[:12]
    assert [s.kind for s in pipelines.pipelines[1].steps] == ["rename", "cast", "hash"]


def test_an_empty_document_routes_everything_to_logs() -> None:
    assert load("").pipelines == ()


def one(body: str) -> str:
    return '[[pipeline]]\nname = "waf"\n' + body


@pytest.mark.parametrize(
    ("document", "line"),
    [
        ("x = [", "not TOML: "),
        ("[pipeline]\nname = 'a'", "document, field 'pipeline': Input should be a valid list"),
        ('[[pipeline]]\nname = "a"\n[[pipeline]]\nname = "a"', "pipeline name 'a' used twice"),
        ('[[pipeline]]\nname = "Waf"', "pipeline 'Waf', step 'name', field 'name': String should"),
        (one("bogus = 1"), "pipeline 'waf', step 'bogus', field 'bogus': unknown key"),
        (one("match = 'a =='"), "pipeline 'waf', step 'match', field 'match': the condition"),
        (one("drop = 'a matches \"(\"'"), "step 'drop', field 'drop': bad regular expression"),
        (one("sample = 0"), "step 'sample', field 'sample': Input should be greater than"),
        (one("table = 'a/b'"), "step 'table', field 'table': String should match"),
        (one("parse = 'grok'"), "step 'parse', field 'parse': unknown parser 'grok' (known: json)"),
        (one("parse = 3"), "step 'parse', field 'parse': Input should be a valid string"),
        (one("parse = { regex = 'x' }"), "step 'parse', field 'regex': the pattern has no named"),
        (one("parse = { regex = '(?P<a>x' }"), "field 'regex': not a valid RE2 pattern"),
        (one("redact = ['phone']"), "step 'redact', field 'redact': unknown detector 'phone'"),
        (
            one("[[pipeline.transform]]\ncast = { a = 'int65' }"),
            "step 'transform[1] (cast)', field 'a': unknown type 'int65'",
        ),
        (
            one("[[pipeline.transform]]\ndrop = ['x']\n[[pipeline.transform]]\nrename = {a=1}"),
            "step 'transform[2]', field 'rename.a': Input should be a valid string",
        ),
        (
            one("[[pipeline.transform]]\ncast = { a = 'int64' }\ndrop = ['b']"),
            "step 'transform[1]', field 'rename/drop/set/cast/hash': give exactly one",
        ),
        (
            one("[[pipeline.transform]]\ndrop = ['timestamp']"),
            "step 'transform[1] (drop)', field 'timestamp': column 'timestamp' cannot be changed",
        ),
        (
            one("[[pipeline.transform]]\nrename = { a = 'kinesis_shard_id' }"),
            "field 'kinesis_shard_id': column 'kinesis_shard_id' cannot be changed by rename",
        ),
        (
            one("[[pipeline.transform]]\nset = { Bad = 1 }"),
            "step 'transform[1] (set)', field 'Bad': column names are lowercase snake_case",
        ),
        (
            one("[[pipeline.transform]]\nhash = ['ip']"),
            "step 'transform[1] (hash)', field 'key': hash needs a key",
        ),
        (
            one("[[pipeline.transform]]\nrename = { a = 'b' }\nkey = '0123456789abcdef'"),
            "step 'transform[1] (rename)', field 'key': only hash takes a key",
        ),
    ],
)
def test_a_bad_document_is_one_line_naming_pipeline_step_and_field(
    document: str, line: str
) -> None:
    with pytest.raises(PipelineConfigError) as err:
        load(document)
    assert line in str(err.value)
    assert "\n" not in str(err.value)


def test_a_document_too_large_to_pin_in_a_lease_item_is_refused() -> None:
    big = "# " + "x" * (MAX_DOCUMENT_BYTES - 2)
    assert load(big).pipelines == ()
    with pytest.raises(PipelineConfigError, match=r"^document, field 'size': 65537 bytes"):
        load(big + "\n")


def test_default_parsers_that_cannot_be_imported_are_a_clean_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "service.pipeline.parsers", None)  # import fails
    with pytest.raises(PipelineConfigError, match=r"^document: service.pipeline.parsers unavail"):
        load_pipelines('[[pipeline]]\nname = "a"\nparse = "json"\n')
    assert load_pipelines('[[pipeline]]\nname = "a"\n').pipelines[0].parse is None


def test_a_pattern_the_regex_parser_refuses_is_a_clean_error() -> None:
    def refusing(pattern: str) -> None:
        raise ValueError("group name 'a' is used twice")

    document = "[[pipeline]]\nname = 'r'\nparse = { regex = '(?P<a>x)(?P<a>y)' }\n"
    with pytest.raises(PipelineConfigError) as err:
        load_pipelines(document, parsers={}, regex_parser=refusing)
    assert str(err.value) == (
        "pipeline 'r', step 'parse', field 'regex': group name 'a' is used twice"
    )
