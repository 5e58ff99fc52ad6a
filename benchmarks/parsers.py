"""Parsers and redaction: lines/s per format on one core, against DuckDB doing the same work.

    .venv/bin/python benchmarks/parsers.py [--quick] [--only alb,vpc_flow]

Inputs are the AWS documentation samples of each format (tests/pipeline/samples.py),
varied by a seeded generator (addresses, ports, sizes, times), with 1 % malformed lines.
Each variant runs in its own process pinned to one core (``peak_rss_mb`` is its own); the
variants run in interleaved rounds and each keeps its best round; ratios are per CPU second.
Tideway's variant is the parser as the pipeline calls it: the ``message`` column in, typed
columns and ``error`` out. DuckDB's (threads=1, the Arrow table registered zero-copy,
result fetched as Arrow) is the hand-written SQL a Vector-like user would write:
``regexp_extract`` with the same RE2 pattern and TRY_CAST/strptime per typed column,
``string_split`` for the delimited formats, ``json_extract_string`` per field for CloudTrail
and WAF. For ``json`` the baseline is pyarrow's own column-wise JSON reader. For redaction
(email, credit_card, ipv4 over free text) DuckDB runs ``regexp_replace`` with the same
patterns but no Luhn check (it cannot), so it does less work than Tideway.

Writes benchmarks/results/parsers.json (parsers.quick.json with --quick).
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.json as pa_json  # noqa: E402

from benchmarks.common import peak_rss_mb, pin_to_one_core, run_variant, write_results  # noqa: E402
from service.pipeline.parsers import PARSERS  # noqa: E402
from service.pipeline.parsers.access import ALB, COMBINED, S3_ACCESS  # noqa: E402
from service.pipeline.parsers.tokens import Field  # noqa: E402
from service.pipeline.redact import IPV4, redact  # noqa: E402
from tests.pipeline.samples import ALB_HTTP, APACHE, CLOUDFRONT, CLOUDTRAIL, VPC_ACCEPT, WAF  # noqa: E402
from tests.pipeline.samples import S3_ACCESS as S3_LINE  # noqa: E402

FORMATS = [
    "alb",
    "vpc_flow",
    "cloudfront",
    "s3_access",
    "apache",
    "syslog",
    "kv",
    "json",
    "cloudtrail",
    "aws_waf",
]


def _ip(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(256)) for _ in range(4))


def make_lines(fmt: str, n: int, seed: int = 7) -> list[str]:
    """``n`` lines of ``fmt``: documentation samples with varied values, 1 in 100 malformed."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        if i % 100 == 99:
            out.append(f"malformed line {i} of {fmt}")
            continue
        ip, size, port = _ip(rng), rng.randrange(10**6), rng.randrange(1024, 65535)
        if fmt == "alb":
            line = ALB_HTTP.replace("192.168.131.39:2817", f"{ip}:{port}").replace(
                " 366 ", f" {size} "
            )
        elif fmt == "vpc_flow":
            line = (
                VPC_ACCEPT.replace("172.31.16.139", ip)
                .replace(" 20641 ", f" {port} ")
                .replace(" 4249 ", f" {size} ")
            )
        elif fmt == "cloudfront":
            line = CLOUDFRONT.replace("192.0.2.100", ip).replace("\t392\t", f"\t{size}\t")
        elif fmt == "s3_access":
            line = S3_LINE.replace("192.0.2.3", ip).replace(" 113 ", f" {size} ")
        elif fmt == "apache":
            line = APACHE.replace("127.0.0.1", ip).replace(" 2326 ", f" {size} ")
        elif fmt == "syslog":
            line = f"<{rng.randrange(192)}>1 2003-10-11T22:14:{i % 60:02d}.003Z host{i % 50} app - ID{i % 9} - user {ip} logged in"
        elif fmt == "kv":
            line = f'level=info client={ip} port={port} bytes={size} msg="request served" took={rng.random():.3f}'
        elif fmt == "json":
            line = orjson.dumps(
                {
                    "level": "info",
                    "client": ip,
                    "port": port,
                    "bytes": size,
                    "msg": "served",
                    "took": rng.random(),
                }
            ).decode()
        elif fmt == "cloudtrail":
            line = orjson.dumps(
                {**CLOUDTRAIL, "sourceIPAddress": ip, "eventID": f"id-{i}"}
            ).decode()
        elif fmt == "aws_waf":
            line = orjson.dumps(
                {
                    **WAF,
                    "timestamp": 1683355579981 + i,
                    "httpRequest": {**WAF["httpRequest"], "clientIp": ip},
                }
            ).decode()  # type: ignore[dict-item]
        else:
            raise ValueError(fmt)
        out.append(line)
    return out


