#!/usr/bin/env python3
"""Benchmark ``mailrules run --once`` on a Maildir against a plain-Python floor, side by side.

    .venv/bin/python bench/maildir/run.py                    # 1k, 10k and 50k, 3 repetitions
    .venv/bin/python bench/maildir/run.py --sizes 1000 --reps 1
    .venv/bin/python bench/maildir/run.py --update-readme    # also rewrite README.md's table
    .venv/bin/python bench/maildir/run.py --report bench/results/maildir-SESSION.jsonl

For every size N it makes sure the corpus exists (bench/imap/gen_corpus.py, not timed),
then, for each repetition and each tool in turn (the order rotates, so that a slow
minute on a shared machine does not always hit the same tool):

1. a fresh copy of the pristine corpus Maildir (``cp -a --reflink=auto``, then ``sync``;
   not timed: the tools rename and unlink files, so hard links would change the pristine
   copy);
2. the first run, timed as a whole process: wall time on a monotonic clock from just
   before the spawn to just after the reap, CPU time from ``os.wait4``, peak RSS from GNU
   ``time -f %M`` (``/usr/bin/time``, Debian package ``time``);
3. the end state, read back and checked against R1-R5 (verify.py; not timed);
4. the second run on the result, with nothing new, timed the same way, and the end state
   read back again: a second run must change nothing.

The tools are ``mailrules`` (``run --once --all -q`` with rules20.yaml and a fresh state
directory, then ``run --once -q``), ``floor`` (floor.py: the stdlib parses each whole
message) and ``floor-headers`` (floor.py --headers-only). After each repetition the end
states of the tools are compared message by message; any difference is printed and
recorded. Every run is a JSON line in bench/results/maildir-SESSION.jsonl.

The machine may be shared. Before each timed run the script waits (up to --quiet-wait s)
for other processes to go idle, records the CPU they used during the run (``others_cpu_s``,
from /proc/stat), and repeats a tool's pair of runs (up to --retries times) when other
processes used more than --max-others CPUs on average during one of them. Repeated
attempts stay in the JSON lines, marked ``discarded``; the table leaves them out.

The timed processes get PYTHONPYCACHEPREFIX under the work directory (bytecode is cached
there, as an installed package has it, without writing into the repository); one
untimed warm-up run per tool fills it. Interpreters are called directly, never through
a pyenv shim. With --commit REV, mailrules is that commit installed (not editable) into
its own venv under --base, so that edits to the working tree during a run do not mix in.
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)
GEN = os.path.join(BENCH, "imap", "gen_corpus.py")
CONFIG = os.path.join(HERE, "rules20.yaml")
FLOOR = os.path.join(HERE, "floor.py")
README = os.path.join(REPO, "README.md")
START, END = "<!-- MAILDIR-BENCH:START -->", "<!-- MAILDIR-BENCH:END -->"
CLK = os.sysconf("SC_CLK_TCK")
TOOLS = ("mailrules", "floor", "floor-headers")

sys.path.insert(0, HERE)
import verify  # noqa: E402

# -- measuring --------------------------------------------------------------------------


def busy_cpu_s():
    """CPU seconds the whole machine has spent busy since boot (all CPUs)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / CLK


