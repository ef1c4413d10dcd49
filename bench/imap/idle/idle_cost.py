#!/usr/bin/env python3
"""Idle cost of the mailrules service watching many folders over IDLE with no mail.

    idle_cost.py [--folders 20] [--window 300] [--settle 15] [--backstop 5m]

Creates the folders Idle/01 ... Idle/NN (empty) in the bench account, starts `mailrules run`
(the service) with push: idle on all of them, waits until every watcher is in IDLE and
the start-up poll is done, lets it settle, then measures over --window seconds with no
mail at all:

  * the service's CPU: the run time of all its threads, from /proc/PID/task/*/schedstat (ns);
  * the CPU of the Dovecot imap processes serving it (one per connection);
  * its resident memory: VmRSS at the end and VmHWM (the peak since start).

The per-hour figures are the window's, scaled to 3600 s: an estimate from a short run,
not a measurement of an hour. The account's schedule (the backstop poll) is set to
--backstop with no jitter, so that a poll of all folders falls inside the window (at
5m: twelve polls an hour, three times the default backstop of 15m). Results are appended
to $BENCH_RESULTS/idle_cost.jsonl.

Needs the bench Dovecot (dovecot-up.sh); uses BENCH_HOST, BENCH_IMAP_PORT, BENCH_USER,
BENCH_PASS like the other watchers, and MAILRULES (default: the repository's venv).
"""

import argparse
import imaplib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_idle import BASE, HOST, MAILRULES, PASS, PORT, RESULTS, USER, cpu, imap_processes, status_kb  # noqa: E402


def make_folders(names):
    m = imaplib.IMAP4(HOST, PORT)
    m.login(USER, PASS)
    for name in names:
        m.create(name)  # NO [ALREADYEXISTS] is fine
    for name in names:
        typ, data = m.status(name, "(MESSAGES)")
        if typ != "OK" or b"MESSAGES 0" not in data[0]:
            sys.exit("folder %s is not empty or not there: %r" % (name, data))
    m.logout()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folders", type=int, default=20)
    ap.add_argument("--window", type=int, default=300, help="seconds measured (default 300)")
    ap.add_argument("--settle", type=int, default=15, help="seconds after start-up before measuring")
    ap.add_argument("--backstop", default="5m", help="the account's polling schedule (default 5m)")
    args = ap.parse_args()

    names = ["Idle/%02d" % (k + 1) for k in range(args.folders)]
    make_folders(names)
    run_id = time.strftime("%Y%m%dT%H%M%S")
    state_dir = os.path.join(BASE, "mailrules-idle-state", "idle-cost-" + run_id)
    shutil.rmtree(state_dir, ignore_errors=True)
    os.makedirs(state_dir)
    config = os.path.join(state_dir, "rules.yaml")
    with open(config, "w") as fh:
        fh.write(
            "accounts:\n  bench:\n"
            "    imap: {host: %s, port: %d, security: plain, username: %s, password: %s}\n"
            "    folders: [%s]\n    push: idle\n    schedule: {every: %s, jitter: 0s}\n"
            "rules:\n  - {name: alerts, when: {from: alerts@watch.example}, then: [{flag: flagged}]}\n"
            % (HOST, PORT, USER, PASS, ", ".join(names), args.backstop))
    os.makedirs(os.path.join(RESULTS, "logs"), exist_ok=True)
    log_path = os.path.join(RESULTS, "logs", "idle-cost-%s.log" % run_id)
    before = set(imap_processes())
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([MAILRULES, "run", "-c", config, "--state-dir", state_dir],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            text = open(log_path, "rb").read()
            if text.count(b": watching with IDLE") >= args.folders and text.count(b"first run") >= args.folders:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the service did not come up; see %s" % log_path)
            time.sleep(0.1)
        time.sleep(args.settle)
        mine = sorted(set(imap_processes()) - before)
        dove = lambda: sum(cpu(p)[0] for p in mine if os.path.exists("/proc/%d" % p))  # noqa: E731
        own0, dove0, t0 = cpu(proc.pid)[0], dove(), time.monotonic()
        time.sleep(args.window)
        own1, dove1, t1 = cpu(proc.pid)[0], dove(), time.monotonic()
        rss, hwm = status_kb(proc.pid, "VmRSS"), status_kb(proc.pid, "VmHWM")
        threads = len(os.listdir("/proc/%d/task" % proc.pid))
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            t_stop = time.monotonic()
            proc.wait(60)
            stop_s = time.monotonic() - t_stop
        else:
            stop_s = None
    scale = 3600.0 / (t1 - t0)
    row = dict(run_id=run_id, ts=time.time(), host=socket.gethostname(), cpus=os.cpu_count(),
               kernel=platform.release(), folders=args.folders, window_s=round(t1 - t0, 1),
               backstop=args.backstop, connections=len(mine), threads=threads,
               cpu_s=round(own1 - own0, 4), dovecot_cpu_s=round(dove1 - dove0, 4),
               cpu_s_per_hour_est=round((own1 - own0) * scale, 3),
               cpu_s_per_hour_per_folder_est=round((own1 - own0) * scale / args.folders, 4),
               dovecot_cpu_s_per_hour_est=round((dove1 - dove0) * scale, 3),
               rss_mib=round(rss / 1024, 1), hwm_mib=round(hwm / 1024, 1), alive_at_end=alive,
               sigterm_exit_s=None if stop_s is None else round(stop_s, 2), exit_code=proc.returncode)
    with open(os.path.join(RESULTS, "idle_cost.jsonl"), "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))
    print("mailrules service, %d folders in IDLE, no mail, %s backstop: %.3f CPU-s in %.0f s "
          "-> about %.2f CPU-s/hour (%.3f per folder), estimated; RSS %.1f MiB (peak %.1f MiB); "
          "Dovecot %.3f CPU-s/hour for its %d connections" % (
              args.folders, args.backstop, row["cpu_s"], row["window_s"], row["cpu_s_per_hour_est"],
              row["cpu_s_per_hour_per_folder_est"], row["rss_mib"], row["hwm_mib"],
              row["dovecot_cpu_s_per_hour_est"], len(mine)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
