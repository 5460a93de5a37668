"""Shared machinery of the benchmarks: a `wagate serve` subprocess, wrk, helper processes, a tiny
keep-alive HTTP client for load-generating helpers, statistics and the result block.

Everything heavy (SQLAlchemy, wagate itself) is imported lazily so that helper processes that
import this module start fast and stay small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable
PARTNER_TOKEN = "b" * 50
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- command line ---------------------------------------------------------------------------


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="seconds, small sizes, no targets")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median, spread)")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and server logs")
    parser.add_argument(
        "--server-env",
        action=_ServerEnv,
        metavar="WAGATE_X=VALUE",
        help="a setting for every wagate server the script starts, e.g. "
        "WAGATE_CPU_AFFINITY=off for an A/B run (repeatable; not for make bench)",
    )
    return parser


# Settings from --server-env, applied to every Server after the benchmark's own.
SERVER_ENV: dict[str, str] = {}


class _ServerEnv(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        name, equals, value = str(values).partition("=")
        if not equals or not name.startswith("WAGATE_"):
            parser.error(f"--server-env takes WAGATE_NAME=VALUE, got {values!r}")
        SERVER_ENV[name] = value


# -- processes --------------------------------------------------------------------------------


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        sys.exit("wrk is not installed: run `sudo apt-get install wrk` (or `make bench`)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wagate_executable() -> str:
    found = shutil.which("wagate", path=os.path.dirname(PYTHON))
    if found is None:
        sys.exit(f"no `wagate` console script next to {PYTHON}: pip install -e . first")
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU time of this process's terminated, waited-for children (wrk, helpers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0])
    return found


def http_json(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """One request with the standard library (setup only, never measured)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


@dataclass
class Instance:
    id: int
    token: str

    def path(self, method: str, extra: str = "") -> str:
        return f"/waInstance{self.id}/{method}/{self.token}{extra}"


class Server:
    """`wagate serve --no-demo` on 127.0.0.1, a tmp data dir, rate limits off."""

    def __init__(
        self,
        work_dir: Path,
        name: str = "server",
        database_url: str = "",
        env: Mapping[str, str] | None = None,
        migrate: bool = True,
        command: Sequence[str] = (),
    ) -> None:
        self.data_dir = work_dir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = work_dir / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'wagate.sqlite3'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WAGATE_")}
        self.env.update(
            {
                "WAGATE_PARTNER_TOKEN": PARTNER_TOKEN,
                "WAGATE_RATE_LIMITS": "off",
                "WAGATE_DATABASE_URL": self.database_url,
            }
        )
        self.env.update(env or {})
        self.env.update(SERVER_ENV)
        self.migrate = migrate
        # What runs `wagate`: the console script, or e.g. `diag_server.py` (bench/costs.py).
        self.command = list(command) or [wagate_executable()]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 60) -> Server:
        argv = [*self.command, "serve", "--no-demo", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        if not self.migrate:
            argv.append("--no-migrate")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"wagate serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if http_json("GET", f"{self.url}/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        sys.exit(f"wagate serve was not ready within {timeout_s} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def create_instance(self) -> Instance:
        status, body = http_json("POST", f"{self.url}/partner/createInstance/{PARTNER_TOKEN}", {})
        if status != 200:
            sys.exit(f"createInstance answered {status}: {body}")
        return Instance(int(body["idInstance"]), str(body["apiTokenInstance"]))

    def delete_instance(self, instance: Instance) -> None:
        """Delete an instance; its pending avatar jobs and queue go with it (ON DELETE CASCADE)."""
        url = f"{self.url}/partner/deleteInstanceAccount/{PARTNER_TOKEN}"
        status, body = http_json("POST", url, {"idInstance": instance.id})
        if status != 200:
            sys.exit(f"deleteInstanceAccount answered {status}: {body}")

    def call(self, instance: Instance, method: str, verb: str, body: Any = None) -> Any:
        status, answer = http_json(verb, self.url + instance.path(method), body)
        if status != 200:
            sys.exit(f"{method} answered {status}: {answer}")
        return answer


@contextmanager
def work_dir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wagate-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def start_helper(script: str, *args: str) -> subprocess.Popen[str]:
    """Start `bench/<script>` in its own Python process; its stdout is a pipe of JSON lines."""
    return subprocess.Popen(
        [PYTHON, str(BENCH_DIR / script), *args],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("WAGATE_")},
    )


def run_helper(script: str, *args: str, timeout_s: float = 600) -> dict[str, Any]:
    """Run a helper to completion; it prints one JSON object as its last line."""
    helper = start_helper(script, *args)
    out, _ = helper.communicate(timeout=timeout_s)
    if helper.returncode != 0:
        sys.exit(f"{script} {' '.join(args)} exited {helper.returncode}:\n{out}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    ok_rps: float  # 2xx/3xx answers per second
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float]
    cpu_s: float  # CPU time wrk itself used

    @property
    def ok_fraction(self) -> float:
        return 1 - (self.non_2xx + self.socket_errors) / max(1, self.requests)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unreadable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def post_script(path: Path, body: Mapping[str, Any]) -> Path:
    """A wrk Lua script that POSTs `body` as JSON on every request."""
    text = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{text}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
    )
    return path


