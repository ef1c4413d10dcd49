#!/usr/bin/env python3
"""IDLE notification latency: from an IMAP APPEND by another client to the moment a watching
tool runs its command.

    run_idle.py [--tools floor,floor-exists,imapfilter,mailrules] [--appends 20] [--interval 2] [--idle 300]
    run_idle.py --report [--update-readme]

For each watcher:
  1. the bench mailbox is reset to the pristine corpus (reset_mailbox.sh; INBOX holds N
     messages, N=10000 by default), and the watcher is started in the background. Once it
     prints "ready" (logged in, INBOX selected, start-up search done) it gets 2 s to enter
     IDLE;
  2. a separate IMAP connection of this script APPENDs --appends messages from the watched
     sender (alerts@watch.example) to INBOX, --interval seconds apart. Each APPEND's send
     time is taken with the wall clock just before the command goes out, and its UID comes
     from the APPENDUID response code;
  3. the watcher runs stamp.sh for each new message, which writes date(1)'s wall-clock time
     (ns) and the UID into a stamps file. The latency of an append is the first stamp after
     its send time and before the next append's; a missing or extra stamp, or a UID that is
     not the appended one, is counted;
  4. 3 s after the last append, the watcher's own CPU (run time of its threads, in ns, from
     /proc/PID/task/*/schedstat), the CPU of the commands it ran (its reaped children, from
     /proc/PID/stat), the CPU of its Dovecot imap process, and its peak RSS (VmHWM) are read;
  5. then nothing happens for --idle seconds (default 300), and the CPU the watcher and its
     Dovecot imap process use in that time is its idle cost;
  6. the watcher is stopped with SIGTERM (by its pid).
Results are appended to $BENCH_RESULTS/idle.jsonl; --report prints the table, and
--update-readme writes it into idle/README.md.

Watchers:
  floor         idle_floor.py: IMAPClient IDLE; on EXISTS: DONE, one UID SEARCH for new UIDs
                from the sender, the command per hit, IDLE again
  floor-exists  idle_floor.py --on-exists: the command right on EXISTS, no search, stays in IDLE
  imapfilter    imapfilter -c imapfilter_idle.lua: an enter_idle() loop; on wake-up
                contain_from(sender) over INBOX, the command for each UID not handled before
  mailrules     `mailrules run` (the service) with push: idle on INBOX and one rule,
                from: alerts@watch.example -> run: [mailrules_stamp.sh, STAMPS]; it is ready
                once it logs that it watches INBOX and has taken its first-run baseline.
                Its stamp names the Message-ID, which is mapped back to the probe's UID.

The bench scripts (reset_mailbox.sh, prepare_corpus.sh) come from $BENCH_DIR, by default
this directory's parent; from a checkout without them, point it at the shared bench:
BENCH_DIR=/work/shared/bench. The mailrules binary is $MAILRULES_BIN, by default the
repository's .venv/bin/mailrules.
"""

import argparse
import datetime
import imaplib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.environ.get("BENCH_DIR") or os.path.dirname(HERE)
MAILRULES = os.environ.get("MAILRULES_BIN") or os.path.join(
    os.path.dirname(os.path.dirname(HERE)), ".venv", "bin", "mailrules")
BASE = os.environ.get("BENCH_BASE", "/tmp/mailbench")
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(BASE, "results"))
VENV = os.environ.get("BENCH_VENV", os.path.join(BASE, "venv"))
HOST = os.environ.get("BENCH_HOST", "127.0.0.1")
PORT = int(os.environ.get("BENCH_IMAP_PORT", "10143"))
USER = os.environ.get("BENCH_USER", "bench")
PASS = os.environ.get("BENCH_PASS", "bench")
SENDER = "alerts@watch.example"
STAMP = os.path.join(HERE, "stamp.sh")
README = os.path.join(HERE, "README.md")
ORDER = ["floor-exists", "floor", "imapfilter", "mailrules"]
READY = {"mailrules": [b"INBOX: watching with IDLE", b"first run, mail already there"]}
CLK = os.sysconf("SC_CLK_TCK")


def watchers():
    py = os.path.join(VENV, "bin", "python3")
    floor = [py, os.path.join(HERE, "idle_floor.py"), "--command", STAMP, "--sender", SENDER]
    return {
        "floor": floor,
        "floor-exists": floor + ["--on-exists"],
        "imapfilter": ["imapfilter", "-c", os.path.join(HERE, "imapfilter_idle.lua")],
        "mailrules": [MAILRULES, "run"],
    }


