#!/usr/bin/env python3
"""POP3 fetch-and-deliver benchmark: download every message of the bench account over POP3
and deliver it into a local Maildir, then run again with nothing new.

    run_pop3.py [-n 10000] [-r 3] [-w 1] [--tools floor,getmail6,...]
    run_pop3.py --report [--update-readme]
    run_pop3.py --syscalls [--tools ...]

Each repetition runs every tool once, in turn (the speed of a shared VM drifts over minutes,
and interleaving gives every tool the same conditions). For each tool and repetition:
  1. the tool's Maildir and state (what it remembers having fetched) are deleted and made
     anew, and the server mailbox is reset to the pristine corpus (reset_mailbox.sh, which
     ends with sync); none of this is timed;
  2. "first": the tool runs once and fetches all N messages (timed as a whole process, with
     lib/harness.py's timer: wall clock, CPU of the tool and of every child it waited for,
     peak RSS from GNU time, CPU of Dovecot's pop3 process);
  3. verify_maildir.py checks the Maildir: N messages, each byte-identical to its corpus
     message, none lost or duplicated, tmp/ empty;
  4. "second": the tool runs again on the same state (timed the same way). It must fetch
     nothing: the Maildir's file list must be the same before and after.
The Maildir is deleted after the second run. One warm-up repetition (not recorded) comes
first. Every peer runs as the unprivileged user $POP3_USER (install.sh), under setpriv, with
HOME=$BENCH_BASE/pop3/home. Runs are appended to $BENCH_RESULTS/pop3.jsonl; --report prints
the table (and --update-readme writes it into pop3/README.md).

--syscalls runs each tool's first run twice more, untimed: once sampling /proc to split its
CPU into its own and its children's (the MDAs, getmail6's delivery processes), and once under
strace -f -c to count the processes it starts and its fsync, rename, link and execve calls.

Tools:
  floor               pop3_floor.py (poplib: UIDL + RETR, tmp/ then rename into new/), no fsync
  floor-fsync         the same with --fsync (each message file, new/ and the state file)
  getmail6            getmail6 SimplePOP3Retriever -> Maildir destination, read_all = false
  fetchmail-maildrop  fetchmail (uidl, keep) -> mda maildrop (a Maildir as DEFAULT)
  fetchmail-procmail  fetchmail (uidl, keep) -> mda procmail (a Maildir as DEFAULT)
  mailrules           mailrules run --once: a POP3 account with deliver_to and the lab's rules
                      R1-R5 (peers/mailrules.yaml.in); verified as a tree: every corpus message
                      exactly once, byte-identical, in the folder its rule chose

The lab (lib/, dovecot-up.sh, reset_mailbox.sh, prepare_corpus.sh) is the directory above this
one when it has lib/harness.py, else $BENCH_LAB, else ../shared/bench beside the repository,
else /work/shared/bench.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def find_lab():
    for cand in (os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "imap"),
                 os.environ.get("BENCH_LAB"),
                 os.path.join(os.path.dirname(REPO), "shared", "bench"), "/work/shared/bench"):
        if cand and os.path.exists(os.path.join(cand, "lib", "harness.py")):
            return cand
    sys.exit("cannot find the benchmark lab (lib/harness.py): set BENCH_LAB")


BENCH_DIR = find_lab()
sys.path.insert(0, os.path.join(BENCH_DIR, "lib"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from tables import fmt, write_into_readme  # noqa: E402
import verify_maildir  # noqa: E402

BASE = os.environ.get("BENCH_BASE", "/tmp/mailbench")
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(BASE, "results"))
POP3_DIR = os.path.join(BASE, "pop3")
POP3_USER = os.environ.get("POP3_USER", "mailfetch")
POP3_HOME = os.path.join(POP3_DIR, "home")
POP3_PYTHON = os.environ.get("POP3_PYTHON", "/usr/bin/python3")
POP3_VENV = os.path.join(POP3_DIR, "venv")
MAILRULES_VENV = os.path.join(POP3_DIR, "mailrules-venv")
HOST = os.environ.get("BENCH_HOST", "127.0.0.1")
PORT = os.environ.get("BENCH_POP3_PORT", "10110")
USER = os.environ.get("BENCH_USER", "bench")
PASS = os.environ.get("BENCH_PASS", "bench")
README = os.path.join(HERE, "README.md")
ORDER = ["floor", "floor-fsync", "getmail6", "fetchmail-maildrop", "fetchmail-procmail", "mailrules"]
# fetchmail's exit status 1 means "no new mail": that is the expected answer of a second run.
FETCHMAIL_NOMAIL = 1


class Tool:
    def __init__(self, label, how, files, cmd, ok_first=(0,), ok_second=(0,), tree=False):
        self.label, self.how, self.files, self.cmd = label, how, files, cmd
        self.ok_first, self.ok_second = ok_first, ok_second
        self.tree = tree  # delivers into subfolders too: verify the whole tree against R1-R5


def tools():
    floor = [POP3_PYTHON, os.path.join(HERE, "pop3_floor.py"), "--maildir", "@MAILDIR@", "--state", "@STATE@/uidls"]
    fetchmail = ["fetchmail", "-f", "@STATE@/fetchmailrc"]
    return {t.label: t for t in [
        Tool("floor", "poplib, own tmp/ + rename, no fsync", {}, floor),
        Tool("floor-fsync", "poplib, own tmp/ + fsync + rename", {}, floor + ["--fsync"]),
        Tool("getmail6", "Maildir destination (a forked child per message)", {"getmailrc": "getmailrc.in"},
             [os.path.join(POP3_VENV, "bin", "getmail"), "--getmaildir", "@STATE@", "--rcfile", "getmailrc"]),
        Tool("fetchmail-maildrop", "mda maildrop", {"fetchmailrc": "fetchmailrc.in", "mailfilter": "maildrop.mailfilter.in"},
             fetchmail, ok_second=(0, FETCHMAIL_NOMAIL)),
        Tool("fetchmail-procmail", "mda procmail", {"fetchmailrc": "fetchmailrc.in", "procmailrc": "procmailrc.in"},
             fetchmail, ok_second=(0, FETCHMAIL_NOMAIL)),
        Tool("mailrules", "in-process, 5 rules (R1-R5), tmp/ + fsync + rename",
             {"rules.yaml": "mailrules.yaml.in", "password": "mailrules.password.in"},
             [os.path.join(MAILRULES_VENV, "bin", "mailrules"), "run", "--once", "-q",
              "-c", "@STATE@/rules.yaml", "--state-dir", "@STATE@/db"], tree=True),
    ]}


def paths(label):
    work = os.path.join(POP3_DIR, "run", label)
    return work, os.path.join(work, "Maildir"), os.path.join(work, "state")


def subst(text, label):
    _, maildir, state = paths(label)
    mda = {"fetchmail-maildrop": "/usr/bin/maildrop %s/mailfilter" % state,
           "fetchmail-procmail": "/usr/bin/procmail %s/procmailrc" % state}.get(label, "")
    for k, v in (("@MAILDIR@", maildir), ("@STATE@", state), ("@HOST@", HOST), ("@PORT@", PORT),
                 ("@USER@", USER), ("@PASS@", PASS), ("@MDA@", mda)):
        text = text.replace(k, v)
    return text


def reset_local(tool):
    """A new, empty Maildir and an empty state directory, with the tool's configuration."""
    work, maildir, state = paths(tool.label)
    shutil.rmtree(work, ignore_errors=True)
    for d in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, d))
    os.makedirs(state)
    for name, template in tool.files.items():
        with open(os.path.join(HERE, "peers", template)) as fh:
            text = subst(fh.read(), tool.label)
        path = os.path.join(state, name)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o600)  # fetchmail and maildrop refuse a control file others can read
    pw = pwd.getpwnam(POP3_USER)
    for root, dirs, files in os.walk(work):
        for n in [root] + [os.path.join(root, x) for x in dirs + files]:
            os.chown(n, pw.pw_uid, pw.pw_gid)


