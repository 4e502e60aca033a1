#!/usr/bin/env python3
"""Cold-start benchmark of the bridge's Lambda functions (issue #8).

Each subject is started as a fresh process against a Lambda Runtime API emulated here, and
timed from just before it is spawned until

- it first asks for an event (GET /2018-06-01/runtime/invocation/next): the *init* time, when
  its peak RSS (VmHWM) is also read, while it waits for the answer;
- it posts the answer to the event the emulator gave it (POST …/invocation/<id>/response):
  *init + first invocation*.

The subjects run round robin, so machine noise hits all alike. Python 3.11 standard library
only; `bench/cold-start/run` builds the binaries and installs the Node handler first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EVENTS = HERE / "events"
NODE_HANDLER = HERE / "node-handler"
PREFIX = "/2018-06-01/runtime"
MIB = 1024 * 1024

# The targets of issue #8, checked for the three functions.
MAX_INIT_VS_HELLO = 2.0
MIN_NODE_VS_INIT = 20.0
MAX_RSS_MIB = 12.0
MAX_SIZE_MIB = 10.0

FUNCTIONS = ("kommo-webhook", "chat-callback", "typing-expiry")
HELLO = "hello-lambda"
NODE = "node20-sdk-v3"
FLOOR = "floor-bash"

# The floor: bash speaking the Runtime API over /dev/tcp. It does nothing else, so its figures
# bound what the harness itself adds (spawn, loopback, the emulator) to every subject. Each
# request is one write (two would meet Nagle and delayed ACKs: 40 ms), and the trailing `exit`
# keeps bash from exec'ing `sleep` in its place, which would reset the peak RSS read at the answer.
FLOOR_SCRIPT = r"""
api=$AWS_LAMBDA_RUNTIME_API
exec 3<>"/dev/tcp/${api%:*}/${api#*:}"
request=$'GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: '"$api"$'\r\n\r\n'
printf '%s' "$request" >&3
while IFS= read -r line <&3; do
  line=${line%$'\r'}
  [ -z "$line" ] && break
  case ${line,,} in
    lambda-runtime-aws-request-id:*) id=${line#*: } ;;
    content-length:*) length=${line#*: } ;;
  esac
done
read -r -N "$length" event <&3
request="POST /2018-06-01/runtime/invocation/$id/response HTTP/1.1"$'\r\nHost: '"$api"$'\r\nContent-Length: 2\r\n\r\n{}'
printf '%s' "$request" >&3
read -r line <&3
sleep 60
exit 0
"""


class BenchError(Exception):
    """A subject that did not start or answer as expected: no figure is reported for it."""


@dataclass(frozen=True)
class Subject:
    name: str
    argv: tuple[str, ...]
    event: str  # a file in events/
    expect: Callable[[Any], bool]  # is the posted response the one the event must produce?
    expectation: str  # the same, for the error message
    size_bytes: int | None
    size_note: str
    cwd: Path


@dataclass
class Sample:
    init_ns: int
    first_ns: int
    hwm_init_kib: int
    rss_init_kib: int
    hwm_first_kib: int


@dataclass
class Emulator:
    """The Runtime API for one process of one subject: hands out one event, records when the
    process asks for it and answers it, and then holds the process's next /next unanswered,
    as Lambda does while an environment is idle."""

    event: bytes
    function_name: str
    pid: int | None = None
    next_at: int | None = None
    answered_at: int | None = None
    outcome: str | None = None  # "response", "error", "init_error" or "unexpected …"
    posted: bytes = b""
    status_at_next: dict[str, int] = field(default_factory=dict)
    status_at_answer: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    connections: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = writer
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                # The clock is read as soon as a request's head is in, before any parsing.
                arrived = time.perf_counter_ns()
                method, target, headers = parse_head(head)
                body = await read_body(reader, headers)
                reply = self.dispatch(method, target, body, arrived)
                if reply is None:
                    await self.stop.wait()
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the process was killed, or closed its connection
        finally:
            writer.close()

    async def close(self) -> None:
        """Ends every connection's handler (left running, Python 3.11 logs their cancellation
        as an error when the event loop closes)."""
        self.stop.set()
        for writer in self.connections.values():
            writer.close()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=5)

    def dispatch(self, method: str, target: str, body: bytes, arrived: int) -> bytes | None:
        if method == "GET" and target == f"{PREFIX}/invocation/next":
            return self.on_next(arrived)
        if method == "POST" and target.startswith(f"{PREFIX}/invocation/"):
            kind = target.rsplit("/", 1)[-1]
            if kind in ("response", "error"):
                return self.finish(kind, body, arrived)
        if method == "POST" and target == f"{PREFIX}/init/error":
            return self.finish("init_error", body, arrived)
        if self.outcome is None:
            self.outcome = f"unexpected request {method} {target}"
        self.done.set()
        return http_response(404, b'{"errorMessage":"not part of the Runtime API"}')

    def on_next(self, arrived: int) -> bytes | None:
        if self.next_at is not None:
            return None  # the second /next: the process is idle again, hold it
        self.next_at = arrived
        self.status_at_next = proc_status(self.pid)
        request_id = str(uuid.uuid4())
        deadline_ms = int(time.time() * 1000) + 30_000
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:eu-west-1:123456789012:function:{self.function_name}",
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Sampled=0",
            "Content-Type": "application/json",
        }
        return http_response(200, self.event, headers)

    def finish(self, outcome: str, body: bytes, arrived: int) -> bytes:
        self.answered_at = arrived
        self.status_at_answer = proc_status(self.pid)
        self.outcome = outcome
        self.posted = body
        self.done.set()
        return http_response(202, b'{"status":"OK"}')


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers are sent by these clients
        return b"".join(chunks)
    return await reader.readexactly(int(headers.get("content-length", "0")))


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 202: "Accepted", 404: "Not Found"}[status]
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def proc_status(pid: int | None) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS, in KiB, of a live process (empty if it is gone)."""
    figures = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS"):
                    figures[name] = int(value.split()[0])
    except OSError:
        pass
    return figures