def chats_script(path: Path, count: int = 1000, first: int = 11_000_000_000) -> Path:
    """A wrk Lua script that POSTs `{"chatId": ...}` bodies cycling over `count` distinct
    personal chats (none of them in an empty sandbox world), so that no batch of avatar jobs
    asks for one chat twice: the worker's work per job is measured without the savings a
    repeated chat gets (a batch looks a chat up once)."""
    bodies = ",\n".join(
        "  '" + json.dumps({"chatId": f"{first + i}@c.us"}) + "'" for i in range(count)
    )
    path.write_text(
        "wrk.method = 'POST'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        f"local bodies = {{\n{bodies}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n"
    )
    return path


@dataclass
class WrkSettings:
    threads: int = 1
    connections: int = 32
    duration_s: float = 5

    def argv(self) -> list[str]:
        return [f"-t{self.threads}", f"-c{self.connections}", f"-d{self.duration_s:g}s"]


def start_wrk(url: str, settings: WrkSettings, script: Path | None) -> subprocess.Popen[str]:
    argv = [require_wrk(), *settings.argv(), "--latency", "--timeout", "10s"]
    if script is not None:
        argv += ["-s", str(script)]
    return subprocess.Popen(
        [*argv, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish_wrk(process: subprocess.Popen[str], cpu_before: float) -> WrkResult:
    out, _ = process.communicate(timeout=600)
    if process.returncode != 0:
        sys.exit(f"wrk failed ({process.returncode}):\n{out}")
    return parse_wrk(out, children_cpu_seconds() - cpu_before)


def run_wrk(url: str, settings: WrkSettings, script: Path | None = None) -> WrkResult:
    before = children_cpu_seconds()
    return finish_wrk(start_wrk(url, settings, script), before)


def parse_wrk(out: str, cpu_s: float = 0.0) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if done is None:
        sys.exit(f"cannot read wrk's output:\n{out}")
    requests = int(done.group(1))
    seconds = _ms(done.group(2) + done.group(3)) / 1000
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = {
        pct: _ms(value)
        for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE)
    }
    bad = int(non_2xx.group(1)) if non_2xx else 0
    socket_errors = sum(int(g) for g in errors.groups()) if errors else 0
    return WrkResult(
        requests=requests,
        seconds=seconds,
        rps=requests / seconds,
        ok_rps=(requests - bad) / seconds,
        non_2xx=bad,
        socket_errors=socket_errors,
        latency_ms=latency,
        cpu_s=cpu_s,
    )


# -- a minimal keep-alive HTTP/1.1 client for helper processes ----------------------------------


class HttpConnection:
    """One keep-alive connection; requests on it are sequential. Small and fast on purpose:
    a full client library would make the load generator, not the server, the bottleneck."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> HttpConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = head.encode() + b"\r\n" + (body or b"")
        fresh = self._writer is None
        if fresh:
            await self.connect()
        try:
            return await self._exchange(data)
        except (ConnectionError, asyncio.IncompleteReadError):
            if fresh:
                raise
        # The server closed an idle keep-alive connection (uvicorn does after 5 s) before it
        # read this request: nothing was processed, so sending it again on a new one is safe.
        self.close()
        await self.connect()
        return await self._exchange(data)

    async def _exchange(self, data: bytes) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(data)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        data = await self._read_chunked() if chunked else await self._reader.readexactly(length)
        if close:
            self.close()
        return status, data

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts = []
        while size := int((await self._reader.readline()).split(b";")[0], 16):
            parts.append(await self._reader.readexactly(size))
            await self._reader.readline()
        await self._reader.readline()
        return b"".join(parts)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


# -- statistics and the result block -----------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was observed)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Figure:
    """One reported figure: the median of its runs, and against what it is judged."""

    key: str
    label: str
    unit: str
    runs: list[float]
    baseline_label: str = ""
    baseline_runs: list[float] = field(default_factory=list)
    # "ratio" compares value/baseline per run; "value" compares the value itself.
    target_on: str = ""
    target_op: str = ""  # ">=" or "<="
    target: float | None = None
    ratios: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.baseline_runs and not self.ratios:
            self.ratios = [v / b for v, b in zip(self.runs, self.baseline_runs, strict=True) if b]

    @property
    def value(self) -> float:
        return statistics.median(self.runs)

    @property
    def baseline(self) -> float | None:
        return statistics.median(self.baseline_runs) if self.baseline_runs else None

    @property
    def ratio(self) -> float | None:
        # The median of per-run ratios: each ratio pairs a run with its own baseline run.
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def spread(self) -> float:
        """(max - min) / median of the runs, as a fraction."""
        med = self.value
        return (max(self.runs) - min(self.runs)) / med if med else 0.0

    def passed(self, smoke: bool) -> bool | None:
        if smoke or self.target is None:
            return None
        judged = self.ratio if self.target_on == "ratio" else self.value
        if judged is None:
            return None
        return judged >= self.target if self.target_op == ">=" else judged <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return "(context)"
        what = "ratio" if self.target_on == "ratio" else self.unit
        return f"{what} {self.target_op} {self.target:g}"


@dataclass
class Report:
    benchmark: str
    title: str
    smoke: bool
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.notes.append(text)

    def print(self) -> None:
        line = "=" * 78
        mode = " [SMOKE: small sizes, targets not judged]" if self.smoke else ""
        print(f"\n{line}\n{self.benchmark}: {self.title}{mode}\n{line}")
        for fig in self.figures:
            spread = f"±{fig.spread * 50:.0f}%" if len(fig.runs) > 1 else "1 run"
            print(f"{fig.label}: {fmt(fig.value)} {fig.unit} (median of {len(fig.runs)}, {spread})")
            print(f"    runs: {', '.join(fmt(v) for v in fig.runs)}")
            if fig.baseline is not None:
                print(f"    baseline: {fig.baseline_label} = {fmt(fig.baseline)}")
                print(f"    ratio: {'-' if fig.ratio is None else f'{fig.ratio:.3f}'}")
            verdict = {True: "PASS", False: "FAIL", None: "-"}[fig.passed(self.smoke)]
            print(f"    target: {fig.target_text()}  ->  {verdict}")
        for note in self.notes:
            print(f"  * {note}")
        print(line, flush=True)

    def to_json(self) -> dict[str, Any]:
        figures = []
        for fig in self.figures:
            data = asdict(fig)
            data.update(
                value=fig.value,
                baseline=fig.baseline,
                ratio=fig.ratio,
                spread=fig.spread,
                target_text=fig.target_text(),
                passed=fig.passed(self.smoke),
            )
            figures.append(data)
        return {
            "benchmark": self.benchmark,
            "title": self.title,
            "smoke": self.smoke,
            "started": self.started,
            "seconds": time.time() - self.started,
            "figures": figures,
            "notes": self.notes,
        }

    def finish(self, json_path: Path | None) -> None:
        self.print()
        if json_path is not None:
            json_path.write_text(json.dumps(self.to_json(), indent=2))


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cpu_share(cpu_s: float, seconds: float) -> str:
    """CPU time as a percentage of one core over `seconds`."""
    return f"{100 * cpu_s / seconds:.0f}%" if seconds > 0 else "-"


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


# -- the store of a SQLite server, read directly (setup and drain checks only) -----------------


def sqlite_scalar(server: Server, query: str) -> int:
    """One integer from the server's SQLite database, read-only and outside the server."""
    import sqlite3

    path = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute(query).fetchone()[0])


def drain_avatar_jobs(
    server: Server, timeout_s: float = 300, interval_s: float = 0.2
) -> tuple[int, float]:
    """Wait until the server's avatar worker has no job left; (jobs seen, seconds waited, to
    within `interval_s`)."""
    started = time.monotonic()
    pending = sqlite_scalar(server, "SELECT count(*) FROM avatar_jobs")
    if not wait_until(
        lambda: sqlite_scalar(server, "SELECT count(*) FROM avatar_jobs") == 0,
        timeout_s,
        interval_s,
    ):
        print(f"  warning: avatar jobs still pending after {timeout_s} s", flush=True)
    return pending, time.monotonic() - started


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many of the machine's cores were busy on average between two `machine_ticks()`."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * (os.cpu_count() or 1) if total else 0.0


class Receiver:
    """`bench/receiver.py` in its own process on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_helper("receiver.py", str(self.port))
        if not wait_until(self._up, 30, 0.05):
            self.stop()
            sys.exit("the benchmark receiver did not start")

    def _up(self) -> bool:
        try:
            return http_json("GET", f"{self.url}/_count", timeout=1)[0] == 200
        except OSError:
            return False

    def count(self) -> dict[str, Any]:
        return dict(http_json("GET", f"{self.url}/_count")[1])

    def dump(self) -> dict[str, float]:
        return dict(http_json("GET", f"{self.url}/_dump")[1])

    def reset(self) -> None:
        http_json("POST", f"{self.url}/_reset", {})

    def wait_for(self, count: int, timeout_s: float) -> bool:
        return wait_until(lambda: self.count()["count"] >= count, timeout_s, 0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
