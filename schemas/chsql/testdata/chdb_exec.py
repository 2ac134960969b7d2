"""Run ClickHouse SQL on chDB (ClickHouse in-process) for the conformance suite.

The Go test starts this with the Python of a virtualenv that has chdb
installed (deploy/local/chdb.sh) and talks to it over stdin/stdout, one JSON
object per line:

  request:  {"sql": "<one statement>"}
  response: {"ok": true, "result": "<JSONCompact output, may be empty>"}
            {"ok": false, "error": "<ClickHouse's message>"}

The first line written is {"ok": true, "version": "<ClickHouse version>",
"chdb": "<chdb version>"}. State (databases, tables) lives in the session
directory given as the only argument, so statements see each other's effects.
The result is passed through as text so that Go parses the numbers exactly.
"""

import json
import os
import sys

import chdb
from chdb import session


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: chdb_exec.py <session dir>", file=sys.stderr)
        sys.exit(2)
    # chDB is clickhouse-local inside: an INSERT reads fd 0 when it is not a
    # terminal, and it may write to fd 1. Keep the request and reply pipes on
    # fds of our own and give the engine /dev/null and stderr instead.
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sess = session.Session(sys.argv[1])

    def reply(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    # A database of our own: chDB 2.x's session "default" database does not
    # keep tables from one query to the next.
    sess.query("CREATE DATABASE IF NOT EXISTS conformance")
    sess.query("USE conformance")
    # nan and inf as "nan"/"inf", not null, so they compare with 18.16's.
    sess.query("SET output_format_json_quote_denormals = 1")
    version = str(sess.query("SELECT version()", "TabSeparated")).strip()
    reply({"ok": True, "version": version, "chdb": chdb.__version__})
    for line in requests:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            res = sess.query(req["sql"], "JSONCompact")
            reply({"ok": True, "result": res.bytes().decode("utf-8") if res is not None else ""})
        except Exception as e:  # ClickHouse errors arrive as exceptions
            reply({"ok": False, "error": str(e)})


if __name__ == "__main__":
    main()
