"""The local end-to-end stack (the README's first command), on loopback under
``./.localstack``: broker and InfluxDB with the project's database.

Grows with the project (issue 9): collector, measurement server, agent, bulletin.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from netmon import __version__, services

DATABASE = "netmon"


def _create_database(influxd: services.Service) -> None:
    data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{DATABASE}"'}).encode()
    urllib.request.urlopen(f"http://{influxd.host}:{influxd.port}/query", data=data, timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Start the stack; return an exit code."""
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description="Run the hatinh-netmon stack locally on loopback.")
    parser.add_argument("--dir", type=Path, default=Path(".localstack"),
                        help="where every service keeps its files (default: ./.localstack)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the stack running until Ctrl-C and print how to reach it")
    parser.add_argument("--json", action="store_true", help="print endpoints as JSON")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)

    workdir = args.dir.resolve()
    started: list[services.Service] = []
    try:
        print(f"[1/2] mosquitto under {workdir}/mosquitto", file=sys.stderr)
        broker = services.start_mosquitto(workdir / "mosquitto")
        started.append(broker)
        print(f"[2/2] influxd under {workdir}/influxd", file=sys.stderr)
        influxd = services.start_influxd(workdir / "influxd")
        started.append(influxd)
        _create_database(influxd)
        endpoints = {"mqtt": f"mqtt://{broker.host}:{broker.port}",
                     "influxdb": f"http://{influxd.host}:{influxd.port}", "database": DATABASE}
        if args.json:
            print(json.dumps(endpoints))
        else:
            for name, value in endpoints.items():
                print(f"{name:10} {value}")
            print("not built yet: collector, agent, measurement server, bulletin "
                  "(see the open issues)")
        if args.keep:
            print("running; Ctrl-C stops everything", file=sys.stderr)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while all(s.running for s in started):
                time.sleep(1)
        return 0
    except services.ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for svc in reversed(started):
            svc.stop()


if __name__ == "__main__":
    sys.exit(main())