def wait_for_quiet(max_wait, threshold=0.25, window=0.5):
    """Wait (up to max_wait s) until other processes use less than `threshold` CPUs; return the wait."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        b0 = busy_cpu_s()
        time.sleep(window)
        if (busy_cpu_s() - b0) / window < threshold:
            break
    return round(time.monotonic() - t0, 1)


def timed(cmd, env, log_path, timeout):
    """Run cmd once as a whole process and measure it."""
    rss_file = log_path + ".rss"
    full = ["/usr/bin/time", "-f", "%M", "-o", rss_file, *cmd]
    load1 = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        busy0 = busy_cpu_s()
        t0 = time.perf_counter()
        p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        killer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
        killer.start()
        _, status, ru = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
        busy1 = busy_cpu_s()
        killer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    cpu = ru.ru_utime + ru.ru_stime
    maxrss = ru.ru_maxrss
    try:
        with open(rss_file) as fh:
            maxrss = int(fh.read().strip().splitlines()[-1])
        os.unlink(rss_file)
    except (OSError, ValueError, IndexError):
        pass
    return {"wall_s": round(t1 - t0, 4), "user_s": round(ru.ru_utime, 3), "sys_s": round(ru.ru_stime, 3),
            "maxrss_kb": maxrss, "rc": p.returncode, "timed_out": t1 - t0 >= timeout,
            "others_cpu_s": round(max(0.0, busy1 - busy0 - cpu), 2), "load1_before": round(load1, 2)}


# -- corpus and work copies ---------------------------------------------------------------


def generator_digest(py):
    return subprocess.run([py, GEN, "--digest"], check=True, capture_output=True, text=True).stdout.strip()


def ensure_corpus(py, base, n, seed):
    """The corpus directory for (n, seed); regenerated when missing, stale or from an older generator."""
    path = os.path.join(base, "corpus", "n%d-s%d" % (n, seed))
    reason = None
    try:
        with open(os.path.join(path, "meta.json")) as fh:
            meta = json.load(fh)
        if meta.get("generator_sha256") != generator_digest(py):
            reason = "the generator changed"
        elif verify.anchor_drift_days(meta) > verify.rules_ref.MAX_ANCHOR_DRIFT_DAYS:
            reason = "its anchor %s is too far from today" % meta["anchor"]
    except (OSError, ValueError):
        reason = "it does not exist"
    if reason:
        print("corpus n=%d: generating (%s)..." % (n, reason), flush=True)
        subprocess.run([py, GEN, "--n", str(n), "--seed", str(seed), "--out", path], check=True)
    return path


def fresh_copy(pristine, work):
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    subprocess.run(["cp", "-a", "--reflink=auto", pristine, os.path.join(work, "Maildir")], check=True)
    subprocess.run(["sync"], check=True)


def commands(tool, py, mailrules, work):
    maildir = os.path.join(work, "Maildir")
    if tool == "mailrules":
        base = [mailrules, "run", "--once", "-q", "-c", CONFIG, "--state-dir", os.path.join(work, "state")]
        return [*base, "--all"], base
    cmd = [py, FLOOR, maildir] if tool == "floor" else [py, FLOOR, "--headers-only", maildir]
    return cmd, cmd


def install_commit(py, base, rev):
    """Install mailrules at a commit into its own venv (not editable, as users install it).

    The working tree may be changing while the benchmark runs; a commit does not."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], check=True, capture_output=True,
                         text=True).stdout.strip()
    venv = os.path.join(base, "venv-%s" % sha)
    exe = os.path.join(venv, "bin", "mailrules")
    if not os.access(exe, os.X_OK):
        src = os.path.join(base, "src-%s" % sha)
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        archive = subprocess.run(["git", "-C", REPO, "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        subprocess.run([py, "-m", "venv", "--clear", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", src], check=True)
    return os.path.join(venv, "bin", "python"), exe, sha


def git_state():
    """The commit and whether mailrules/ has uncommitted changes (someone may be editing it)."""
    def git(*args):
        r = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    dirty = git("status", "--porcelain", "--", "mailrules")
    diff = git("diff", "HEAD", "--", "mailrules") or ""
    return {"commit": git("rev-parse", "--short", "HEAD"), "mailrules_dirty": bool(dirty),
            "mailrules_diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if dirty else None}


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"host": socket.gethostname(), "cpus": os.cpu_count(), "cpu_model": model,
            "mem_gib": round(mem, 1), "kernel": platform.release(), "python": platform.python_version()}


# -- the run ------------------------------------------------------------------------------