def make_text(n: int, seed: int = 11) -> list[str]:
    """Free-text messages, a third of them carrying an e-mail, a card number or an IPv4 address."""
    rng = random.Random(seed)
    words = [
        "user",
        "request",
        "served",
        "cache",
        "miss",
        "upstream",
        "timeout",
        "retry",
        "order",
        "paid",
        "ok",
    ]
    out = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(12))
        pick = i % 9
        if pick == 0:
            text += f" from alice{i}@example.com"
        elif pick == 1:
            text += " card 4111 1111 1111 1111"
        elif pick == 2:
            text += f" client {_ip(rng)}:{rng.randrange(65535)}"
        out.append(text)
    return out


def _capturing(f: Field) -> str:
    # Athena's ALB and S3 DDL regexes read quoted fields as "([^"]*)": DuckDB's fastest honest form.
    if f.quoted:
        return '"([^"]*)"'
    inner = " ".join(['[^ "]+'] * f.words)
    return rf"\[({inner})\]" if f.strip else f"({inner})"


def _duckdb_regex(fmt: str) -> str:
    """The same layout as one regexp_extract with a group per field, then TRY_CAST per type."""
    layout = {"alb": ALB, "s3_access": S3_ACCESS, "apache": COMBINED}[fmt].layout
    head = " ".join(_capturing(f) for f in layout.fields[: layout.required])
    tail = ""
    for f in reversed(layout.fields[layout.required :]):
        tail = f"(?: {_capturing(f)}{tail})?"
    pattern = f"^{head}{tail}(?: .*)?$".replace("'", "''")
    names = [f.name for f in layout.fields]
    casts = []
    for f in layout.fields:
        col = f"NULLIF(NULLIF(s.{f.name}, '-'), '')"
        sql = {
            "int": f"TRY_CAST({col} AS BIGINT)",
            "float": f"TRY_CAST({col} AS DOUBLE)",
            "iso_time": f"TRY_CAST({col} AS TIMESTAMPTZ)",
            "clf_time": f"try_strptime({col}, '%d/%b/%Y:%H:%M:%S %z')",
        }
        casts.append(sql.get(f.kind.value, col) + f" AS {f.name}")
    name_list = ", ".join(f"'{n}'" for n in names)
    return f"SELECT {', '.join(casts)} FROM (SELECT regexp_extract(message, '{pattern}', [{name_list}]) AS s FROM lines)"


def _duckdb_split(fmt: str) -> str:
    from service.pipeline.parsers.fields import _CLOUDFRONT, vpc_flow

    spec = vpc_flow if fmt == "vpc_flow" else _CLOUDFRONT
    sep = "\t" if fmt == "cloudfront" else " "
    casts = []
    for i, (name, kind) in enumerate(spec.fields, start=1):
        col = f"NULLIF(p[{i}], '-')"
        sql = {
            "int": "TRY_CAST({} AS BIGINT)",
            "float": "TRY_CAST({} AS DOUBLE)",
            "epoch_seconds": "to_timestamp(TRY_CAST({} AS BIGINT))",
        }
        casts.append(sql.get(kind.value, "{}").format(col) + f" AS {name}")
    return f"SELECT {', '.join(casts)} FROM (SELECT string_split(message, '{sep}') AS p FROM lines)"


def _duckdb_json(fmt: str) -> str:
    from service.pipeline.parsers.documents import AWS_WAF
    from service.pipeline.parsers.documents import CLOUDTRAIL as CT

    record = CT if fmt == "cloudtrail" else AWS_WAF
    cols = []
    for f in record.fields:
        path = "$." + ".".join(f.path)
        get = f"json_extract_string(j, '{path}')"
        sql = {
            "int": f"TRY_CAST({get} AS BIGINT)",
            "bool": f"TRY_CAST({get} AS BOOLEAN)",
            "iso_time": f"TRY_CAST({get} AS TIMESTAMPTZ)",
            "epoch_millis": f"to_timestamp(TRY_CAST({get} AS BIGINT) / 1000)",
            "json": f"json_extract(j, '{path}')::VARCHAR",
        }
        cols.append(sql.get(f.kind, get) + f" AS {f.column}")
    # TRY_CAST: a line that is not JSON is null, as Tideway keeps it with a reason.
    return f"SELECT {', '.join(cols)} FROM (SELECT TRY_CAST(message AS JSON) AS j FROM lines)"


CARD_CANDIDATE = r"\b[2-6][0-9](?:[ -]?[0-9]){11,17}\b"
EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}\b"
IPV4_CONTEXT = rf"(^|[^0-9A-Za-z_.]){IPV4}(\.?(?:[^0-9A-Za-z_.]|$))"


