"""
The hub's resident memory while one client pipelines 1,000,000 requests and
never reads an answer, against its memory at rest measured in the same run.

    .venv/bin/python bench/memory.py [--requests 1000000] [--json out.json]
"""

import argparse
import json
import threading
import time
from pathlib import Path

import psutil
from common import Daemon, Database, connect, table

from tradehub.client.calls import select_payload
from tradehub.protocol.enums import MessageType, SQLCommand, SQLTable
from tradehub.protocol.messages import encode_frame


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the client keeps trying to send")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)
    database = Database()
    try:
        daemon = Daemon(database).wait_ready()
        try:
            hub = psutil.Process(daemon.process.pid)
            at_rest = hub.memory_info().rss
            sock = connect(daemon.frontend_port)
            sock.settimeout(options.seconds)
            request = encode_frame(
                MessageType.REQUEST,
                select_payload(SQLTable.ACCOUNT, limit=1),
                1,
                command=SQLCommand.SELECT,
                table=SQLTable.ACCOUNT,
            )
            batch = request * 10_000
            peak = [at_rest]
            done = threading.Event()

            def sample():
                while not done.wait(0.2):
                    peak.append(hub.memory_info().rss)

            threading.Thread(target=sample, daemon=True).start()
            sent = 0
            started = time.monotonic()
            try:
                while sent < options.requests:
                    sock.sendall(batch)
                    sent += 10_000
            except TimeoutError:
                pass
            time.sleep(2)
            done.set()
            peak.append(hub.memory_info().rss)
            sock.close()
            elapsed = time.monotonic() - started
        finally:
            daemon.stop()
    finally:
        database.close()
    results = {
        "requests_sent": sent,
        "rss_at_rest_mib": at_rest / 2**20,
        "rss_peak_mib": max(peak) / 2**20,
        "growth_mib": (max(peak) - at_rest) / 2**20,
        "seconds": elapsed,
    }
    print(f"one client pipelining {options.requests:,} SELECT requests without reading answers")
    print(
        table(
            ("requests sent", "RSS at rest MiB", "RSS peak MiB", "growth MiB"),
            [
                (
                    f"{sent:,}",
                    f"{results['rss_at_rest_mib']:.1f}",
                    f"{results['rss_peak_mib']:.1f}",
                    f"{results['growth_mib']:.1f}",
                ),
            ],
        )
    )
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
