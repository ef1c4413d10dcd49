"""Notification throughput: N matching messages, one run, a local webhook receiver.

For each round, a fresh Maildir of N messages from the watched sender and a fresh
state directory, then ``mailrules run --once --all`` with

* ``plain``:  the rule ``[{flag: flagged}]``
* ``notify``: the same rule plus ``{notify: hook}`` (a webhook to a tiny
  ``http.server`` on 127.0.0.1, HTTP/1.1 keep-alive, in this process)

and reports the drain of the outbox (from the last message record to the last row
marked sent, both timestamps from the state database), rows/s, the mail side of the
run (wall time minus the drain: start-up, decide, act, record), and the peak RSS of
the mailrules process. Medians of ``--rounds`` rounds.

    .venv/bin/python bench/notify/run.py [--messages 10000] [--rounds 3] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import http.server
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = (
    "import resource, sys\n"
    "from mailrules.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    latency = 0.0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.latency:
            time.sleep(Receiver.latency)
        with Receiver.lock:
            Receiver.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def make_maildir(root: Path, n: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        (root / "new" / f"{1700000000 + i}.M{i}P1.bench").write_bytes(
            (
                f"From: Alice <alice@example.org>\nTo: me@example.net\n"
                f"Subject: message {i}\nMessage-ID: <b{i}@bench.example>\n"
                f"Date: Tue, 24 Nov 2026 10:00:00 +0000\n\nHello {i}.\n"
            ).encode()
        )


def one_run(base: Path, n: int, notify: bool, port: int) -> dict[str, float]:
    if base.exists():
        shutil.rmtree(base)
    make_maildir(base / "Mail", n)
    actions = "[{flag: flagged}, {notify: hook}]" if notify else "[{flag: flagged}]"
    config = base / "rules.yaml"
    config.write_text(
        f"accounts:\n  local: {{maildir: {base / 'Mail'}}}\n"
        "notifiers:\n"
        f"  hook: {{webhook: {{url: 'http://127.0.0.1:{port}/hook'}}}}\n"
        f"rules:\n  - {{name: alice, when: {{from: alice@example.org}}, then: {actions}}}\n"
    )
    Receiver.count = 0
    started = time.monotonic()
    done = subprocess.run(
        [
            *(sys.executable, "-c", WRAPPER, "run", "--once", "--all", "-q", "-c", str(config)),
            *("--state-dir", str(base / "state"), "--notify-budget", "600"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"mailrules failed ({done.returncode}): {done.stderr[-2000:]}")
    rss = int(re.search(r"MAXRSS_KB (\d+)", done.stderr).group(1)) / 1024
    timing = json.loads(
        subprocess.run(
            [sys.executable, "-c", PHASES, str(base / "state" / "state.sqlite3")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    mail = wall - timing["drain"]
    return {"wall": wall, "mail": mail, "rss_mib": rss, "received": Receiver.count, **timing}


# The drain, from the state itself: from the last message record to the last row sent.
PHASES = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
last = db.execute("SELECT max(at) FROM audit").fetchone()[0]
sent = db.execute("SELECT count(*), max(sent_at) FROM outbox WHERE state='sent'").fetchone()
print(json.dumps({"sent": sent[0], "drain": (sent[1] - last) if sent[1] else 0.0}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    Receiver.latency = args.latency_ms / 1000
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    results: dict[str, list[dict[str, float]]] = {"plain": [], "notify": []}
    with tempfile.TemporaryDirectory(prefix="mailrules-bench-") as tmp:
        for _ in range(args.rounds):
            for kind in ("plain", "notify"):
                results[kind].append(
                    one_run(Path(tmp) / kind, args.messages, kind == "notify", port)
                )
    server.shutdown()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    print(
        f"messages: {args.messages}, rounds: {args.rounds}, receiver latency: {args.latency_ms} ms"
    )
    for kind in ("plain", "notify"):
        print(
            f"{kind:7} wall {med(kind, 'wall'):6.2f}s  mail side {med(kind, 'mail'):6.2f}s  "
            f"peak RSS {med(kind, 'rss_mib'):5.1f} MiB"
        )
    drain = med("notify", "drain")
    sent = med("notify", "sent")
    print(
        f"outbox: {sent:.0f} sent, {med('notify', 'received'):.0f} received, drained in "
        f"{drain:.2f}s = {sent / drain if drain else 0:.0f} rows/s"
    )


if __name__ == "__main__":
    main()
