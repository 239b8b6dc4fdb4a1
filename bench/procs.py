"""Starting and stopping the processes a benchmark needs, all on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
PEERS_VENV = BENCH / ".venv-peers"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident set of ``pid`` and its children (LiteLLM forks a worker)."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in children(k)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd or ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_http(self, url: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}); see {self.log_path}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout:g} s; see {self.log_path}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


class Stack:
    """Everything one benchmark run starts; stops it all, in reverse order, on exit."""

    def __init__(self, logdir: Path | None = None) -> None:
        self.logdir = logdir or Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
        self.procs: list[Proc] = []

    def __enter__(self) -> Stack:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def stop(self, proc: Proc) -> None:
        proc.stop()
        self.procs.remove(proc)

    def emulator(self, name: str = "emulator", *, latency_ms: int = 0, stream_gap_ms: int = 0,
                 small_images: bool = False) -> tuple[Proc, str]:
        port = free_port()
        argv = [PYTHON, "-m", "bench.emulator", "--port", str(port), "--latency-ms", str(latency_ms),
                "--stream-gap-ms", str(stream_gap_ms)]
        if small_images:
            argv.append("--small-images")
        proc = self._start(name, argv)
        url = f"http://{HOST}:{port}"
        proc.wait_http(url + "/_emulator/ping")
        return proc, url

    def gateway(self, emulator_url: str, name: str = "gateway",
                extra_env: dict[str, str] | None = None, credits: str | None = None) -> tuple[Proc, str, str]:
        """``imagegate serve`` against the emulator, with a fresh SQLite file; returns (proc, url, key).

        ``credits`` (USD) tops the account up first, so that it is metered: every generation
        then reserves its worst case before the upstream call."""
        port = free_port()
        workdir = self.logdir / name
        workdir.mkdir(exist_ok=True)
        env = {
            "OPENAI_API_KEY": "test-key",  # the one key the emulator accepts
            "OPENAI_BASE_URL": emulator_url + "/v1",
            "IMAGEGATE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'imagegate.db'}",
            "IMAGEGATE_BOOTSTRAP_KEY": "false",
            "IMAGEGATE_LOG_LEVEL": "warning",
            "IMAGEGATE_CONFIG": str(workdir / "none.yaml"),
            # Another source tree of imagegate (before/after comparisons): BENCH_GATEWAY_SRC=/path/to/src
            **({"PYTHONPATH": os.environ["BENCH_GATEWAY_SRC"]} if os.environ.get("BENCH_GATEWAY_SRC") else {}),
            **(extra_env or {}),
        }
        for var in list(os.environ):  # no other upstream gets configured by accident
            if var.endswith(("_API_KEY", "_BASE_URL")) and var not in env:
                env[var] = ""
        key = subprocess.run(
            [PYTHON, "-m", "imagegate", "keys", "create", "--name", "bench"],
            env={**os.environ, **env}, cwd=workdir, capture_output=True, text=True, check=True,
        ).stdout.strip()
        if credits is not None:
            subprocess.run([PYTHON, "-m", "imagegate", "credits", "add", credits],
                           env={**os.environ, **env}, cwd=workdir, capture_output=True, text=True, check=True)
        proc = self._start(name, [PYTHON, "-m", "bench.gateway_probe", "serve", "--port", str(port)],
                           env=env, cwd=workdir)
        url = f"http://{HOST}:{port}"
        proc.wait_http(url + "/healthz")
        return proc, url, key

    def passthrough(self, upstream: str) -> tuple[Proc, str]:
        port = free_port()
        proc = self._start("passthrough", [PYTHON, "-m", "bench.passthrough", "--port", str(port),
                                           "--upstream", upstream])
        url = f"http://{HOST}:{port}"
        proc.wait_http(url + "/_ping")
        return proc, url

    def litellm(self, emulator_url: str, model: str) -> tuple[Proc, str, str] | None:
        """LiteLLM's proxy (its own venv), one OpenAI-compatible model entry on the emulator."""
        binary = PEERS_VENV / "bin" / "litellm"
        if not binary.exists():
            return None
        port = free_port()
        workdir = self.logdir / "litellm"
        workdir.mkdir(exist_ok=True)
        config = workdir / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {model}\n"
            "    litellm_params:\n"
            f"      model: openai/{model}\n"
            f"      api_base: {emulator_url}/v1\n"
            "      api_key: test-key\n"
            "litellm_settings:\n"
            "  drop_params: true\n"
            "  telemetry: false\n"
        )
        master_key = "sk-bench-" + secrets.token_hex(24)  # LiteLLM authenticates requests, as the gateway does
        env = {"LITELLM_MASTER_KEY": master_key, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_ADMIN_UI": "True",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_DOCS": "True"}
        proc = self._start("litellm", [str(binary), "--config", str(config), "--host", HOST,
                                       "--port", str(port), "--num_workers", "1"], env=env, cwd=workdir)
        url = f"http://{HOST}:{port}"
        proc.wait_http(url + "/health/liveliness", timeout=180)
        return proc, url, master_key

    def _start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> Proc:
        proc = Proc(name, argv, env=env, cwd=cwd, logdir=self.logdir)
        self.procs.append(proc)
        return proc
