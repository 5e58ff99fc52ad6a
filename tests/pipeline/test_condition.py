"""The condition language (docs/pipelines.md): what each form selects, and that no text,
however odd, gets past the parser as anything but a one-line ConditionError."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.condition import ConditionError, compile_condition
from tests.pipeline_support import flush_table

TABLE = flush_table(
    [
        {
            "log_group": "aws-waf-logs-edge",
            "severity_number": 5,
            "message": "GET /login",
            "attributes": '{"env":"prod","status":503,"user":{"id":"u1"},"ok":true}',
        },
        {
            "log_group": "app",
            "severity_number": 9,
            "message": "POST /pay",
            "attributes": '{"env":"dev","status":"200"}',
        },
        {"log_group": None, "severity_number": None, "message": None, "attributes": None},
    ]
)


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ('log_group == "aws-waf-logs-edge"', [True, False, False]),
        ("log_group == 'app'", [False, True, False]),
        ('log_group != "app"', [True, False, False]),  # null is not "not app": false
        ("severity_number < 9", [True, False, False]),
        ("severity_number <= 9", [True, True, False]),
        ("severity_number > 5", [False, True, False]),
        ("severity_number >= 5.0", [True, True, False]),
        ("9 == severity_number", [False, True, False]),
        ('severity_number == "9"', [False, True, False]),
        ('log_group in ["app", "x"]', [False, True, False]),
        ('log_group not in ["app"]', [True, False, False]),
        ("log_group in [null]", [False, False, True]),
        ("message matches '^(GET|HEAD) '", [True, False, False]),
        ('message matches "(?i)post"', [False, True, False]),
        ("log_group is null", [False, False, True]),
        ("log_group is not null", [True, True, False]),
        ("not log_group == 'app'", [True, False, False]),  # unknown stays unknown
        ('severity_number < 9 and log_group == "app"', [False, False, False]),
        ('severity_number < 9 or log_group == "app"', [True, True, False]),
        ('not (severity_number < 9 or log_group == "app")', [False, False, False]),
        ('attributes.env == "prod"', [True, False, False]),
        ("attributes.status >= 500", [True, False, False]),
        ('attributes.status == "200"', [False, True, False]),
        ("attributes.ok == true", [True, False, False]),
        ("attributes.missing is null", [True, True, True]),
        ("no_such_column == 1", [False, False, False]),
        ("no_such_column is null", [True, True, True]),
        ("true", [True, True, True]),
        ("false or (true and not false)", [True, True, True]),
        ("1 == 1.0", [True, True, True]),
        ("timestamp >= '2026-09-21T00:00:00Z'", [True, True, True]),
        ('message == "it\\"s"', [False, False, False]),
    ],
)
def test_each_form_selects_the_rows_it_says(text: str, rows: list[bool]) -> None:
    assert compile_condition(text).mask(TABLE).to_pylist() == rows


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("log_group ==", "ends too early"),
        ("(a == 1", "expected ')'"),
        ("a == 1)", "unexpected ')'"),
        ("a = 1", "cannot read"),
        ('a matches "("', "bad regular expression"),
        ("a matches b", "quoted regular expression"),
        ("a in [b]", "literal values only"),
        ("a in 1", "expected '['"),
        ("and", "expected a column"),
        ("a", "ends too early"),
        ("a is 1", "expected 'null'"),
        ("a == 1e999", "out of range"),
        ("(" * 40 + "a == 1" + ")" * 40, "nested deeper"),
        ("not " * 40 + "a == 1", "nested deeper"),
        ("a == 1 " + "or a == 1 " * 1000, "longer than"),
    ],
)
def test_a_bad_condition_is_one_line_naming_the_problem(text: str, says: str) -> None:
    with pytest.raises(ConditionError) as err:
        compile_condition(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_columns_a_condition_reads_are_known_before_it_runs() -> None:
    condition = compile_condition('a == 1 and attributes.env in ["x"] or b matches "and"')
    assert condition.columns() == {"a", "attributes", "b"}


TOKENS = st.sampled_from(
    [
        "log_group", "severity_number", "message", "attributes.env", "attributes.status",
        "missing", "timestamp", "kinesis_sub_sequence", "'app'", '"x\\"y"', "5", "-1.5",
        "1e3", "true", "false", "null", "==", "!=", "<", "<=", ">", ">=", "in", "not",
        "and", "or", "matches", "is", "(", ")", "[", "]", ",", "'^a.*'", "'('",
    ]
)  # fmt: skip


@settings(max_examples=250, deadline=None)
@given(st.lists(TOKENS, max_size=14))
def test_any_sequence_of_words_compiles_and_runs_or_is_a_clean_error(words: list[str]) -> None:
    try:
        condition = compile_condition(" ".join(words))
    except ConditionError as exc:
        assert "\n" not in str(exc)
        return
    mask = condition.mask(TABLE)
    assert mask.type == pa.bool_() and len(mask) == TABLE.num_rows and mask.null_count == 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_compiles_and_runs_or_is_a_clean_error(text: str) -> None:
    try:
        condition = compile_condition(text)
    except ConditionError as exc:
        assert "\n" not in str(exc)
        return
    assert len(condition.mask(TABLE)) == TABLE.num_rows
