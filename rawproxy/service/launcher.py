"""`rawproxy claude [ARGS]`, `rawproxy codex [ARGS]` and `rawproxy env claude|codex|openai`.

The launcher runs a coding client against a proxy: the one already listening on the
configured address when there is one (its /health answers as rawproxy), else one it starts
in the background on a free loopback port with the same settings (the flags before the
command, and the environment), logging to a file in the state folder. The client gets the
environment or `-c` options that point it at the proxy, and its exit code is the
launcher's.

A background proxy is shared: launchers with the same settings find it through a state
file (`launcher-<settings digest>.json` in $XDG_STATE_HOME/rawproxy, guarded by an flock)
that lists the proxy and the launchers using it, by pid. A launcher whose client exits
takes itself off the list; the last one stops the proxy (SIGTERM, then waits for it to
drain). Launchers that died without saying so are dropped from the list by whoever reads
it next, so a crash never keeps a proxy alive for ever, and pids are checked against the
process's start time so a recycled pid is never signalled.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.settings import ConfigError, Settings
from .cli import build_parser, default_store_path, load_settings, program_name

COMMANDS = ("claude", "codex", "env")
ENV_TARGETS = ("claude", "codex", "openai")
CLIENT_KEY_VAR = "RAWPROXY_CLIENT_KEY"  # the key Codex reads (env_key), and the user's own in forwarding mode
PLACEHOLDER_KEY = "rawproxy"  # any key will do when the proxy holds the upstream key
DEFAULT_CODEX_MODEL = "kimi-k2.5"
START_TIMEOUT = 30.0  # seconds a background proxy gets to answer /health
START_TRIES = 3       # a free port can be taken between choosing it and binding it


@dataclass(frozen=True)
class Client:
    name: str
    binary: str
    override: str  # the environment variable that names the binary instead of PATH
    package: str   # npm's name for it


CLIENTS = {
    "claude": Client("Claude Code", "claude", "CLAUDE_BIN", "@anthropic-ai/claude-code"),
    "codex": Client("Codex CLI", "codex", "CODEX_BIN", "@openai/codex"),
}


class LaunchError(Exception):
    """Something that stops a launch; the message says what to do."""


# ------------------------------------------------------------------ the command line


def split_command(argv: Sequence[str]) -> tuple[list[str], str, list[str]] | None:
    """(proxy flags, command, the command's arguments) when `argv` names a command after
    the proxy's own flags, else None (a plain `rawproxy --port 8000` run). A flag's value
    is never taken for a command: `--model-map claude` stays a flag."""
    options: dict[str, bool] = {}
    for action in build_parser()._actions:
        for name in action.option_strings:
            options[name] = action.nargs != 0
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return None
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            if name not in options:  # argparse takes unambiguous abbreviations
                matches = [o for o in options if o.startswith(name)]
                name = matches[0] if len(matches) == 1 else name
            i += 2 if options.get(name) and "=" not in token else 1
            continue
        if token in COMMANDS:
            return list(argv[:i]), token, list(argv[i + 1:])
        return None
    return None


def main(flags: list[str], command: str, args: list[str], env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    prog = program_name()
    if command == "env" and (len(args) != 1 or args[0] not in ENV_TARGETS):
        print(f"usage: {prog} [FLAGS] env {{{','.join(ENV_TARGETS)}}}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(flags, env)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse said why already
        return int(exc.code or 0)
    if command == "env":
        url = configured_url(settings)
        print(env_script(args[0], url, settings, env))
        if not is_rawproxy(url):  # on stderr: `eval "$(rawproxy env claude)"` reads stdout only
            print(f"{prog}: note: no proxy answers at {url} yet: start one with `{prog}` and the same settings",
                  file=sys.stderr)
        return 0
    client = CLIENTS[command]
    binary = find_binary(client, env)
    if binary is None:
        where = env.get(client.override)
        found = f"{client.override}={where} is not an executable file" if where else f"`{client.binary}` is not on PATH"
        print(f"{prog}: {client.name} is not installed ({found}). Install it with:\n"
              f"    npm install -g {client.package}\n"
              f"or set {client.override} to its path.", file=sys.stderr)
        return 127
    try:
        url = configured_url(settings)
        if is_rawproxy(url):
            return run_client(client_command(command, binary, args, url, settings), client_env(command, url, settings, env))
        if not settings.api_key and not settings.simulator and not settings.access_keys \
                and not env.get(CLIENT_KEY_VAR):
            print(f"{prog}: note: no upstream key is set (ZENMUX_API_KEY or --api-key), so the proxy forwards "
                  f"the client's key, and {client.name} is given a placeholder: set {CLIENT_KEY_VAR} to your "
                  "upstream key", file=sys.stderr)
        with shared_proxy(flags, settings, env) as url:
            return run_client(client_command(command, binary, args, url, settings),
                              client_env(command, url, settings, env))
    except LaunchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the client ran (it takes Ctrl-C itself once running)
        return 128 + signal.SIGINT


# ------------------------------------------------------------------ where the proxy is


def configured_url(settings: Settings) -> str:
    """The address a proxy with these settings listens on, as a local client reaches it."""
    host = settings.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def is_rawproxy(url: str, timeout: float = 2.0) -> bool:
    """Whether `url` answers GET /health as rawproxy does. Asked directly, never through
    HTTP_PROXY: the proxy is on this machine."""
    host, _, port = url.split("//", 1)[1].rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        doc = json.loads(response.read(65536))
        return response.status == 200 and isinstance(doc, dict) and doc.get("status") == "ok" and "version" in doc
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def state_folder(env: Mapping[str, str]) -> Path:
    """$XDG_STATE_HOME/rawproxy, else ~/.local/state/rawproxy (where the default store lives too)."""
    return Path(default_store_path(env)).parent


def settings_digest(settings: Settings) -> str:
    """The same for launchers whose proxies would be the same (any address)."""
    values = dataclasses.astuple(dataclasses.replace(settings, host="", port=0))
    return hashlib.blake2b(repr(values).encode(), digest_size=6).hexdigest()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), to tell a recycled pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    if fields and fields[0] == "Z":
        return None  # a zombie: it has exited
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, started: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if os.path.isdir("/proc"):
        now = _start_time(pid)
        return now is not None and (started is None or now == started)
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SharedProxy:
    """The launchers' shared state for one set of settings: which proxy, who uses it."""

    def __init__(self, folder: Path, digest: str, flags: list[str], settings: Settings, env: Mapping[str, str]) -> None:
        self.folder = folder
        self.state_path = folder / f"launcher-{digest}.json"
        self.lock_path = folder / f"launcher-{digest}.lock"
        self.log_path = folder / f"proxy-{digest}.log"
        self.flags = flags
        self.settings = settings
        self.env = env
        self.me = os.getpid()
        self._child: subprocess.Popen | None = None

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state, read and written back under an exclusive lock."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write(self, state: dict[str, Any]) -> None:
        if not state.get("clients"):
            self.state_path.unlink(missing_ok=True)
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def acquire(self) -> str:
        """The URL of this settings' background proxy, started when none is running; this
        launcher is counted as one of its users."""
        with self._locked() as state:
            clients = [c for c in state.get("clients", []) if isinstance(c, list) and _alive(*c)]
            found = state.get("proxy")
            proxy: dict[str, Any] = found if isinstance(found, dict) else {}
            running = bool(proxy) and _alive(proxy["pid"], proxy.get("started"))
            if not (running and is_rawproxy(f"http://127.0.0.1:{proxy['port']}")):
                if running and not clients:
                    self._stop(proxy)  # alive, unanswering and used by no one: one of ours, stuck
                proxy = self._start()
            clients.append([self.me, _start_time(self.me)])
            state.clear()
            state.update(proxy=proxy, clients=clients)
            return f"http://127.0.0.1:{proxy['port']}"

    def release(self) -> None:
        """This launcher is done: the last one out stops the proxy."""
        with self._locked() as state:
            clients = [c for c in state.get("clients", [])
                       if isinstance(c, list) and c[0] != self.me and _alive(*c)]
            state["clients"] = clients
            proxy = state.get("proxy") if not clients else None
        if isinstance(proxy, dict):
            self._stop(proxy)

    def _start(self) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for _ in range(START_TRIES):
            port = _free_port()
            command = [sys.executable, "-m", "rawproxy", *self.flags, "--host", "127.0.0.1", "--port", str(port)]
            with open(self.log_path, "ab") as log:
                # Its own session: a Ctrl-C meant for the client never reaches a proxy that
                # other launchers may still be using; the last launcher stops it.
                child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=dict(self.env), close_fds=True)
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT
            try:
                while time.monotonic() < deadline and child.poll() is None:
                    if is_rawproxy(url, timeout=1.0):
                        self._child = child
                        print(f"{program_name()}: started a proxy on {url} (log: {self.log_path})", file=sys.stderr)
                        return {"pid": child.pid, "port": port, "started": _start_time(child.pid)}
                    time.sleep(0.1)
            except BaseException:  # Ctrl-C while it starts: no proxy left behind unlisted
                child.kill()
                child.wait()
                raise
            if child.poll() is None:
                child.kill()
                child.wait()
                break  # alive but never answering: another port will not help
        raise LaunchError(f"the proxy did not start; its log ({self.log_path}) ends with:\n{_tail(self.log_path)}")

    def _stop(self, proxy: dict[str, Any]) -> None:
        pid = proxy["pid"]
        if not _alive(pid, proxy.get("started")):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.graceful_timeout + 5.0
        while time.monotonic() < deadline:
            if self._child is not None and self._child.pid == pid:
                if self._child.poll() is not None:
                    return
            elif not _alive(pid, proxy.get("started")):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        if self._child is not None and self._child.pid == pid:
            self._child.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def shared_proxy(flags: list[str], settings: Settings, env: Mapping[str, str]) -> Iterator[str]:
    shared = SharedProxy(state_folder(env), settings_digest(settings), flags, settings, env)
    url = shared.acquire()
    try:
        yield url
    finally:
        # A late Ctrl-C (a second one for the client) must not cut the stop short and
        # leave the proxy running with no one on the list.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            shared.release()
        finally:
            signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------ the clients


