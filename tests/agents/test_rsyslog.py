"""rsyslog (Debian's build, unpacked by `make agents`) tails generated lines with imfile and
ships them to `serve` with omelasticsearch in bulk mode; every line lands once.

Debian's rsyslog 8.2302 is built without omhttp (it is not among the plugins of the
`rsyslog` package nor of any rsyslog-* package), so omhttp is covered by nothing here.
What omelasticsearch sends, seen on the wire: `POST /_bulk` under
`Content-Type: application/json; charset=utf-8` (not x-ndjson), with `"_type":"events"` in
every action line (the pre-7 Elasticsearch dialect; `esVersion.major` changes it), Basic
auth from `uid`/`pwd`.
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
MODULES = AGENTS_ROOT / "usr/lib/x86_64-linux-gnu/rsyslog"


def _config(workdir: Path, lines: Path, port: int, es_major: int | None) -> Path:
    """imfile -> omelasticsearch bulk; each tailed JSON line is one bulk source as it is."""
    version = f' esVersion.major="{es_major}"' if es_major else ""
    conf = workdir / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{workdir}")\n'
        'module(load="imfile")\n'
        'module(load="omelasticsearch")\n'
        'template(name="line" type="string" string="%msg%")\n'
        f'input(type="imfile" File="{lines}" Tag="app" freshStartTail="off")\n'
        f'action(type="omelasticsearch" server="127.0.0.1" serverport="{port}"\n'
        '       template="line" searchIndex="rsyslog" bulkmode="on"'
        f' uid="rsyslog" pwd="{KEY}"{version}\n'
        f'       errorfile="{workdir / "es-errors.json"}"\n'
        '       queue.type="linkedlist" queue.dequeueBatchSize="200"'
        ' action.resumeInterval="1" action.resumeRetryCount="-1")\n'
    )
    return conf


async def _ships(aws: Aws, ready: Settings, tmp_path: Path, es_major: int | None) -> None:
    binary = require(AGENTS_ROOT / "usr/sbin/rsyslogd", "rsyslogd")
    require(MODULES / "omelasticsearch.so", "rsyslog-elasticsearch")
    records = agent_records(LINES, run=tmp_path.name)
    lines = tmp_path / "app.log"
    write_lines(lines, records)
    async with serving(with_key(ready), create=False) as url:
        port = int(url.rsplit(":", 1)[1])
        conf = _config(tmp_path, lines, port, es_major)
        argv = [str(binary), "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")]
        argv += ["-M", str(MODULES)]
        async with running(argv, tmp_path) as agent:
            seen = await wait_for_lines(aws, ready.stream, LINES)
            assert seen >= LINES, agent.output()
    errors = tmp_path / "es-errors.json"
    assert not errors.exists(), errors.read_text()[:2000]
    await drain(ready)
    assert_landed_once(read_table(aws, ready).to_pylist(), records)


async def test_rsyslog_omelasticsearch_bulk_ships_every_line_once(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    await _ships(aws, ready, tmp_path, es_major=None)


async def test_rsyslog_omelasticsearch_bulk_for_es8_ships_every_line_once(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    await _ships(aws, ready, tmp_path, es_major=8)
