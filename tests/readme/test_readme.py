#!/usr/bin/python3
"""The README's commands, as printed, on a fresh clone (issue 11 §2 and §6).

Every command comes from README.md itself, so that the README and this test cannot drift apart:
change the run command or an example there and this test runs the new one.

  1. `git clone` of the repository's HEAD into a temp dir (CI checks the committed tree).
     WSQ_README_SRC=DIR copies DIR's working tree instead (tracked and untracked files, without
     what .gitignore ignores): to try uncommitted changes before committing them. A source
     that is not a git checkout (a release tarball) skips the test (exit 77).
  2. The README's test command: `.ci/run` must exec exactly it (it cannot run here: it IS the
     suite that runs this test).
  3. The README's run command, in the clone: it builds and starts wsqd in the foreground; wait
     for GET /healthz = 200 on the README's host:port, from this process (ss), data in ./data.
     It runs as `sh -c 'exec CMD'`: the process started is the one that execs wsqd.
  4. "Publish and subscribe in a minute": the subscriber, the curl publish and its printed
     answer, typing into the subscriber, the durable consumer (stop, publish, start: exactly
     what it missed), the wsq.v1 snippet (twice: first run, then a resumed run).
  5. SIGTERM to wsqd: exit status 0. The clone is removed.

The commands run with Debian's default PATH: the README promises a fresh Debian 12 machine, where
`python3` is /usr/bin/python3 (with python3-websockets), not a pyenv or venv python.
If something already listens on the README's port the test fails: the run command could not
work there, and a skip would turn "not proven" into a green run.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_WAIT = 780   # s: the run command builds everything first (2 cores: a few minutes)
STEP_WAIT = 15     # s: one step of the examples (a message to arrive, a client to exit)


class Fail(Exception):
    pass


def check(cond, what, *details):
    if not cond:
        raise Fail(what + "".join("\n    " + str(d) for d in details))


def step(msg):
    print("== " + msg, flush=True)


# -- the README, read like a user reads it ---------------------------------------------------

def sh_blocks(text):
    """The ```sh fenced blocks of a markdown text, in order."""
    return re.findall(r"^```sh\n(.*?)^```[ \t]*$", text, re.M | re.S)


def section(text, title):
    m = re.search(r"^## " + re.escape(title) + r"[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    check(m, f"README.md has no section '## {title}'")
    return m.group(1)


def one(pattern, text, what):
    """The first group of the one match of pattern in text."""
    found = re.findall(pattern, text, re.S)
    check(len(found) == 1, f"README.md: expected exactly one {what}, found {len(found)}",
          f"pattern: {pattern}")
    return found[0]


def strip_comment(line):
    return re.sub(r"\s+#.*$", "", line).strip()


class Readme:
    """What the test takes from README.md: each command as printed, and each promise."""

    def __init__(self, text):
        top = sh_blocks(text)
        check(top, "README.md has no ```sh block")
        lines = [l for l in top[0].splitlines() if l.strip()]
        check(len(lines) == 2, "README.md's first ```sh block: expected the run and the test "
              "command, one a line", top[0])
        self.run_cmd, self.test_cmd = (strip_comment(l) for l in lines)
        run_comment = lines[0][len(self.run_cmd):]
        self.host, port = one(r"(\d+\.\d+\.\d+\.\d+):(\d+)", run_comment,
                              "host:port in the run command's comment")
        self.port = int(port)
        self.data_dir = one(r"data\s+in\s+(\S+)", run_comment, "'data in DIR' in the run comment")
        self.ci_cmd = one(r"`\.ci/run`\s+runs\s+exactly\s+`([^`]+)`", text,
                          "'`.ci/run` runs exactly `...`'")

        minute = section(text, "Publish and subscribe in a minute")
        blocks = sh_blocks(minute)
        sub = [b for b in blocks if b.startswith("python3 -m websockets ")]
        pub = [b for b in blocks if b.startswith("curl ")]
        v1 = [b for b in blocks if "<<" in b.splitlines()[0]]
        check(len(sub) == len(pub) == len(v1) == 1 and len(blocks) == 3,
              "'Publish and subscribe in a minute': expected three ```sh blocks: the "
              "subscriber, the curl publish with its answer, the wsq.v1 snippet", *blocks)
        self.sub_cmd = sub[0].strip()
        check("\n" not in self.sub_cmd, "the subscriber block is more than one command",
              self.sub_cmd)
        pub_lines = pub[0].strip().split("\n")
        check(len(pub_lines) == 2, "the curl block: expected the command and its answer",
              pub[0])
        self.pub_cmd, self.pub_answer = pub_lines
        self.v1_snippet = v1[0]
        self.url = one(r"'(ws://[^']+)'", self.sub_cmd, "quoted ws:// URL in the subscriber")
        self.topic = one(r"/topics/([^?'\s]+)", self.pub_cmd, "topic in the curl command")
        self.pub_body = one(r"-d '([^']*)'", self.pub_cmd, "-d '...' in the curl command")
        self.sub_prints = one(r"The\s+subscriber\s+prints\s+`([^`]+)`", minute,
                              "'The subscriber prints `...`'")
        self.durable = one(r"add\s+`(&consumer=[^`]+)`\s+to\s+the\s+URL", minute,
                           "'add `&consumer=...` to the URL'")
        self.v1_consumer = one(r'"consumer":\s*"([^"]+)"', self.v1_snippet,
                               "consumer in the wsq.v1 snippet")
        for hp in re.findall(r"[a-z]+://([^/'\"\s]+)", minute):
            check(hp == f"{self.host}:{self.port}", "an example in 'Publish and subscribe in "
                  "a minute' does not use the run command's host:port", hp)