def reset_server():
    subprocess.run([os.path.join(BENCH_DIR, "reset_mailbox.sh")], check=True)


def listing(maildir):
    folders = [""] + sorted(f for f in os.listdir(maildir) if f.startswith(".") and f not in (".", ".."))
    return sorted("%s/%s/%s" % (f, d, n) for f in folders for d in ("tmp", "new", "cur")
                  if os.path.isdir(os.path.join(maildir, f, d)) for n in os.listdir(os.path.join(maildir, f, d)))


def command(tool):
    return ["setpriv", "--reuid", POP3_USER, "--regid", POP3_USER, "--clear-groups", "--"] + \
        [subst(a, tool.label) for a in tool.cmd]


def tool_env():
    env = dict(os.environ, HOME=POP3_HOME, USER=POP3_USER, LOGNAME=POP3_USER)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as a user's install: bytecode compiled once
    return env


def versions():
    def run(cmd, pattern):
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tool_env()).stdout
        except OSError:
            return None
        mo = re.search(pattern, out)
        return mo.group(1) if mo else None

    def deb(pkg):
        return run(["dpkg-query", "-W", "-f", "${Version}", pkg], r"(\S+)")
    return {"dovecot": run(["dovecot", "--version"], r"(\S+)"),
            "python": run([POP3_PYTHON, "-V"], r"Python (\S+)"),
            "getmail6": run([os.path.join(POP3_VENV, "bin", "pip"), "show", "getmail6"], r"Version: (\S+)"),
            "fetchmail": deb("fetchmail"), "procmail": deb("procmail"), "maildrop": deb("maildrop"),
            "mailrules": run([os.path.join(MAILRULES_VENV, "bin", "mailrules"), "--version"], r"mailrules (\S+)")}