def mailrules_config(stamps, state_dir):
    """The config of the mailrules watcher: IDLE on INBOX, one rule that stamps."""
    path = os.path.join(state_dir, "rules.yaml")
    os.makedirs(state_dir, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(
            "accounts:\n  bench:\n"
            "    imap: {host: %s, port: %d, security: plain, username: %s, password: %s}\n"
            "    folders: [INBOX]\n    push: idle\n"
            "rules:\n  - name: alerts\n    when: {from: %s}\n"
            "    then: [{run: [%s, %s]}]\n"
            % (HOST, PORT, USER, PASS, SENDER, os.path.join(HERE, "mailrules_stamp.sh"), stamps))
    return ["-c", path, "--state-dir", state_dir]


def cpu(pid):
    """(own CPU, reaped children's CPU) of a process, in seconds. The own CPU is the sum of its
    threads' run time from /proc/PID/task/*/schedstat (nanoseconds); the children's comes from
    /proc/PID/stat (cutime+cstime, in clock ticks: 10 ms)."""
    own = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as fh:
                own += int(fh.read().split()[0])
        except OSError:
            pass
    with open("/proc/%d/stat" % pid) as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    return own / 1e9, (int(rest[13]) + int(rest[14])) / CLK


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def master_pid():
    with open(os.path.join(BASE, "run", "master.pid")) as fh:
        return int(fh.read().strip())


def imap_processes():
    """pids of Dovecot's imap processes (one per connection)."""
    master, out = master_pid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as fh:
                s = fh.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        ppid = int(s.rsplit(")", 1)[1].split()[1])
        if ppid == master and comm == "imap":
            out.append(int(d))
    return out


def probe_message(run_id, k):
    now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    return ("From: Watch Alerts <%s>\r\nTo: %s@bench.example\r\nSubject: idle probe %d\r\nDate: %s\r\n"
            "Message-ID: <idle-probe-%s-%d@bench.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\nProbe %d of an IDLE latency run.\r\n"
            % (SENDER, USER, k, now, run_id, k, k)).encode()


def append_all(run_id, n, interval):
    """APPENDs n probes, interval seconds apart, over one connection. Returns [(t_sent, t_ok, uid)]."""
    m = imaplib.IMAP4(HOST, PORT)
    m.login(USER, PASS)
    out = []
    t0 = time.monotonic() + 0.5
    for k in range(n):
        delay = t0 + k * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = probe_message(run_id, k)
        t_sent = time.time()
        typ, data = m.append("INBOX", None, None, msg)
        t_ok = time.time()
        if typ != "OK":
            raise RuntimeError("APPEND failed: %r" % data)
        mo = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
        out.append((t_sent, t_ok, int(mo.group(1)) if mo else None))
    m.logout()
    return out


def read_stamps(path):
    out = []
    with open(path) as fh:
        for line in fh:
            f = line.split()
            if len(f) == 3:
                out.append((float(f[0]), f[1], f[2]))
    return sorted(out)


def match(appends, stamps, interval, check_uid, run_id=None):
    """Latency of each append: the first stamp in [its send time, the next send time).
    A stamp may name the probe by UID or (mailrules) by its Message-ID."""
    lat, missed, wrong_uid = [], 0, 0
    for i, (t_sent, _, uid) in enumerate(appends):
        end = appends[i + 1][0] if i + 1 < len(appends) else t_sent + interval + 3
        hits = [j for j, s in enumerate(stamps) if t_sent <= s[0] < end]
        if not hits:
            missed += 1
            continue
        ts, _, arg = stamps[hits[0]]
        lat.append(ts - t_sent)
        if check_uid and uid is not None and arg not in (str(uid), "<idle-probe-%s-%d@bench.example>" % (run_id, i)):
            wrong_uid += 1
    extra = len(stamps) - (len(appends) - missed)  # stamps beyond the first one per append
    return lat, missed, extra, wrong_uid


def p95(values):
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)] if s else None