def find_binary(client: Client, env: Mapping[str, str]) -> str | None:
    """CLAUDE_BIN / CODEX_BIN when set, else the name on PATH."""
    named = env.get(client.override)
    if named:
        return named if os.path.isfile(named) and os.access(named, os.X_OK) else None
    return shutil.which(client.binary, path=env.get("PATH"))


def client_key(settings: Settings, env: Mapping[str, str]) -> str:
    """What the client presents: an access key when the proxy wants one; the user's own
    upstream key (RAWPROXY_CLIENT_KEY) when the proxy forwards the client's key; else
    any placeholder, the proxy holding the upstream key."""
    if settings.access_keys:
        return settings.access_keys[0]
    if not settings.api_key and not settings.simulator:
        return env.get(CLIENT_KEY_VAR) or PLACEHOLDER_KEY
    return PLACEHOLDER_KEY


def _no_proxy(env: Mapping[str, str]) -> str:
    present = (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",")
    names = [n.strip() for n in present if n.strip()]
    return ",".join(names + [n for n in ("127.0.0.1", "localhost", "::1") if n not in names])


def codex_model(settings: Settings) -> str:
    """The model the map sends clients to (its first Kimi target), else kimi-k2.5."""
    for _pattern, target in settings.model_map.rules:
        if settings.is_kimi(target):
            return target
    return DEFAULT_CODEX_MODEL