# -- the clone ---------------------------------------------------------------------------------

def make_tree(src, dst):
    """A fresh clone of src's HEAD in dst, or with WSQ_README_SRC a copy of a working tree."""
    wt = os.environ.get("WSQ_README_SRC")
    if wt:
        step(f"copy of the working tree {wt} (WSQ_README_SRC) into {dst}")
        files = subprocess.run(["git", "-C", wt, "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], check=True, capture_output=True).stdout
        for rel in sorted(set(files.decode().split("\0")) - {""}):
            s, d = os.path.join(wt, rel), os.path.join(dst, rel)
            if os.path.lexists(s):   # a tracked file deleted in the working tree is not there
                os.makedirs(os.path.dirname(d), exist_ok=True)
                shutil.copy2(s, d, follow_symlinks=False)
        return
    if not os.path.exists(os.path.join(src, ".git")):   # e.g. a release tarball
        print(f"SKIP: {src} is not a git checkout; the test needs a clone of it", flush=True)
        sys.exit(77)
    head = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    check(head.returncode == 0, f"git rev-parse HEAD in {src} failed", head.stderr)
    step(f"git clone {src} (HEAD {head.stdout.strip()[:12]}) into {dst}")
    r = subprocess.run(["git", "clone", "--quiet", src, dst], capture_output=True, text=True)
    check(r.returncode == 0, f"git clone {src} failed", r.stderr)


# -- processes ---------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]|\r")


class Client:
    """`python3 -m websockets URL` as a user runs it: lines typed on stdin, `< msg` on stdout."""

    def __init__(self, cmd, cwd, env):
        self.cmd = cmd
        self.p = subprocess.Popen(["sh", "-c", cmd], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        self.lines = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            with self.cv:
                self.lines.append(ANSI.sub("", raw).rstrip("\n"))
                self.cv.notify_all()

    def received(self):
        """What the client printed for incoming messages (`< X` lines), X each."""
        with self.cv:
            return [l[2:] for l in self.lines if l.startswith("< ")]

    def wait_received(self, n):
        with self.cv:
            self.cv.wait_for(lambda: len([l for l in self.lines if l.startswith("< ")]) >= n,
                             STEP_WAIT)
        got = self.received()
        check(len(got) >= n, f"`{self.cmd}`: {n} message(s) expected, got {len(got)}",
              *self.lines)
        return got

    def type(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def stop(self):
        """Ctrl-D: end of input closes the connection; the client exits 0."""
        self.p.stdin.close()
        try:
            rc = self.p.wait(STEP_WAIT)
        except subprocess.TimeoutExpired:
            rc = "still running"
        check(rc == 0, f"`{self.cmd}` did not exit 0 at end of input: {rc}", *self.lines)

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


def listener_pids(port):
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    return out, {int(p) for p in re.findall(r"pid=(\d+)", out)}


def healthz(host, port):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as r:
            return r.status
    except OSError:
        return None


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError as e:
        return [str(e)]


# -- the scenario ------------------------------------------------------------------------------

def main(src):
    tmp = tempfile.mkdtemp(prefix="wsq-readme.")
    clone = os.path.join(tmp, "wsq")
    env = dict(os.environ, PATH=DEBIAN_PATH)
    server = None
    clients = []
    log = os.path.join(tmp, "run.log")
    try:
        make_tree(src, clone)
        with open(os.path.join(clone, "README.md")) as f:
            rd = Readme(f.read())

        step(f"README's test command `{rd.test_cmd}` is what .ci/run runs")
        check(rd.ci_cmd == rd.test_cmd, "README.md says `.ci/run` runs exactly "
              f"`{rd.ci_cmd}`, but its test command is `{rd.test_cmd}`")
        with open(os.path.join(clone, ".ci", "run")) as f:
            execs = [l.strip()[len("exec "):] for l in f if l.strip().startswith("exec ")]
        check(execs == [rd.test_cmd], f".ci/run must exec exactly `{rd.test_cmd}`",
              f"its exec lines run: {execs}")

        out, _ = listener_pids(rd.port)
        with socket.socket() as s:
            s.settimeout(2)
            taken = s.connect_ex((rd.host, rd.port)) == 0
        check(not taken, f"something already listens on {rd.host}:{rd.port}, the README's port: "
              "stop it and run the test again (the README's run command cannot work here)", out)

        # `exec`: the process we started becomes the run command, which execs wsqd after the build
        step(f"run command `{rd.run_cmd}` in the clone (build, then wsqd; log: {log})")
        with open(log, "w") as lf:
            server = subprocess.Popen(["sh", "-c", "exec " + rd.run_cmd], cwd=clone, env=env,
                                      stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        t0 = time.monotonic()
        while healthz(rd.host, rd.port) != 200:
            rc = server.poll()
            check(rc is None, f"`{rd.run_cmd}` exited with status {rc} before GET /healthz "
                  "answered 200; the end of its output:", *tail(log))
            check(time.monotonic() - t0 < BUILD_WAIT, f"no 200 from GET /healthz within "
                  f"{BUILD_WAIT} s of `{rd.run_cmd}`; the end of its output:", *tail(log))
            time.sleep(1)
        exe = os.readlink(f"/proc/{server.pid}/exe")
        step(f"GET /healthz: 200 after {time.monotonic() - t0:.0f} s; wsqd pid {server.pid}, "
             f"binary {os.path.relpath(exe, clone)}")
        out, pids = listener_pids(rd.port)
        check(server.pid in pids, f"{rd.host}:{rd.port} is not served by the process the run "
              f"command became (pid {server.pid}, {exe})", out)
        check(os.path.exists(os.path.join(clone, rd.data_dir, "data.mdb")),
              f"the README says 'data in {rd.data_dir}': no {rd.data_dir}/data.mdb in the clone")

        def publish(cmd, seq):
            r = subprocess.run(["sh", "-c", cmd], cwd=clone, env=env, capture_output=True,
                               text=True, timeout=STEP_WAIT)
            check(r.returncode == 0, f"`{cmd}` exited {r.returncode}", r.stdout, r.stderr)
            want = json.dumps({"seq": seq, "topic": rd.topic}, separators=(",", ":"))
            # JSON answers may end with a newline or not
            check(r.stdout in (want, want + "\n"), f"`{cmd}` printed {r.stdout!r}, "
                  f"expected {want!r}")
            return r.stdout.rstrip("\n")

        step(f"subscriber `{rd.sub_cmd}`, then publish `{rd.pub_cmd}`")
        sub = Client(rd.sub_cmd, clone, env)
        clients.append(sub)
        answer = publish(rd.pub_cmd, 1)
        check(answer == rd.pub_answer, f"the README shows the answer {rd.pub_answer!r}, curl "
              f"printed {answer!r}")
        got = sub.wait_received(1)
        check(["< " + g for g in got] == [rd.sub_prints], f"the README says the subscriber "
              f"prints `{rd.sub_prints}`", *sub.lines)

        step("a line typed into the subscriber is published to the topic")
        typed = "typed into the subscriber"
        sub.type(typed)
        check(sub.wait_received(2)[1:] == [typed], "the typed line did not come back",
              *sub.lines)
        sub.stop()
        published = [rd.pub_body, typed]

        durable = Client(rd.sub_cmd.replace(rd.url, rd.url + rd.durable), clone, env)
        step(f"durable consumer `{durable.cmd}`: stop, publish three, start again")
        clients.append(durable)
        check(durable.wait_received(2) == published, "the durable consumer's first run",
              *durable.lines)
        durable.stop()
        for i in range(1, 4):
            body = f"missed {i}"
            cmd, n = re.subn(r"-d '[^']*'", f"-d '{body}'", rd.pub_cmd)
            check(n == 1, "cannot set the body of the curl command", rd.pub_cmd)
            publish(cmd, len(published) + 1)
            published.append(body)
        again = Client(durable.cmd, clone, env)
        clients.append(again)
        missed = again.wait_received(3)
        time.sleep(1)   # nothing more may come: exactly what it missed
        check(again.received() == missed == published[-3:], "the restarted durable consumer "
              "must receive exactly the three messages it missed", *again.lines)
        again.stop()

        def run_v1(first):
            r = subprocess.run(["sh", "-c", rd.v1_snippet], cwd=clone, env=env,
                               capture_output=True, text=True, timeout=60)
            check(r.returncode == 0, f"the wsq.v1 snippet exited {r.returncode}",
                  r.stdout, r.stderr)
            frames = [json.loads(l) for l in r.stdout.splitlines()]
            # the ok follows hi's commit: it may come anywhere, even before `subscribed`
            oks = [f for f in frames if f.get("op") == "ok"]
            rest = [f for f in frames if f.get("op") != "ok"]
            check(rest and rest[0].get("op") == "subscribed"
                  and rest[0].get("consumer") == rd.v1_consumer
                  and rest[0].get("resumed") is not first, "the snippet prints the "
                  "`subscribed` reply before every msg (resumed on the second run)", r.stdout)
            msgs = rest[1:]
            check(all(m.get("op") == "msg" for m in msgs), "only subscribed, msg and ok frames",
                  r.stdout)
            published.append("hi")
            n = len(published)
            # first run: the whole topic from the earliest; a resumed run: only the new `hi`
            want = list(enumerate(published, 1)) if first else [(n, "hi")]
            check([(m["seq"], m["data"]) for m in msgs] == want, "the snippet's msg frames",
                  f"expected (seq, data): {want}", r.stdout)
            check([(o.get("ref"), o.get("seq")) for o in oks] == [(1, n)], "one ok confirming "
                  f"`hi` with ref 1 and seq {n}", r.stdout)

        step(f"wsq.v1 snippet (consumer {rd.v1_consumer}), first run")
        check(rd.v1_consumer != rd.durable.split("=", 1)[1], "the wsq.v1 snippet and the "
              "durable-consumer example must not share a consumer (issue 11 §6: it hangs)")
        run_v1(True)
        step("wsq.v1 snippet again: the consumer resumes")
        run_v1(False)

        step(f"SIGTERM to wsqd (pid {server.pid})")
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(60)
        except subprocess.TimeoutExpired:
            rc = "still running after 60 s"
        check(rc == 0, f"wsqd did not exit 0 on SIGTERM: {rc}", *tail(log))
        server = None
        step("ok")
        return 0
    except Fail as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    except subprocess.TimeoutExpired as e:   # a README command that hangs
        print(f"FAIL: {e}", *(f"    {o}" for o in (e.stdout, e.stderr) if o), sep="\n",
              flush=True)
        return 1
    finally:
        for c in clients:
            c.kill()
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)   # the build's processes or wsqd
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: test_readme.py SOURCE_DIR")
    # ctest's TIMEOUT: clean up (wsqd, the clone) instead of leaving them behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main(sys.argv[1]))