def resolve_python():
    """This interpreter, by its real path if it was reached through a pyenv shim."""
    exe = sys.executable
    if "/shims/" in exe:
        exe = subprocess.run([exe, "-c", "import sys; print(sys.executable)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return exe


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,50000", help="comma-separated N (default 1000,10000,50000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per size and tool (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of %s" % ", ".join(TOOLS))
    ap.add_argument("--base", default=os.environ.get("MAILRULES_BENCH_BASE", "/tmp/mailrules-bench"),
                    help="corpora and work copies (default /tmp/mailrules-bench; 50k needs about 2.3 GB)")
    ap.add_argument("--results", default=os.path.join(BENCH, "results"), help="JSON lines and logs go here")
    ap.add_argument("--mailrules", help="the mailrules command (default: next to this interpreter)")
    ap.add_argument("--commit", metavar="REV",
                    help="benchmark mailrules at this commit, installed into its own venv under --base")
    ap.add_argument("--quiet-wait", type=float, default=20, metavar="S",
                    help="before each timed run, wait up to S s for other processes to go idle (default 20)")
    ap.add_argument("--max-others", type=float, default=0.5, metavar="CPUS",
                    help="repeat a tool's runs when other processes used more than this many CPUs on average "
                         "during one of them (default 0.5)")
    ap.add_argument("--retries", type=int, default=2, help="how often to repeat such runs (default 2)")
    ap.add_argument("--timeout", type=float, default=600, help="stop when one run takes longer (s, default 600)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    ap.add_argument("--keep", action="store_true", help="keep each tool's last work copy")
    ap.add_argument("--update-readme", action="store_true", help="rewrite the table in README.md")
    ap.add_argument("--report", metavar="JSONL", help="only print (and --update-readme) the table of a past session")
    a = ap.parse_args()

    if a.report:
        with open(a.report) as fh:
            rows = [json.loads(line) for line in fh]
        finish(rows, a.update_readme)
        return 0

    py = resolve_python()
    installed = None
    if a.commit:
        py, mailrules, installed = install_commit(py, a.base, a.commit)
    else:
        mailrules = a.mailrules or os.path.join(os.path.dirname(sys.executable), "mailrules")
        if not os.access(mailrules, os.X_OK):
            mailrules = shutil.which("mailrules")
    if not mailrules:
        ap.error("mailrules not found: pass --mailrules or run this with the venv's python")
    if not os.access("/usr/bin/time", os.X_OK):
        ap.error("/usr/bin/time is missing: apt-get install time (GNU time measures the peak RSS)")
    tools = [t for t in a.tools.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            ap.error("unknown tool %r" % t)
    sizes = [int(s) for s in a.sizes.split(",")]
    session = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    os.makedirs(os.path.join(a.results, "logs"), exist_ok=True)
    out_path = os.path.join(a.results, "maildir-%s.jsonl" % session)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(a.base, "pycache")
    git0 = git_state()
    if installed:
        git0 = {"commit": installed, "mailrules_dirty": False, "mailrules_diff_sha1": None}
    common = {"session": session, "seed": a.seed, "reps": a.reps, "python_exe": py, "mailrules_exe": mailrules,
              **machine(), **git0}
    print("session %s: sizes %s, %d reps, tools %s\n  python %s\n  mailrules %s (commit %s%s)\n  results %s" % (
        session, sizes, a.reps, ", ".join(tools), py, mailrules, git0["commit"],
        ", mailrules/ has uncommitted changes" if git0["mailrules_dirty"] else "", out_path), flush=True)

    rows = []
    corpora = {n: ensure_corpus(py, a.base, n, a.seed) for n in sizes}
    if not a.no_warmup:
        n0 = min(sizes)
        for tool in tools:
            work = os.path.join(a.base, "work", tool)
            env["BENCH_MAILDIR"] = os.path.join(work, "Maildir")
            fresh_copy(os.path.join(corpora[n0], "raw", "Maildir"), work)
            first, _ = commands(tool, py, mailrules, work)
            m = timed(first, env, os.path.join(a.results, "logs", "%s-warmup-%s.log" % (session, tool)), a.timeout)
            print("  warm-up %-13s n=%d  %.2f s  rc %d" % (tool, n0, m["wall_s"], m["rc"]), flush=True)

    for n in sizes:
        corpus = corpora[n]
        meta, manifest = verify.load_corpus(corpus)
        pristine = os.path.join(corpus, "raw", "Maildir")
        print("N=%d (corpus %s, anchor %s)" % (n, corpus, meta["anchor"]), flush=True)
        for rep in range(1, a.reps + 1):
            order = tools[(rep - 1) % len(tools):] + tools[:(rep - 1) % len(tools)]
            snaps = {}
            for tool in order:
                for attempt in range(a.retries + 1):
                    got, state = measure(a, env, session, common, tool, py, mailrules, n, rep, attempt, pristine, meta,
                                         manifest)
                    rows += got
                    if any(r["timed_out"] for r in got):
                        print("run took longer than %.0f s: stopping" % a.timeout, flush=True)
                        write_rows(out_path, rows)
                        return 3
                    if not any(r["contended"] for r in got) or attempt == a.retries:
                        break
                    for r in got:
                        r["discarded"] = True
                    print("  (other processes used more than %.1f CPU during that run: repeating it)" % a.max_others,
                          flush=True)
                snaps[tool] = state
            agreement = {}
            ref = "mailrules" if "mailrules" in snaps else order[0]
            for tool in tools:
                if tool == ref:
                    continue
                diff = verify.compare(snaps[ref], snaps[tool])
                agreement[tool] = {k: len(v) for k, v in diff.items()}
                print("  rep %d end state %s vs %s: %s" % (rep, ref, tool, "agree" if not diff else "DIFFER"),
                      flush=True)
                if diff:
                    print(verify.describe_diff(diff, ref, tool))
            for row in rows:
                if row["n"] == n and row["rep"] == rep and not row.get("discarded"):
                    row["agreement_vs_" + ref] = agreement
        write_rows(out_path, rows)
    git1 = git_state() if not installed else git0
    if git1 != git0:
        print("WARNING: mailrules changed during the run (%s -> %s): the numbers mix versions" % (git0, git1))
        for row in rows:
            row["mailrules_changed_during_run"] = True
    write_rows(out_path, rows)
    finish(rows, a.update_readme)
    return 0


def measure(a, env, session, common, tool, py, mailrules, n, rep, attempt, pristine, meta, manifest):
    """One tool's first and second run on a fresh copy: the two rows, and the end state after the first."""
    work = os.path.join(a.base, "work", tool)
    env["BENCH_MAILDIR"] = os.path.join(work, "Maildir")
    fresh_copy(pristine, work)
    rows, prev, first_state = [], None, None
    for phase, cmd in zip(("first", "second"), commands(tool, py, mailrules, work), strict=True):
        log = os.path.join(a.results, "logs", "%s-n%d-%s-rep%d.%d-%s.log" % (session, n, tool, rep, attempt, phase))
        waited = wait_for_quiet(a.quiet_wait)
        m = timed(cmd, env, log, a.timeout)
        m["waited_for_quiet_s"] = waited
        state, odd = verify.snapshot(os.path.join(work, "Maildir"))
        problems, hits = verify.check_reference(state, meta, manifest)
        changed = None if prev is None else verify.compare(prev, state)
        prev = state
        first_state = first_state or state
        row = dict(common, n=n, tool=tool, rep=rep, attempt=attempt, phase=phase, cmd=" ".join(cmd), log=log, **m,
                   contended=m["others_cpu_s"] > a.max_others * m["wall_s"],
                   reference_ok=not problems, reference_problems=problems[:5], hits=hits,
                   notes=odd[:5], n_notes=len(odd),
                   changed_by_second={k: len(v) for k, v in changed.items()} if changed else {})
        print("  rep %d %-13s %-6s %8.3f s  cpu %7.2f s  rss %6.1f MiB  others %5.1f s  rc %d  R1-R5 %s%s%s" % (
            rep, tool, phase, m["wall_s"], m["user_s"] + m["sys_s"], m["maxrss_kb"] / 1024,
            m["others_cpu_s"], m["rc"], "ok" if not problems else "%d PROBLEMS" % len(problems),
            "" if not odd else "  %d notes" % len(odd),
            "" if not changed else "  CHANGED BY SECOND RUN: %s" % row["changed_by_second"]), flush=True)
        for p in problems[:3]:
            print("      " + p)
        rows.append(row)
        if m["timed_out"]:
            break
    if not a.keep:
        shutil.rmtree(work)
    return rows, first_state


def write_rows(path, rows):
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# -- the report ----------------------------------------------------------------------------


def fmt_s(x):
    return "%.3f" % x if x < 10 else "%.1f" % x if x < 100 else "%.0f" % x


def stats(rows, key):
    v = [r[key] for r in rows]
    return statistics.median(v), min(v), max(v)


def table(rows):
    """The Markdown table and a footer, from the session's rows."""
    repeated = sum(1 for r in rows if r.get("discarded") and r["phase"] == "first")
    rows = [r for r in rows if not r.get("discarded")]
    out = ["| N | tool | first run s (min-max) | first run CPU s | msgs/s | second run s (min-max) | peak RSS MiB "
           "| x floor: first / second | x floor-headers: first / second | end state |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    sizes = sorted({r["n"] for r in rows})
    tools = [t for t in TOOLS if any(r["tool"] == t for r in rows)]
    med = {}
    for n in sizes:
        for t in tools:
            for ph in ("first", "second"):
                sel = [r for r in rows if r["n"] == n and r["tool"] == t and r["phase"] == ph]
                if sel:
                    med[n, t, ph] = statistics.median(r["wall_s"] for r in sel)
    for n in sizes:
        for t in tools:
            first = [r for r in rows if r["n"] == n and r["tool"] == t and r["phase"] == "first"]
            second = [r for r in rows if r["n"] == n and r["tool"] == t and r["phase"] == "second"]
            if not first:
                continue
            f_med, f_min, f_max = stats(first, "wall_s")
            cpu = statistics.median(r["user_s"] + r["sys_s"] for r in first)
            cells = ["%d" % n, t, "%s (%s-%s)" % (fmt_s(f_med), fmt_s(f_min), fmt_s(f_max)), fmt_s(cpu),
                     "%.0f" % (n / f_med)]
            if second:
                s_med, s_min, s_max = stats(second, "wall_s")
                cells.append("%s (%s-%s)" % (fmt_s(s_med), fmt_s(s_min), fmt_s(s_max)))
            else:
                cells.append("-")
            cells.append("%.0f" % (max(r["maxrss_kb"] for r in first + second) / 1024))
            for floor in ("floor", "floor-headers"):
                if (n, floor, "first") in med:
                    ratios = ["%.2f" % (med[n, t, ph] / med[n, floor, ph]) if (n, t, ph) in med else "-"
                              for ph in ("first", "second")]
                    cells.append(" / ".join(ratios))
                else:
                    cells.append("-")
            ok = all(r["reference_ok"] and r["rc"] == 0 and not r["changed_by_second"] for r in first + second)
            cell = "R1-R5 ok" if ok else "R1-R5 FAILED"
            agree = [r["agreement_vs_mailrules"] for r in first if "agreement_vs_mailrules" in r]
            if agree and t != "mailrules":
                bad = sum(sum(ag.get(t, {}).values()) for ag in agree)
                cell += ", same as mailrules" if not bad else ", DIFFERS from mailrules (%d messages)" % bad
            cells.append(cell)
            out.append("| " + " | ".join(cells) + " |")
    r0 = rows[0]
    others = [r["others_cpu_s"] / r["wall_s"] for r in rows if r["wall_s"] > 0]
    foot = ("Session %s, %d repetitions; mailrules at commit %s%s. Machine: %s, %d CPUs (%s), %.0f GiB, "
            "Linux %s, Python %s. Median wall time of whole processes (and median user+system CPU of the first run); "
            "msgs/s = N / first run; peak RSS is the largest of any run. "
            "x floor = median / the floor's median at the same N (below 1 is faster than the floor). "
            "Other processes used a median %.0f%% of one CPU during the runs." % (
                r0["session"], r0["reps"], r0["commit"], " (+ uncommitted changes)" if r0["mailrules_dirty"] else "",
                r0["host"], r0["cpus"], r0["cpu_model"] or "unknown CPU", r0["mem_gib"], r0["kernel"], r0["python"],
                100 * statistics.median(others) if others else 0))
    contended = sum(1 for r in rows if r.get("contended"))
    if repeated or contended:
        foot += (" %d tool runs were repeated because other processes were busy during them; %d of the %d "
                 "runs shown still had more than half a CPU of competition." % (repeated, contended, len(rows)))
    if any(r.get("mailrules_changed_during_run") for r in rows):
        foot += " **mailrules changed during this session.**"
    return "\n".join(out), foot


def finish(rows, update_readme):
    tab, foot = table(rows)
    print()
    print(tab)
    print()
    print(foot)
    if update_readme:
        rewrite_readme(tab + "\n\n" + foot)
        print("updated %s" % README)


def rewrite_readme(body):
    block = "%s\n%s\n%s" % (START, body, END)
    try:
        with open(README, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    elif "\n## Benchmarks\n" in text:  # a subsection at the end of the existing section
        at = text.index("\n## Benchmarks\n") + 1
        nxt = text.find("\n## ", at)
        nxt = len(text) if nxt < 0 else nxt + 1
        sub = "### Maildir: `mailrules run --once` against a plain-Python floor\n\n" + block + "\n\n"
        text = text[:nxt].rstrip("\n") + "\n\n" + sub + text[nxt:]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + "## Benchmarks\n\n" + block + "\n"
    with open(README, "w", encoding="utf-8") as fh:
        fh.write(text)


if __name__ == "__main__":
    sys.exit(main())
