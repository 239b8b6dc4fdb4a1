"""The ``imagegate`` command as a user runs it: real processes, real database files."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import imagegate
from tests.variables import variables_read
from tests.waiting import eventually

KEY = re.compile(r"^sk-ig-v1-[0-9a-f]{64}$")
#: The commands run the imagegate these tests import, not one that a relative PYTHONPATH or an
#: editable install of another checkout would find from their working directory.
ENVIRON = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [str(Path(imagegate.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
)}


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagegate", *args], cwd=tmp_path, env={**_env(tmp_path), **(env or {})},
        capture_output=True, text=True, timeout=60,
    )


def _env(tmp_path: Path) -> dict[str, str]:
    return {**ENVIRON, "IMAGEGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
            "IMAGEGATE_CONFIG": str(tmp_path / "none.yaml")}


def test_keys_create_prints_the_key_alone_on_stdout(tmp_path: Path) -> None:
    created = run(tmp_path, "keys", "create", "--name", "ci")
    assert created.returncode == 0, created.stderr
    assert KEY.match(created.stdout.strip())
    assert created.stdout.count("\n") == 1


def test_keys_list_shows_labels_never_secrets_and_revoke_works(tmp_path: Path) -> None:
    secret = run(tmp_path, "keys", "create", "--name", "alice").stdout.strip()
    listing = run(tmp_path, "keys", "list")
    assert listing.returncode == 0
    assert "alice" in listing.stdout and secret not in listing.stdout
    assert secret[-3:] in listing.stdout  # the label shows the key's last characters
    label = f"sk-ig-v1-{secret[9:12]}...{secret[-3:]}"
    revoked = run(tmp_path, "keys", "revoke", label)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run(tmp_path, "keys", "list").stdout
    assert run(tmp_path, "keys", "revoke", "sk-ig-v1-nope...nop").returncode == 1


def test_models_lists_the_sandbox_models(tmp_path: Path) -> None:
    listing = run(tmp_path, "models")
    assert listing.returncode == 0
    for model in ("imagegate/sandbox", "imagegate/sandbox-tokens", "imagegate/sandbox-tiers"):
        assert model in listing.stdout


def test_models_all_says_which_endpoints_are_retired_and_since_when(tmp_path: Path) -> None:
    before = _rows(run(tmp_path, "models", "--all", "--on", "2026-11-15").stdout)
    after = _rows(run(tmp_path, "models", "--all", "--on", "2028-12-07").stdout)
    assert before["openai/gpt-image-1.5"].endswith("off: set OPENAI_API_KEY")
    assert after["openai/gpt-image-1.5"].endswith("retired since 2026-12-01")
    assert after["openai/gpt-image-2"].endswith("off: set OPENAI_API_KEY")
    assert after["imagegate/sandbox"].endswith("serving")


def test_models_lists_a_configured_model_until_its_sunset(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-test"}
    before = _rows(run(tmp_path, "models", "--on", "2026-11-30", env=env).stdout)
    after = _rows(run(tmp_path, "models", "--on", "2026-12-01", env=env).stdout)
    assert before["openai/gpt-image-1.5"].endswith("serving; retires 2026-12-01")
    assert "openai/gpt-image-1.5" not in after and after["openai/gpt-image-2"].endswith("serving")


def _rows(table: str) -> dict[str, str]:
    """The first row of each model in ``imagegate models`` output: model id → the row's text."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and "/" in cells[0]:
            rows[cells[0]] = " ".join(c for c in cells if c)
    return rows