def load_event(name: str) -> bytes:
    # chat-callback's event carries a fresh timestamp, so its signature check gets as far as the
    # HMAC (and fails there, 401) instead of stopping at a stale timestamp.
    text = (EVENTS / name).read_text(encoding="utf-8")
    return text.replace("${NOW_S}", str(int(time.time()))).encode()


async def measure_once(subject: Subject, env: dict[str, str], timeout_s: float) -> Sample:
    """Starts one fresh process of `subject`, serves it one event, and kills it."""
    loop = asyncio.get_running_loop()
    emulator = Emulator(load_event(subject.event), subject.name)
    server = await asyncio.start_server(emulator.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {
        **env,
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": subject.name,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{subject.name}",
    }
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter_ns()
        # Popen, not asyncio's subprocess API: the spawn is then the same plain fork/exec for
        # every subject, and no request can be read before `pid` is set below.
        process = subprocess.Popen(  # noqa: ASYNC220
            subject.argv, env=env, cwd=subject.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        emulator.pid = process.pid
        exited = asyncio.Event()
        pidfd = os.pidfd_open(process.pid)
        loop.add_reader(pidfd, exited.set)
        try:
            await first_of(emulator.done, exited, timeout_s)
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            process.kill()
            process.wait()
            server.close()
            await emulator.close()
            await server.wait_closed()
        check_outcome(subject, emulator, process.returncode, exited.is_set(), out, err)
    assert emulator.next_at is not None and emulator.answered_at is not None
    if "VmHWM" not in emulator.status_at_next or "VmHWM" not in emulator.status_at_answer:
        raise BenchError(f"{subject.name}: /proc/{process.pid}/status could not be read while it waited")
    return Sample(
        init_ns=emulator.next_at - started,
        first_ns=emulator.answered_at - started,
        hwm_init_kib=emulator.status_at_next["VmHWM"],
        rss_init_kib=emulator.status_at_next["VmRSS"],
        hwm_first_kib=emulator.status_at_answer["VmHWM"],
    )


async def first_of(done: asyncio.Event, exited: asyncio.Event, timeout_s: float) -> None:
    waits = {asyncio.create_task(done.wait()), asyncio.create_task(exited.wait())}
    _, pending = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


def check_outcome(
    subject: Subject, emulator: Emulator, returncode: int | None, exited: bool, out: Any, err: Any
) -> None:
    """Refuses any run that did not start, ask for its event and answer it as expected."""
    if emulator.outcome == "response":
        try:
            answer = json.loads(emulator.posted)
        except ValueError:
            answer = None
        if subject.expect(answer):
            return
        problem = f"answered {emulator.posted[:400]!r}, expected {subject.expectation}"
    elif emulator.outcome is not None:
        problem = f"{emulator.outcome}: {emulator.posted[:400]!r}"
    elif exited:
        problem = f"exited with code {returncode} before answering its first event"
    else:
        stage = "asking for an event" if emulator.next_at is None else "answering its first event"
        problem = f"timed out before {stage}"
    raise BenchError(f"{subject.name}: {problem}\n--- stderr ---\n{tail(err)}\n--- stdout ---\n{tail(out)}")


def tail(file: Any, limit: int = 4000) -> str:
    file.seek(0)
    return file.read().decode("utf-8", "replace")[-limit:] or "(empty)"


def lambda_env() -> dict[str, str]:
    """A clean environment like Lambda's (nothing inherited but PATH), plus the bridge's strict
    configuration given as values: no SSM call, and peers on a closed loopback port that the
    bad-signature events never reach."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIDBENCHMARK0000000",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-access-key-not-real",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/27/[$LATEST]cold-start-bench",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "KOMMO_CHANNEL_ID": "bench-channel",
        "KOMMO_CHANNEL_SECRET": secrets.token_hex(20),
        "KOMMO_INTEGRATION_SECRET": secrets.token_hex(32),
        "KOMMO_AMOJO_URL": "http://127.0.0.1:9",
        "KOMMO_ACCOUNTS": "31000001:bench-account",
        "CHAT_SERVICE_URL": "http://127.0.0.1:9/chat",
        "CHAT_SERVICE_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "TABLE_NAME": "kommo-bridge-bench",
        "TIMER_QUEUE_URL": "http://127.0.0.1:9/queue/timers",
        "_HANDLER": "index.handler",
        # As infra/template.yaml sets it: both TLS clients read the one bundle, not also every
        # file of the certificates folder (Debian's bundle here, AL2023's in Lambda).
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    }


def http_status(status: int) -> Callable[[Any], bool]:
    return lambda answer: isinstance(answer, dict) and answer.get("statusCode") == status


def no_failures(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("batchItemFailures") == []


def subjects(target_dir: Path, node: str, only: list[str] | None) -> list[Subject]:
    """The subjects to measure (all, or those named by --only), each checked to be there."""

    def wanted(name: str) -> bool:
        return not only or name in only

    release = target_dir / "release"
    rust = {
        "kommo-webhook": ("kommo-webhook.json", http_status(401), "statusCode 401 (bad X-Signature)"),
        "chat-callback": ("chat-callback.json", http_status(401), "statusCode 401 (bad webhook-signature)"),
        "typing-expiry": ("typing-expiry.json", no_failures, "batchItemFailures []"),
        HELLO: ("hello-world.json", http_status(200), "statusCode 200"),
    }
    found = []
    for name, (event, expect, expectation) in rust.items():
        if not wanted(name):
            continue
        binary = release / name
        if not binary.is_file():
            raise BenchError(f"{binary} is missing: build it with cargo build --release -p {name}")
        note = "stripped" if not has_symtab(binary) else "NOT stripped"
        found.append(Subject(name, (str(binary),), event, expect, expectation, binary.stat().st_size, note, ROOT))
    if wanted(NODE):
        if not (NODE_HANDLER / "node_modules" / "@aws-sdk" / "client-dynamodb").is_dir():
            raise BenchError(f"{NODE_HANDLER}/node_modules is missing: run npm ci there (bench/cold-start/run does)")
        found.append(
            Subject(
                NODE,
                (node, "bootstrap.mjs"),
                "hello-world.json",
                http_status(200),
                "statusCode 200",
                tree_size(NODE_HANDLER),
                "handler + node_modules; node itself not counted",
                NODE_HANDLER,
            )
        )
    bash = shutil.which("bash") or "/bin/bash"
    if wanted(FLOOR):
        found.append(
            Subject(
                FLOOR,
                (bash, "-c", FLOOR_SCRIPT),
                "hello-world.json",
                lambda answer: answer == {},
                "{}",
                None,
                "harness floor: spawn + loopback + emulator + bash",
                ROOT,
            )
        )
    return found


def has_symtab(path: Path) -> bool:
    """Whether an ELF64 little-endian file still has a .symtab section (i.e. is not stripped)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize = int.from_bytes(data[0x3A:0x3C], "little")
    shnum = int.from_bytes(data[0x3C:0x3E], "little")
    sht_symtab = 2
    return any(
        int.from_bytes(data[shoff + i * shentsize + 4 : shoff + i * shentsize + 8], "little") == sht_symtab
        for i in range(shnum)
    )


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


async def run_all(chosen: list[Subject], runs: int, warmup: int, timeout_s: float) -> dict[str, list[Sample]]:
    """Round robin: every round starts each subject once, in an order rotated every round, so
    drifting machine load and position in the round hit every subject alike. The warm-up rounds
    (page cache, first-run effects) are measured the same way and discarded."""
    env = lambda_env()
    samples: dict[str, list[Sample]] = {s.name: [] for s in chosen}
    for round_no in range(warmup + runs):
        offset = round_no % len(chosen)
        for subject in chosen[offset:] + chosen[:offset]:
            sample = await measure_once(subject, env, timeout_s)
            if round_no >= warmup:
                samples[subject.name].append(sample)
        label = "warm-up" if round_no < warmup else f"run {round_no - warmup + 1}/{runs}"
        print(f"  {label} done", file=sys.stderr, flush=True)
    return samples


def ms(ns: float) -> float:
    return ns / 1e6


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def summarise(subject: Subject, samples: list[Sample]) -> dict[str, Any]:
    init = [ms(s.init_ns) for s in samples]
    first = [ms(s.first_ns) for s in samples]
    hwm = [s.hwm_init_kib / 1024 for s in samples]
    hwm_first = [s.hwm_first_kib / 1024 for s in samples]
    return {
        "subject": subject.name,
        "size_bytes": subject.size_bytes,
        "size_mib": None if subject.size_bytes is None else round(subject.size_bytes / MIB, 2),
        "size_note": subject.size_note,
        "init_ms": {"median": statistics.median(init), "p90": p90(init), "min": min(init), "max": max(init)},
        "peak_rss_at_init_mib": {"median": statistics.median(hwm), "max": max(hwm)},
        "init_plus_first_invocation_ms": {"median": statistics.median(first), "p90": p90(first)},
        "peak_rss_after_first_invocation_mib": {"median": statistics.median(hwm_first), "max": max(hwm_first)},
        "samples": [vars(s) for s in samples],
    }


def checks(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of issue #8, for each of the three functions present."""
    hello = rows.get(HELLO, {}).get("init_ms", {}).get("median")
    node = rows.get(NODE, {}).get("init_ms", {}).get("median")
    found = []
    for name in FUNCTIONS:
        if name not in rows:
            continue
        row = rows[name]
        init = row["init_ms"]["median"]
        rss = row["peak_rss_at_init_mib"]["median"]
        found.append(
            {
                "subject": name,
                "init_vs_hello": None if hello is None else init / hello,
                "init_vs_hello_ok": None if hello is None else init <= MAX_INIT_VS_HELLO * hello,
                "node_vs_init": None if node is None else node / init,
                "node_vs_init_ok": None if node is None else init <= node / MIN_NODE_VS_INIT,
                "peak_rss_mib": rss,
                "peak_rss_ok": rss <= MAX_RSS_MIB,
                "size_mib": row["size_mib"],
                "size_ok": row["size_mib"] <= MAX_SIZE_MIB,
            }
        )
    return found


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "kernel": platform.release(),
        "arch": platform.machine(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "rustc": command_output(["rustc", "--version"]),
        "node": command_output([node_binary(), "--version"]),
        "python": platform.python_version(),
    }


def command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def node_binary() -> str:
    return os.environ.get("NODE") or shutil.which("node") or "/usr/bin/node"


def release_profile() -> dict[str, Any]:
    with open(ROOT / "Cargo.toml", "rb") as manifest:
        profile: dict[str, Any] = tomllib.load(manifest).get("profile", {}).get("release", {})
    return profile


def mark(ok: bool | None) -> str:
    return {True: "ok", False: "MISSED", None: "n/a"}[ok]


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    profile = ", ".join(f"{k} = {json.dumps(v)}" for k, v in report["release_profile"].items())
    lines = [
        (
            f"machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']} {m['arch']}, "
            f"load {' '.join(m['loadavg_at_start'])} at start"
        ),
        f"tools: {m['rustc']}, node {m['node']}, python {m['python']}",
        f"release profile: {profile}",
        f"runs: {report['runs']} per subject, round robin, after {report['warmup']} discarded warm-up round(s)",
        "",
        (
            f"{'subject':<15} {'size MiB':>8} {'init med ms':>11} {'init p90 ms':>11} {'init min ms':>11} "
            f"{'peak RSS MiB':>12} "
            f"{'init+1st med ms':>15} {'RSS after 1st':>13}"
        ),
    ]
    for row in report["subjects"]:
        size = "-" if row["size_mib"] is None else f"{row['size_mib']:.2f}"
        lines.append(
            f"{row['subject']:<15} {size:>8} {row['init_ms']['median']:>11.2f} {row['init_ms']['p90']:>11.2f} "
            f"{row['init_ms']['min']:>11.2f} "
            f"{row['peak_rss_at_init_mib']['median']:>12.2f} {row['init_plus_first_invocation_ms']['median']:>15.2f} "
            f"{row['peak_rss_after_first_invocation_mib']['median']:>13.2f}"
        )
    lines += ["", "sizes: " + "; ".join(f"{r['subject']}: {r['size_note']}" for r in report["subjects"]), ""]
    if report["checks"]:
        lines.append(
            f"{'targets':<15} {'init/hello <=2':>16} {'node/init >=20':>16} {'RSS <=12 MiB':>14} {'size <=10 MiB':>14}"
        )
    for c in report["checks"]:
        ratio = "-" if c["init_vs_hello"] is None else f"{c['init_vs_hello']:.2f}"
        node = "-" if c["node_vs_init"] is None else f"{c['node_vs_init']:.1f}"
        lines.append(
            f"{c['subject']:<15} {ratio + ' ' + mark(c['init_vs_hello_ok']):>16} "
            f"{node + ' ' + mark(c['node_vs_init_ok']):>16} "
            f"{format(c['peak_rss_mib'], '.2f') + ' ' + mark(c['peak_rss_ok']):>14} "
            f"{format(c['size_mib'], '.2f') + ' ' + mark(c['size_ok']):>14}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="measured runs per subject (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded warm-up rounds (default 1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one run may take (default 30)")
    parser.add_argument("--only", action="append", help="measure only this subject (repeatable)")
    parser.add_argument("--json", type=Path, help="where to write the JSON (default target/bench/cold-start.json)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a function misses a target")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    try:
        chosen = subjects(target_dir, node_binary(), args.only)
        if not chosen:
            raise BenchError(f"no subject matches {args.only}")
        facts = machine()
        samples = asyncio.run(run_all(chosen, args.runs, args.warmup, args.timeout))
    except BenchError as error:
        print(f"cold-start benchmark FAILED: {error}", file=sys.stderr)
        return 2
    rows = {s.name: summarise(s, samples[s.name]) for s in chosen}
    report = {
        "machine": facts,
        "release_profile": release_profile(),
        "runs": args.runs,
        "warmup": args.warmup,
        "subjects": list(rows.values()),
        "checks": checks(rows),
    }
    output = args.json or target_dir / "bench" / "cold-start.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(render(report))
    print(f"\nJSON: {output}")
    missed = any(c[k] is False for c in report["checks"] for k in c if k.endswith("_ok"))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
