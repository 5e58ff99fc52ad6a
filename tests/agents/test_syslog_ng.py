"""syslog-ng (Debian's build, unpacked by `make agents`) tails generated lines and ships them
to `serve` with its `http()` and `elasticsearch-http()` destinations; every line lands once.

What syslog-ng 3.38 does with our answers (seen in these tests): a 2xx ends the batch; a 4xx
or 5xx is logged ("Server returned with a 4XX ...") and the same batch is sent again after
`time-reopen()` (60 s by default), for ever, so one refused batch stalls the destination.
"""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from tests.agents.agent_support import (
    AGENTS_ROOT,
    KEY,
    agent_records,
    assert_landed_once,
    require,
    running,
    wait_for_lines,
    with_key,
    write_lines,
)
from tests.conftest import Aws, drain, read_table
from tests.ingest_support import serving

LINES = 600
MODULES = AGENTS_ROOT / "usr/lib/syslog-ng/3.38"

# http(): each tailed JSON line is one NDJSON line of the body; batches of 200 lines or
# 250 ms, as the syslog-ng OSE guide's http() batching options describe.
# time-reopen(1): syslog-ng waits 60 s after a failed request by default.
HTTP_DESTINATION = """
destination d_tideway {{
  http(url("{url}/ingest") method("POST")
       headers("Content-Type: application/x-ndjson", "Authorization: Bearer {key}")
       body("$MSG") delimiter("\\n")
       batch-lines(200) batch-bytes(512KiB) batch-timeout(250) workers(2) time-reopen(1));
}};
"""

# The same lines batched as one JSON array (the guide's body-prefix/delimiter/body-suffix
# recipe) under application/json.
HTTP_ARRAY_DESTINATION = """
destination d_tideway {{
  http(url("{url}/ingest") method("POST")
       headers("Content-Type: application/json", "X-API-Key: {key}")
       body-prefix("[") body("$MSG") delimiter(",") body-suffix("]")
       batch-lines(200) batch-timeout(250) workers(2) time-reopen(1));
}};
"""

# A common mislabelling: newline-delimited batches sent as application/json.
HTTP_MISLABELLED_DESTINATION = """
destination d_tideway {{
  http(url("{url}/ingest") method("POST")
       headers("Content-Type: application/json", "Authorization: Bearer {key}")
       body("$MSG") delimiter("\\n")
       batch-lines(200) batch-timeout(250) workers(1) time-reopen(1));
}};
"""

# No Content-Type header at all, as many http() configurations are written: libcurl then
# labels the POST application/x-www-form-urlencoded.
HTTP_UNLABELLED_DESTINATION = """
destination d_tideway {{
  http(url("{url}/ingest") method("POST") headers("Authorization: Bearer {key}")
       body("$MSG") delimiter("\\n")
       batch-lines(200) batch-timeout(250) workers(1) time-reopen(1));
}};
"""

# elasticsearch-http() (the SCL block over http()): json-parser() takes the line apart and
# the documented format-json --rekey/--shift puts it back together as the bulk source.
ES_DESTINATION = """
@include "scl/elasticsearch/elastic-http.conf"
parser p_json {{ json-parser(prefix("app.")); }};
destination d_tideway {{
  elasticsearch-http(url("{url}/_bulk") index("syslog-ng") type("")
       user("syslog-ng") password("{key}")
       template("$(format-json --scope none --key app.* --rekey app.* --shift 4)")
       batch-lines(200) batch-timeout(250) workers(2) time-reopen(1));
}};
"""


def _config(workdir: Path, lines: Path, destination: str, parser: bool) -> Path:
    conf = workdir / "syslog-ng.conf"
    path = "parser(p_json); " if parser else ""
    conf.write_text(
        "@version: 3.38\n"
        f'@define include-path "{AGENTS_ROOT}/usr/share/syslog-ng/include"\n'
        "options { stats-freq(0); keep-hostname(yes); };\n"
        f'source s_lines {{ file("{lines}" flags(no-parse) follow-freq(0.2)); }};\n'
        f"{destination}\n"
        f"log {{ source(s_lines); {path}destination(d_tideway); }};\n"
    )
    return conf


async def _ships(
    aws: Aws,
    ready: Settings,
    tmp_path: Path,
    destination: str,
    *,
    parser: bool,
    deadline_s: float = 90,
) -> None:
    binary = require(AGENTS_ROOT / "usr/sbin/syslog-ng", "syslog-ng")
    records = agent_records(LINES, run=tmp_path.name)
    lines = tmp_path / "app.log"
    write_lines(lines, records)
    async with serving(with_key(ready), create=False) as url:
        conf = _config(tmp_path, lines, destination.format(url=url, key=KEY), parser)
        argv = [
            str(binary),
            "--foreground",
            "--stderr",
            "--no-caps",
            f"--module-path={MODULES}",
            f"--cfgfile={conf}",
            f"--persist-file={tmp_path / 'syslog-ng.persist'}",
            f"--pidfile={tmp_path / 'syslog-ng.pid'}",
            f"--control={tmp_path / 'syslog-ng.ctl'}",
        ]
        env = {"LD_LIBRARY_PATH": str(AGENTS_ROOT / "usr/lib/syslog-ng")}
        async with running(argv, tmp_path, env) as agent:
            seen = await wait_for_lines(aws, ready.stream, LINES, deadline_s)
            assert seen >= LINES, agent.output()
    await drain(ready)
    assert_landed_once(read_table(aws, ready).to_pylist(), records)


async def test_syslog_ng_http_destination_ships_every_line_once(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    await _ships(aws, ready, tmp_path, HTTP_DESTINATION, parser=False)


async def test_syslog_ng_elasticsearch_http_destination_ships_every_line_once(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    await _ships(aws, ready, tmp_path, ES_DESTINATION, parser=True)


async def test_syslog_ng_http_destination_json_array_batches_ship_every_line_once(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    await _ships(aws, ready, tmp_path, HTTP_ARRAY_DESTINATION, parser=False)


async def test_syslog_ng_http_destination_mislabelled_ndjson_ships_every_line_once(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    await _ships(aws, ready, tmp_path, HTTP_MISLABELLED_DESTINATION, parser=False)


async def test_syslog_ng_http_destination_without_content_type_ships_every_line_once(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    await _ships(aws, ready, tmp_path, HTTP_UNLABELLED_DESTINATION, parser=False)