def test_first_serve_creates_prints_and_accepts_a_key(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "imagegate", "serve", "--port", str(port)], cwd=tmp_path, env=_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        key = process.stdout.readline().strip()
        assert KEY.match(key), key
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/images/models", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not come up")
                time.sleep(0.1)
        response = httpx.post(f"{base}/images", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "imagegate/sandbox", "prompt": "hello", "resolution": "512"}, timeout=30)
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    # a second start finds the key and prints none
    again = subprocess.Popen(
        [sys.executable, "-m", "imagegate", "serve", "--port", str(port)], cwd=tmp_path, env=_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(3)
    again.terminate()
    out, _ = again.communicate(timeout=30)
    assert not KEY.search(out)


# --- settings as deployments pass them ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_variable_set_empty_is_the_same_as_unset(tmp_path: Path) -> None:
    """``deploy/compose.yaml`` forwards each variable as ``${NAME:-}``: empty where not set."""
    unset = {name: value for name, value in ENVIRON.items() if name not in variables_read()}
    empty = {**unset, **dict.fromkeys(variables_read(), "")}
    listings = []
    for env in (unset, empty):
        listed = subprocess.run(
            [sys.executable, "-m", "imagegate", "models", "--all", "--on", "2026-11-15"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        listings.append(listed.stdout)
    assert listings[1] == listings[0]
    assert _rows(listings[1])["openai/gpt-image-2"].endswith("off: set OPENAI_API_KEY")


def test_serve_starts_with_the_variables_a_deployment_leaves_empty(tmp_path: Path) -> None:
    port = _free_port()
    env = {**ENVIRON, **dict.fromkeys(variables_read(), "")}
    process = subprocess.Popen(
        [sys.executable, "-m", "imagegate", "serve", "--port", str(port)], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )

    def health() -> int | str:
        if process.poll() is not None:
            return f"exited {process.returncode}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
        except httpx.TransportError as exc:
            return repr(exc)

    try:
        eventually(health, lambda status: status == 200 or str(status).startswith("exited"))
        assert health() == 200, process.communicate(timeout=30)[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


COMMANDS_THAT_LOAD_SETTINGS = [
    ["serve", "--port", "0"], ["models"], ["keys", "create"], ["keys", "list"],
    ["keys", "revoke", "x"], ["credits", "add", "1"], ["credits", "show"],
]


@pytest.mark.parametrize("command", COMMANDS_THAT_LOAD_SETTINGS, ids=" ".join)
def test_a_bad_variable_stops_every_command_with_one_line_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    refused = run(tmp_path, *command, env={"IMAGEGATE_RATE_LIMIT_RPM": "abc"})
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "IMAGEGATE_RATE_LIMIT_RPM" in refused.stderr and "integer" in refused.stderr
    assert refused.stdout == ""


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("imagegate_rate_limit_rpm", "-5", "greater than or equal to 1"),
    ("IMAGEGATE_SQLITE_SYNCHRONOUS", "sometimes", "'normal' or 'full'"),
    ("IMAGEGATE_LOG_LEVEL", "loud", "'info'"),
    ("IMAGEGATE_PORT", "80808", "less than or equal to 65535"),
    ("IMAGEGATE_CATALOG_PATHS", "extra.yaml", "JSON"),
], ids=["negative", "enum", "log level", "port", "not json"])
def test_a_bad_variable_is_named_as_written_with_what_is_wrong(
    tmp_path: Path, variable: str, value: str, words: str
) -> None:
    refused = run(tmp_path, "models", env={variable: value})
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [refused.stderr.strip()], refused.stderr
    assert f"{variable}:" in refused.stderr and words in refused.stderr


@pytest.mark.parametrize(("text", "words"), [
    ("rate_limit_rpm: abc\n", ["rate_limit_rpm", "integer"]),
    ("sqlite_synchronous: sometimes\n", ["sqlite_synchronous", "'normal' or 'full'"]),
    ("providers:\n  openai: sk-not-a-mapping\n", ["providers.openai", "dictionary"]),
    ("rate_limit_rpm: [\n", ["settings.yaml", "line 2"]),
    ("- rate_limit_rpm: 5\n", ["settings.yaml", "mapping"]),
], ids=["not a number", "enum", "nested", "malformed", "not a mapping"])
def test_a_bad_config_file_stops_with_one_line_naming_the_key(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(text)
    for command in (["models"], ["serve", "--port", "0"]):
        refused = run(tmp_path, *command, env={"IMAGEGATE_CONFIG": str(config)})
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [refused.stderr.strip()], refused.stderr
        assert all(word in refused.stderr for word in words), refused.stderr
        assert "sk-not" not in refused.stderr  # values are not repeated: they may be secrets
