"""The Hive partition template and the S3-safe escaping of partition values (pure).

A template is a path of segments such as ``dt={date}/hour={hour}/service={service}``. Beside
the time fields it takes any table column (``{log_group}``, ``{source}``, an extra typed
column such as ``{tenant}``) or attribute path (``{attributes.env}``), each the whole value
of a ``name={field}`` segment. Values are escaped by ``escape_value`` (docs/tables.md,
"Partition keys"): the escaped value of one field is a single path segment that never
leaves its folder, and two different values never share one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from service.schema import COLUMN_NAMES

__all__ = [
    "EMPTY_VALUE",
    "NULL_VALUE",
    "OTHER_SERVICE",
    "PartitionTemplate",
    "catalog_value",
    "escape_value",
    "unescape_value",
]

OTHER_SERVICE = "__other__"
NULL_VALUE = "__null__"
EMPTY_VALUE = "__empty__"
TIME_FIELDS = ("date", "hour")
SERVICE = "service"
ATTRIBUTES = "attributes."
# Kept as they are: ASCII letters and digits, and the marks S3 calls safe, less the ones
# Hive escapes ('*', "'") and '~' (which marks a shortened value here).
_SAFE_ASCII = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!()")
_RESERVED = (OTHER_SERVICE, NULL_VALUE, EMPTY_VALUE)
# An escaped value longer than this (UTF-8 bytes) is cut and given a digest of the value:
# S3 keys stop at 1,024 bytes, and a hostile value must not make a key S3 refuses.
MAX_VALUE_BYTES = 128
_KEPT_BYTES = 100
_FIELD = re.compile(r"{([^{}]*)}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^attributes(\.[A-Za-z0-9_@$-]+)+$")
# A key's optional value transform (Iceberg's names): ``{tenant:truncate[4]}``.
TRANSFORM = re.compile(r"^(truncate|bucket)\[([1-9][0-9]{0,5})\]$")
# Columns that cannot be a key: times have {date}/{hour}; attributes is a JSON document.
_NOT_KEYS = frozenset({"timestamp", "observed_timestamp", "attributes"})


@dataclass(frozen=True, slots=True)
class PartitionTemplate:
    """A path template, e.g. the default ``dt={date}/hour={hour}/service={service}``.

    ``keys``: the fields other than ``{date}`` and ``{hour}``, in path order (``service``
    among them). Raises ValueError (one line) for an unknown field shape, a missing
    ``{date}`` or ``{service}``, a key field that is not the whole value of a ``name=``
    segment, a repeated field, or a partition name that is a data column.
    """

    template: str = "dt={date}/hour={hour}/service={service}"

    def __post_init__(self) -> None:
        fields = _FIELD.findall(self.template)
        if "date" not in fields or SERVICE not in fields:
            raise ValueError(
                "partition_template must use {date} and {service} "
                "(e.g. dt={date}/hour={hour}/service={service})"
            )
        for field in fields:
            if field in TIME_FIELDS or field == SERVICE:
                continue
            column, _ = split_key(field)
            if not (_PATH.match(column) or (_NAME.match(column) and column not in _NOT_KEYS)):
                raise ValueError(
                    f"partition_template field {{{field}}} is not a column or attributes.<path>"
                )
        keys = [f for f in fields if f not in TIME_FIELDS]
        if len(set(keys)) != len(keys):
            raise ValueError("partition_template names a field twice")
        for segment in self.template.split("/"):
            name, eq, value = segment.partition("=")
            inner = _FIELD.findall(segment)
            # {service} keeps its older freedom (its own path-safe rule, any segment shape).
            if any(f not in TIME_FIELDS and f != SERVICE for f in inner) and not (
                eq and len(inner) == 1 and value == f"{{{inner[0]}}}" and _NAME.match(name)
            ):
                raise ValueError(
                    f"partition_template segment {segment!r}: a key field must be the whole "
                    "value of a name={field} segment"
                )
            if eq and name in COLUMN_NAMES:
                raise ValueError(
                    f"partition_template name {name!r} is a data column; Athena needs "
                    "partition names apart from columns (e.g. lg={log_group})"
                )

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f for f in _FIELD.findall(self.template) if f not in TIME_FIELDS)

    def render(self, date: str, hour: str, values: dict[str, str]) -> str:
        """The path with each field replaced; ``values``: the escaped value of every key."""
        fixed = {"date": date, "hour": hour, **values}
        return _FIELD.sub(lambda m: fixed[m.group(1)], self.template)


def split_key(key: str) -> tuple[str, str | None]:
    """``"tenant:bucket[16]"`` -> ``("tenant", "bucket[16]")``; ``"tenant"`` -> ``("tenant",
    None)``. Raises ValueError for a transform that is not ``truncate[W]`` or ``bucket[N]``."""
    column, colon, transform = key.partition(":")
    if not colon:
        return key, None
    if not TRANSFORM.match(transform):
        raise ValueError(
            f"partition_template field {{{key}}}: the transform must be truncate[W] or "
            "bucket[N] (a positive integer)"
        )
    if column.startswith(ATTRIBUTES):
        raise ValueError(
            f"partition_template field {{{key}}}: transforms apply to columns, not attributes"
        )
    return column, transform


def escape_value(value: str | None) -> str:
    """One partition value as one S3-safe path segment (docs/tables.md, "Partition keys").

    None -> ``__null__``, "" -> ``__empty__``; otherwise every character but ASCII letters,
    digits and ``-_.!()``, and printable non-ASCII ones, is percent-encoded (its UTF-8
    bytes, upper-case hex); a leading ``.`` and the first ``_`` of a value equal to a
    placeholder (``__null__``, ``__empty__``, ``__other__``) are encoded too. A result over
    128 bytes keeps its first 100 bytes, then ``~`` and 16 hex digits of the value's
    BLAKE2b digest. Injective (up to a 64-bit digest collision among long values).
    """
    if value is None:
        return NULL_VALUE
    if not value:
        return EMPTY_VALUE
    out = "".join(c if _kept(c) else _percent(c) for c in value)
    if value in _RESERVED:
        out = "%5F" + out[1:]
    elif out.startswith("."):
        out = "%2E" + out[1:]
    if len(out.encode()) <= MAX_VALUE_BYTES:
        return out
    head = out.encode()[:_KEPT_BYTES].decode(errors="ignore")
    cut = head.rfind("%")
    if cut >= len(head) - 2:  # never split a %XX escape
        head = head[:cut]
    digest = hashlib.blake2b(value.encode(errors="surrogatepass"), digest_size=8).hexdigest()
    return f"{head}~{digest}"


def unescape_value(segment: str) -> str | None:
    """The value ``escape_value`` wrote (a shortened one comes back as written)."""
    if segment == NULL_VALUE:
        return None
    if segment == EMPTY_VALUE:
        return ""
    return catalog_value(segment)


def catalog_value(segment: str) -> str:
    """The partition value Glue holds for a path segment: the unescaped value (so Athena
    users filter on ``env = 'a/b'``), placeholders and shortened values as written."""
    if segment in (NULL_VALUE, EMPTY_VALUE) or "~" in segment:
        return segment
    return unquote(segment, errors="surrogatepass")


def _kept(char: str) -> bool:
    if char < "\x80":
        return char in _SAFE_ASCII
    # Letters, marks, digits, symbols, punctuation of any script; never controls, format
    # characters (bidi overrides), separators or surrogates.
    return unicodedata.category(char)[0] in "LMNSP"


def _percent(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode(errors="surrogatepass"))