def check_setup(selected):
    if harness.master_pid() is None:
        sys.exit("dovecot is not running: run dovecot-up.sh")
    try:
        pwd.getpwnam(POP3_USER)
    except KeyError:
        sys.exit("no user %s: run pop3/install.sh" % POP3_USER)
    for t in selected:
        exe = subst(t.cmd[0], t.label)
        if not shutil.which(exe):
            sys.exit("%s: %s not found: run pop3/install.sh" % (t.label, exe))
    for exe in ("setpriv", "/usr/bin/time", "/usr/bin/maildrop", "/usr/bin/procmail"):
        if not shutil.which(exe):
            sys.exit("%s not found: run pop3/install.sh" % exe)


def ensure_corpus(n, seed):
    want = os.path.join(BASE, "corpus", "n%d-s%d" % (n, seed))
    cur = os.path.realpath(os.path.join(BASE, "current-corpus"))
    if cur != want or not os.path.isdir(os.path.join(want, "pristine", "Maildir")):
        subprocess.run([os.path.join(BENCH_DIR, "prepare_corpus.sh"), str(n), str(seed)], check=True)
    return want


def measure(args):
    all_tools = tools()
    selected = [all_tools[x] for x in args.tools.split(",")]
    check_setup(selected)
    corpus = ensure_corpus(args.n, args.seed)
    os.makedirs(os.path.join(RESULTS, "logs"), exist_ok=True)
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    spool = "/var/mail/%s" % POP3_USER  # procmail creates an empty one at its first start
    spool_existed = os.path.exists(spool)
    common = {"run_id": run_id, "n": args.n, "seed": args.seed, "host": socket.gethostname(),
              "cpus": os.cpu_count(), "kernel": platform.release(), "versions": versions()}
    print("run %s; N=%d; tools %s; reps %d, warm-up %d" % (run_id, args.n, args.tools, args.reps, args.warmup))
    print("versions: %s" % ", ".join("%s %s" % kv for kv in common["versions"].items()), flush=True)
    env = tool_env()
    rows = collections.defaultdict(list)
    try:
        # Repetitions on the outside and tools on the inside: this machine's speed drifts over
        # minutes, and interleaving lets every tool sample the same conditions.
        for rep in range(1 - args.warmup, args.reps + 1):
            record = rep >= 1
            print("%s" % ("repetition %d" % rep if record else "warm-up"), flush=True)
            for tool in selected:
                cmd = command(tool)
                _, maildir, _ = paths(tool.label)
                reset_local(tool)
                reset_server()
                base = os.path.join(RESULTS, "logs", "pop3-%s-%s-%s" % (run_id, tool.label, rep if record else "warmup"))
                m1 = harness.timed(cmd, base + "-first.log", env)
                check = verify_maildir.verify_tree if tool.tree else verify_maildir.verify
                s1 = check(maildir, corpus)
                before = listing(maildir)
                m2 = harness.timed(cmd, base + "-second.log", env)
                after = listing(maildir)
                s2 = check(maildir, corpus)
                added, removed = len(set(after) - set(before)), len(set(before) - set(after))
                ok1 = s1["ok"] and m1["rc"] in tool.ok_first
                ok2 = m2["rc"] in tool.ok_second and not added and not removed and s2["files"] == s1["files"]
                v1 = verify_maildir.verdict(s1)
                v2 = "nothing added" if (not added and not removed) else "%d files added, %d removed" % (added, removed)
                for phase, m, ok, v, s in (("first", m1, ok1, v1, s1), ("second", m2, ok2, v2, s2)):
                    row = dict(common, ts=time.time(), label=tool.label, how=tool.how, phase=phase, rep=rep,
                               cmd=" ".join(cmd), verified=ok, verify=v, verify_summary=s, **m)
                    print("  %-18s %-6s wall %8.3f s  cpu %6.2f s  dovecot %5.2f s  rss %6.1f MiB  rc %d  %s" % (
                        tool.label, phase, m["wall_s"], m["user_s"] + m["sys_s"],
                        m["server_cpu_s"] or 0, m["maxrss_kb"] / 1024, m["rc"], v), flush=True)
                    if record:
                        rows[(tool.label, phase)].append(row)
                        with open(os.path.join(RESULTS, "pop3.jsonl"), "a") as fh:
                            fh.write(json.dumps(row) + "\n")
                if not (args.keep and rep == args.reps):
                    shutil.rmtree(paths(tool.label)[0], ignore_errors=True)
    finally:
        if not spool_existed and os.path.isfile(spool) and os.path.getsize(spool) == 0:
            os.unlink(spool)
    failed = []
    for tool in selected:
        for phase in ("first", "second"):
            rs = rows[(tool.label, phase)]
            ws = [r["wall_s"] for r in rs]
            ver = all(r["verified"] for r in rs)
            print("%-18s %-6s median wall %.3f s (min %.3f, max %.3f), verified: %s" % (
                tool.label, phase, statistics.median(ws), min(ws), max(ws), "yes" if ver else "NO"))
            if not ver:
                failed.append("%s/%s" % (tool.label, phase))
    print()
    report(args)
    if failed:
        print("not verified: %s" % ", ".join(failed))
    return 1 if failed else 0