def codex_overrides(url: str, settings: Settings, with_model: bool = True) -> list[tuple[str, str]]:
    """Codex configuration for a `rawproxy` provider speaking the Responses API; values
    are TOML (JSON strings are valid TOML strings)."""
    provider = "model_providers.rawproxy."
    out = [
        (provider + "name", json.dumps("rawproxy")),
        (provider + "base_url", json.dumps(url + "/v1")),
        (provider + "env_key", json.dumps(CLIENT_KEY_VAR)),
        (provider + "wire_api", json.dumps("responses")),
        # A thinking model can be silent for minutes: wait as long as the proxy does.
        (provider + "stream_idle_timeout_ms", str(int(settings.read_timeout * 1000))),
        ("model_provider", json.dumps("rawproxy")),
    ]
    if with_model:
        out.append(("model", json.dumps(codex_model(settings))))
    return out


def _names_model(args: Sequence[str]) -> bool:
    """Whether the user chose Codex's model themselves (-m, --model, -c model=...)."""
    for i, arg in enumerate(args):
        if arg in ("-m", "--model") or arg.startswith("--model="):
            return True
        if arg in ("-c", "--config") and i + 1 < len(args) and args[i + 1].replace(" ", "").startswith("model="):
            return True
    return False


def client_command(command: str, binary: str, args: list[str], url: str, settings: Settings) -> list[str]:
    if command == "codex":
        overrides = codex_overrides(url, settings, with_model=not _names_model(args))
        return [binary, *(part for key, value in overrides for part in ("-c", f"{key}={value}")), *args]
    return [binary, *args]