def _duckdb_redact() -> str:
    e = f"regexp_replace(message, '{EMAIL}', '[REDACTED:email]', 'g')"
    c = f"regexp_replace({e}, '{CARD_CANDIDATE}', '[REDACTED:credit_card]', 'g')"
    v4 = f"regexp_replace({c}, '{IPV4_CONTEXT}', '\\1[REDACTED:ipv4]\\2', 'g')"
    return f"SELECT regexp_replace({v4}, '{IPV4_CONTEXT}', '\\1[REDACTED:ipv4]\\2', 'g') AS message FROM lines"


def work(variant: str, message: pa.Array) -> Callable[[], Any]:
    """The callable one run of ``variant`` times (engine:format)."""
    engine, fmt = variant.split(":")
    if engine == "tideway" and fmt == "redact":
        return lambda: redact(message, ["email", "credit_card", "ipv4"])
    if engine == "tideway":
        return lambda: PARSERS[fmt](message)
    if engine == "pyarrow_json":
        data = "\n".join(
            s for s in message.to_pylist() if s.startswith("{")
        ).encode()  # the reader fails on a bad line
        return lambda: pa_json.read_json(io.BytesIO(data))
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("lines", pa.table({"message": message}))
    if fmt == "redact":
        sql = _duckdb_redact()
    elif fmt in ("alb", "s3_access", "apache"):
        sql = _duckdb_regex(fmt)
    elif fmt in ("vpc_flow", "cloudfront"):
        sql = _duckdb_split(fmt)
    else:
        sql = _duckdb_json(fmt)
    return lambda: con.execute(sql).to_arrow_table()


def child(variant: str, n: int, seconds: float) -> dict[str, Any]:
    pin_to_one_core()
    fmt = variant.split(":")[1]
    lines = make_text(n) if fmt == "redact" else make_lines(fmt, n)
    message = pa.array(lines, pa.string())
    run = work(variant, message)
    run()  # warm: compile regexes, import engines
    runs, start = 0, time.perf_counter()
    cpu = time.process_time()
    while time.perf_counter() - start < seconds or runs == 0:
        run()
        runs += 1
    wall, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    return {
        "lines_per_s": round(n * runs / wall),
        "lines_per_cpu_s": round(n * runs / cpu_used) if cpu_used else None,
        "runs": runs,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def variants(formats: list[str]) -> list[str]:
    out = []
    for fmt in formats:
        out.append(f"tideway:{fmt}")
        if fmt == "json":
            out.append("pyarrow_json:json")
        elif fmt not in ("syslog", "kv"):
            out.append(f"duckdb:{fmt}")
    return [*out, "tideway:redact", "duckdb:redact"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 000 lines, short runs")
    parser.add_argument("--only", default="", help="comma-separated formats")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; each variant keeps its best"
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--lines", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(orjson.dumps(child(args.variant, args.lines, args.seconds)).decode())
        return
    n, seconds = (20_000, 0.5) if args.quick else (200_000, 3.0)
    formats = [f for f in args.only.split(",") if f] or FORMATS
    # Rounds interleave Tideway and its baseline, and each keeps its best round: on a shared
    # machine a variant measured alone can land in a busy second and its ratio with it.
    results: dict[str, Any] = {}
    for _ in range(args.rounds):
        for variant in variants(formats):
            run = run_variant(
                Path(__file__), variant, ["--lines", str(n), "--seconds", str(seconds)]
            )
            best = results.get(variant)
            if best is None or run["lines_per_cpu_s"] > best["lines_per_cpu_s"]:
                results[variant] = {**run, "rounds": args.rounds}
    for variant, r in results.items():
        print(
            f"{variant:24} {r['lines_per_cpu_s']:>12,} lines/CPU-s {r['peak_rss_mb']:>8} MB",
            flush=True,
        )
    ratios = {}
    for variant in results:
        engine, fmt = variant.split(":")
        baseline = next(
            (v for v in results if v.endswith(f":{fmt}") and not v.startswith("tideway")), None
        )
        if engine == "tideway" and baseline:
            # Per CPU second, as benchmarks/pipelines.py: on a shared machine the wall
            # clock measures the neighbours too.
            ratios[f"tideway_vs_{baseline}"] = round(
                results[variant]["lines_per_cpu_s"] / results[baseline]["lines_per_cpu_s"], 2
            )
    path = write_results(
        "parsers",
        quick=args.quick,
        lines=n,
        input_bytes=0,
        results=results,
        extra={"ratios": ratios},
    )
    for name, ratio in ratios.items():
        print(f"{name:36} {ratio:>6}x")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