def wait_ready(log_path, proc, markers=(b"ready",), timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("watcher exited with %s; see %s" % (proc.returncode, log_path))
        with open(log_path, "rb") as fh:
            text = fh.read()
        if all(m in text for m in markers):
            return
        time.sleep(0.05)
    raise RuntimeError("watcher not ready after %d s; see %s" % (timeout, log_path))


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_one(label, cmd, args, run_id, common):
    subprocess.run([os.path.join(BENCH_DIR, "reset_mailbox.sh")], check=True)
    logdir = os.path.join(RESULTS, "logs")
    os.makedirs(logdir, exist_ok=True)
    stamps_path = os.path.join(logdir, "idle-%s-%s.stamps" % (run_id, label))
    log_path = os.path.join(logdir, "idle-%s-%s.log" % (run_id, label))
    open(stamps_path, "w").close()
    env = dict(os.environ, IDLE_STAMPS=stamps_path, IDLE_COMMAND=STAMP, IDLE_SENDER=SENDER,
               HOME=os.environ.get("BENCH_TOOL_HOME", os.path.join(BASE, "home")))
    os.makedirs(env["HOME"], exist_ok=True)
    if label == "mailrules":
        state_dir = os.path.join(BASE, "mailrules-state", run_id)
        shutil.rmtree(state_dir, ignore_errors=True)
        cmd = cmd + mailrules_config(stamps_path, state_dir)
    before = set(imap_processes())
    t_spawn = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(log_path, proc, READY.get(label, (b"ready",)))
        t_ready = time.monotonic() - t_spawn
        time.sleep(2)
        mine = sorted(set(imap_processes()) - before)

        def dovecot_cpu():
            return sum(cpu(p)[0] for p in mine if os.path.exists("/proc/%d" % p))
        own0, kids0 = cpu(proc.pid)
        dove0 = dovecot_cpu()
        appends = append_all(run_id, args.appends, args.interval)
        time.sleep(3)
        own1, kids1 = cpu(proc.pid)
        dove1 = dovecot_cpu()
        hwm, rss = status_kb(proc.pid, "VmHWM"), status_kb(proc.pid, "VmRSS")
        time.sleep(args.idle)
        own2, kids2 = cpu(proc.pid)
        dove2 = dovecot_cpu()
        alive = proc.poll() is None
    finally:
        stop(proc)
    stamps = read_stamps(stamps_path)
    lat, missed, extra, wrong = match(appends, stamps, args.interval, check_uid=label != "floor-exists", run_id=run_id)
    rtt = [ok - sent for sent, ok, _ in appends]
    row = dict(common, ts=time.time(), label=label, cmd=" ".join(cmd), appends=len(appends), interval_s=args.interval,
               latencies_s=[round(x, 6) for x in lat], missed=missed, extra=extra, wrong_uid=wrong,
               median_s=statistics.median(lat) if lat else None, p95_s=p95(lat),
               min_s=min(lat) if lat else None, max_s=max(lat) if lat else None,
               append_rtt_median_s=statistics.median(rtt), ready_s=round(t_ready, 3),
               startup_cpu_s=round(own0, 4), run_cpu_s=round(own1 - own0, 4), run_children_cpu_s=round(kids1 - kids0, 3),
               run_dovecot_cpu_s=round(dove1 - dove0, 4), hwm_kb=hwm, rss_kb=rss, idle_s=args.idle,
               idle_cpu_s=round(own2 - own1, 4), idle_children_cpu_s=round(kids2 - kids1, 3),
               idle_dovecot_cpu_s=round(dove2 - dove1, 4),
               dovecot_processes=len(mine), alive_at_end=alive, stamps=len(stamps))
    with open(os.path.join(RESULTS, "idle.jsonl"), "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print("  %s: median %.1f ms, p95 %.1f ms (min %.1f, max %.1f), missed %d, extra %d, wrong uid %d; "
          "cpu %.4f s run + %.2f s commands (dovecot %.4f s), start-up %.3f s, peak RSS %.1f MiB; "
          "idle %d s: cpu %.4f s, dovecot %.4f s" % (
              label, row["median_s"] * 1e3, row["p95_s"] * 1e3, row["min_s"] * 1e3, row["max_s"] * 1e3, missed, extra,
              wrong, row["run_cpu_s"], row["run_children_cpu_s"], row["run_dovecot_cpu_s"], row["startup_cpu_s"],
              hwm / 1024, args.idle, row["idle_cpu_s"], row["idle_dovecot_cpu_s"]), flush=True)
    return row


def versions():
    def out(cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        except OSError:
            return ""
    py = os.path.join(VENV, "bin", "python3")
    ic = out([py, "-c", "import imapclient, sys; print(imapclient.__version__, sys.version.split()[0])"]).split()
    mr = out([MAILRULES, "--version"]).split()
    ver = re.search(r"(\S+)", out(["dpkg-query", "-W", "-f", "${Version}", "imapfilter"]))
    return {"dovecot": out(["dovecot", "--version"]).split()[0], "imapfilter": ver.group(1) if ver else None,
            "imapclient": ic[0] if ic else None, "python": ic[1] if len(ic) > 1 else None,
            "mailrules": mr[1] if len(mr) > 1 else None}


def measure(args):
    try:
        os.kill(master_pid(), 0)
    except (OSError, ValueError):
        sys.exit("dovecot is not running: run dovecot-up.sh")
    w = watchers()
    selected = args.tools.split(",")
    for label in selected:
        if not os.access(w[label][0], os.X_OK) and not shutil.which(w[label][0]):
            sys.exit("%s: %s not found (the floor needs peers/imapautofiler/install.sh's venv, "
                     "imapfilter the Debian package)" % (label, w[label][0]))
    want = os.path.join(BASE, "corpus", "n%d-s1" % args.n)
    if os.path.realpath(os.path.join(BASE, "current-corpus")) != want or not os.path.isdir(os.path.join(want, "pristine")):
        subprocess.run([os.path.join(BENCH_DIR, "prepare_corpus.sh"), str(args.n)], check=True)
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    common = {"run_id": run_id, "n": args.n, "host": socket.gethostname(), "cpus": os.cpu_count(),
              "kernel": platform.release(), "versions": versions()}
    print("run %s; INBOX %d messages; %d appends %g s apart; idle %d s; tools %s" % (
        run_id, args.n, args.appends, args.interval, args.idle, ",".join(selected)))
    print("versions: %s" % ", ".join("%s %s" % kv for kv in common["versions"].items()), flush=True)
    for label in selected:
        print("%s: %s" % (label, " ".join(w[label])), flush=True)
        run_one(label, w[label], args, run_id, common)
    print()
    return report(args)


def report(args):
    path = os.path.join(RESULTS, "idle.jsonl")
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    latest = {}
    for r in rows:
        if r["label"] not in latest or r["ts"] > latest[r["label"]]["ts"]:
            latest[r["label"]] = r
    fl = latest.get("floor")
    lines = ["| watcher | INBOX | appends | median ms | p95 ms | min-max ms | x floor (median) | missed / extra | "
             "watcher CPU ms, all appends | Dovecot CPU ms, all appends | start-up CPU ms | peak RSS MiB | "
             "idle CPU ms / 5 min | Dovecot idle CPU ms / 5 min |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    run_ids, machine, vers = set(), None, None
    for lab in sorted(latest, key=lambda x: ORDER.index(x) if x in ORDER else len(ORDER)):
        r = latest[lab]
        run_ids.add(r["run_id"])
        machine = "%s (%s CPUs, kernel %s)" % (r["host"], r["cpus"], r["kernel"])
        vers = r["versions"]
        ratio = r["median_s"] / fl["median_s"] if fl and fl["median_s"] else None
        scale = 300.0 / r["idle_s"] if r["idle_s"] else None
        lines.append("| %s | %d | %d | %.1f | %.1f | %.1f-%.1f | %s | %d / %d%s | %.1f | %s | %.1f | %.1f | %s | %s |" % (
            lab, r["n"], r["appends"], r["median_s"] * 1e3, r["p95_s"] * 1e3, r["min_s"] * 1e3, r["max_s"] * 1e3,
            "-" if ratio is None else "%.2f" % ratio, r["missed"], r["extra"],
            "" if not r["wrong_uid"] else ", %d wrong UID" % r["wrong_uid"],
            r["run_cpu_s"] * 1e3, "-" if r.get("run_dovecot_cpu_s") is None else "%.1f" % (r["run_dovecot_cpu_s"] * 1e3),
            r["startup_cpu_s"] * 1e3, r["hwm_kb"] / 1024,
            "-" if scale is None else "%.2f" % (r["idle_cpu_s"] * scale * 1e3),
            "-" if scale is None else "%.2f" % (r["idle_dovecot_cpu_s"] * scale * 1e3)))
    lines.append("")
    lines.append("Run: %s. Machine: %s. Versions: %s." % (
        ", ".join(sorted(run_ids)), machine, ", ".join("%s %s" % kv for kv in (vers or {}).items())))
    table = "\n".join(lines)
    print(table)
    if args.update_readme:
        with open(README) as fh:
            text = fh.read()
        begin, end = "<!-- IDLE-RESULTS:BEGIN -->", "<!-- IDLE-RESULTS:END -->"
        if begin not in text or end not in text:
            sys.exit("README has no %s ... %s markers" % (begin, end))
        text = text[:text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]
        with open(README, "w") as fh:
            fh.write(text)
        print("(written to %s)" % README)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10000, help="corpus size in INBOX (default 10000)")
    ap.add_argument("--tools", default=",".join(ORDER))
    ap.add_argument("--appends", type=int, default=20)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--idle", type=int, default=300, help="seconds with no mail for the idle cost (default 300)")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args()
    unknown = set(args.tools.split(",")) - set(ORDER)
    if unknown:
        ap.error("unknown watchers: %s" % ", ".join(sorted(unknown)))
    return report(args) if args.report else measure(args)


if __name__ == "__main__":
    sys.exit(main())