def client_env(command: str, url: str, settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    no_proxy = _no_proxy(env)
    out["NO_PROXY"] = out["no_proxy"] = no_proxy
    key = client_key(settings, env)
    if command == "claude":
        out["ANTHROPIC_BASE_URL"] = url
        # The bearer form: Claude Code asks nothing about it, and a real Anthropic key in
        # the user's environment is not sent to the proxy beside it.
        out.pop("ANTHROPIC_API_KEY", None)
        out["ANTHROPIC_AUTH_TOKEN"] = key
        # Thinking answers run long; the client should wait as long as the proxy would.
        out.setdefault("API_TIMEOUT_MS", str(int(settings.request_timeout * 1000)))
    else:
        out[CLIENT_KEY_VAR] = key
    return out


def run_client(argv: list[str], env: dict[str, str]) -> int:
    """Runs the client in the foreground; its exit code (128+N when signal N ended it).
    Ctrl-C reaches the client from the terminal itself, so the launcher only waits;
    SIGTERM and SIGHUP sent to the launcher are passed on."""
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as exc:
        raise LaunchError(f"cannot run {argv[0]}: {exc}") from None
    previous = {}

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, forward)
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


# ------------------------------------------------------------------ rawproxy env


def _key_expression(settings: Settings, env: Mapping[str, str]) -> str:
    """The client key for a shell line, by reference where the shell has it, so the key
    itself is not printed."""
    first_env_key = (env.get("PROXY_API_KEYS") or "").split(",")[0].strip()
    if settings.access_keys:
        if first_env_key and first_env_key == settings.access_keys[0]:
            return '"${PROXY_API_KEYS%%,*}"'
        return shlex.quote(settings.access_keys[0])  # from --proxy-api-keys: the user typed it
    key = client_key(settings, env)
    if key != PLACEHOLDER_KEY and env.get(CLIENT_KEY_VAR) == key:
        return f'"${CLIENT_KEY_VAR}"'
    return shlex.quote(key)


def env_script(target: str, url: str, settings: Settings, env: Mapping[str, str]) -> str:
    """Shell lines (Claude Code, OpenAI clients) or Codex config.toml lines that point a
    client started by hand at the proxy on the configured address."""
    key = _key_expression(settings, env)
    no_proxy = shlex.quote(_no_proxy(env))
    if target == "claude":
        return "\n".join([
            f"export ANTHROPIC_BASE_URL={shlex.quote(url)}",
            f"export ANTHROPIC_AUTH_TOKEN={key}",
            "unset ANTHROPIC_API_KEY",
            f"export API_TIMEOUT_MS={int(settings.request_timeout * 1000)}",
            f"export NO_PROXY={no_proxy} no_proxy={no_proxy}",
        ])
    if target == "openai":
        return "\n".join([
            f"export OPENAI_BASE_URL={shlex.quote(url + '/v1')}",
            f"export OPENAI_API_KEY={key}",
            f"export NO_PROXY={no_proxy} no_proxy={no_proxy}",
        ])
    lines = ["# ~/.codex/config.toml (or pass each line as codex -c 'KEY=VALUE')"]
    table = "model_providers.rawproxy."
    top = [(k, v) for k, v in codex_overrides(url, settings) if not k.startswith(table)]
    lines += [f"{k} = {v}" for k, v in top]
    lines += ["", "[model_providers.rawproxy]"]
    lines += [f"{k[len(table):]} = {v}" for k, v in codex_overrides(url, settings) if k.startswith(table)]
    lines += ["", "# and in the shell that starts codex:", f"# export {CLIENT_KEY_VAR}={key}",
              f"# export NO_PROXY={no_proxy} no_proxy={no_proxy}"]
    return "\n".join(lines)