SYSCALLS = ["fsync", "fdatasync", "rename", "renameat", "renameat2", "link", "linkat",
            "clone", "clone3", "fork", "vfork", "execve"]


def own_and_children_cpu(tool):
    """Runs the tool's first run once (not timed) and splits its CPU into its own and that of
    the children it waited for (MDAs, delivery processes): once it has exited, but before it
    is reaped, /proc/PID/stat holds both totals."""
    reset_local(tool)
    reset_server()
    p = subprocess.Popen(command(tool), env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        time.sleep(0.05)
    with open("/proc/%d/stat" % p.pid) as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    p.wait()
    return (int(f[11]) + int(f[12])) / harness.CLK, (int(f[13]) + int(f[14])) / harness.CLK


def syscalls(args):
    """Where each tool's first run spends CPU (its own process or its children), and how many
    durability and process syscalls it makes (strace -f -c). Nothing here is timed."""
    all_tools = tools()
    selected = [all_tools[x] for x in args.tools.split(",")]
    check_setup(selected)
    if not shutil.which("strace"):
        sys.exit("strace not found: apt-get install strace")
    ensure_corpus(args.n, args.seed)
    spool = "/var/mail/%s" % POP3_USER
    spool_existed = os.path.exists(spool)
    os.makedirs(os.path.join(RESULTS, "logs"), exist_ok=True)
    print("| tool | own CPU s | children's CPU s | processes started | fsync | fdatasync | rename | link | execve in children |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for tool in selected:
            own, kids = own_and_children_cpu(tool)
            reset_local(tool)
            reset_server()
            out = os.path.join(RESULTS, "logs", "pop3-strace-%s.txt" % tool.label)
            # --seccomp-bpf stops the tracee only on the syscalls counted, which keeps a run with
            # 10,000 MDA processes from taking many times longer under strace.
            subprocess.run(["strace", "-f", "--seccomp-bpf", "-c", "-o", out, "-e", "trace=" + ",".join(SYSCALLS)]
                           + command(tool),
                           env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            counts = collections.Counter()
            with open(out) as fh:
                for line in fh:
                    f = line.split()
                    if len(f) >= 5 and f[-1] in SYSCALLS and f[3].isdigit():
                        counts[f[-1]] = int(f[3])
            # strace also counts the exec of setpriv and setpriv's exec of the tool; leave them out.
            print("| %s | %.1f | %.1f | %d | %d | %d | %d | %d | %d |" % (
                tool.label, own, kids, counts["clone"] + counts["clone3"] + counts["fork"] + counts["vfork"],
                counts["fsync"], counts["fdatasync"], counts["rename"] + counts["renameat"] + counts["renameat2"],
                counts["link"] + counts["linkat"], counts["execve"] - 2), flush=True)
            shutil.rmtree(paths(tool.label)[0], ignore_errors=True)
    finally:
        if not spool_existed and os.path.isfile(spool) and os.path.getsize(spool) == 0:
            os.unlink(spool)
    return 0


def report(args):
    path = os.path.join(RESULTS, "pop3.jsonl")
    if not os.path.exists(path):
        sys.exit("no results in %s yet" % path)
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["label"], r["n"], r["phase"])].append(r)
    latest = {}
    for k, rs in groups.items():
        s = max(rs, key=lambda r: r["ts"])["run_id"]
        latest[k] = [r for r in rs if r["run_id"] == s]

    def med(rs, f):
        vals = [f(r) for r in rs if f(r) is not None]
        return statistics.median(vals) if vals else None

    def key(k):
        lab, n, ph = k
        return (n, ph != "first", ORDER.index(lab) if lab in ORDER else len(ORDER), lab)

    lines = ["| tool | delivery | run | median wall s | min-max s | x floor | msg/s | tool CPU s | Dovecot CPU s | peak RSS MiB | runs | verified |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    run_ids, machine, vers = set(), None, None
    for k in sorted(latest, key=key):
        lab, n, ph = k
        rs = latest[k]
        run_ids.add(rs[0]["run_id"])
        machine = "%s (%s CPUs, kernel %s)" % (rs[0]["host"], rs[0]["cpus"], rs[0]["kernel"])
        vers = rs[0].get("versions")
        wall = med(rs, lambda r: r["wall_s"])
        fl = latest.get(("floor", n, ph))
        ratio = wall / med(fl, lambda r: r["wall_s"]) if fl else None
        ws = [r["wall_s"] for r in rs]
        rate = "%.0f" % (n / wall) if ph == "first" else "-"
        if all(r["verified"] for r in rs):
            ver = "yes" if ph == "first" else "yes (nothing added)"
        else:
            bad = [r for r in rs if not r["verified"]][-1]
            ver = "**no**: %s" % bad["verify"].replace("FAIL: ", "")
        lines.append("| %s | %s | %s | %s | %s-%s | %s | %s | %s | %s | %.0f | %d | %s |" % (
            lab, rs[0]["how"], "%s (N=%d)" % (ph, n), fmt(wall, 3), fmt(min(ws), 3), fmt(max(ws), 3),
            "-" if ratio is None else "%.1f" % ratio, rate,
            fmt(med(rs, lambda r: r["user_s"] + r["sys_s"])), fmt(med(rs, lambda r: r["server_cpu_s"])),
            med(rs, lambda r: r["maxrss_kb"]) / 1024, len(rs), ver))
    lines.append("")
    lines.append("Run: %s. Machine: %s." % (", ".join(sorted(run_ids)), machine))
    if vers:
        lines.append("Versions: %s." % ", ".join("%s %s" % (k, v) for k, v in vers.items()))
    table = "\n".join(lines)
    print(table)
    if args.update_readme:
        write_into_readme(README, "POP3-RESULTS", table)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10000, help="corpus size (default 10000)")
    ap.add_argument("-s", "--seed", type=int, default=1)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("-w", "--warmup", type=int, default=1, choices=[0, 1])
    ap.add_argument("--tools", default=",".join(ORDER))
    ap.add_argument("--keep", action="store_true", help="keep the last run's Maildirs under $BENCH_BASE/pop3/run")
    ap.add_argument("--report", action="store_true", help="only print the table from pop3.jsonl")
    ap.add_argument("--update-readme", action="store_true", help="also write the table into pop3/README.md")
    ap.add_argument("--syscalls", action="store_true",
                    help="own vs children's CPU, and fsync/rename/link/process counts per tool (strace)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the peers are started as %s)" % POP3_USER)
    unknown = set(args.tools.split(",")) - set(ORDER)
    if unknown:
        ap.error("unknown tools: %s" % ", ".join(sorted(unknown)))
    if args.report:
        return report(args)
    if args.syscalls:
        return syscalls(args)
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
