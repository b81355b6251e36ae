"""The container image, built the only way this machine can: no container runtime runs here.

The test reads the Dockerfile's COPY lines to lay out the same build context in a temporary
folder, installs it into a fresh venv with the Dockerfile's own `pip install --no-cache-dir`
(the project without test extras, from source, non-editable), starts the proxy from that
venv against the built-in simulator with the Dockerfile's CMD (on loopback), and checks
/health and a request. It prints the installed size and bounds it.

The bound, 15 MiB: the runtime set measures about 10 MiB (trio ~5, certifi, rawproxy,
httpcore, idna, attrs ~0.5-0.8 each, orjson ~0.4, the rest small). 15 leaves room for the ordinary growth
of those packages, and fails on the first heavy addition (pydantic-core, uvloop or an
HTTP/2 stack each add several MiB), which should be a decision, not an accident.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ..conftest import ROOT, free_port, http_json

SIZE_BOUND = 15 * 1024 * 1024
PIP_OWN = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth")
TEST_ONLY = ("pytest", "openai", "anthropic", "httpx", "hypothesis", "langchain", "socksio")
DOCKERFILE = Path(ROOT) / "Dockerfile"


def dockerfile_lines() -> list[str]:
    """Instructions with their continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return lines


def lay_out_context(dest: Path) -> Path:
    """Copy what each COPY line names to where it puts it; returns the folder pip installs."""
    target = None
    for line in dockerfile_lines():
        if not line.startswith("COPY "):
            continue
        *sources, to = shlex.split(line)[1:]
        assert not any(s.startswith("--from") for s in sources), "single-stage build expected"
        where = dest / to.lstrip("/")
        for source in sources:
            src = Path(ROOT) / source
            if src.is_dir():
                # Docker copies a folder's contents, not the folder itself.
                shutil.copytree(src, where, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                where.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, where / src.name)
            if source == "pyproject.toml":
                target = where
    assert target is not None, "the Dockerfile copies no pyproject.toml"
    return target


def installed_size(site: Path) -> int:
    """Bytes on disk (du) of site-packages, pip and setuptools (in every venv) left out."""
    total = 0
    for entry in site.iterdir():
        if entry.name.startswith(PIP_OWN):
            continue
        paths = [entry] if not entry.is_dir() else [Path(r) / f for r, _, fs in os.walk(entry) for f in fs]
        total += sum(p.lstat().st_blocks * 512 for p in paths)
    return total


def test_dockerfile_is_small_non_root_and_its_context_is_what_it_copies():
    lines = dockerfile_lines()
    assert lines[0].split()[1] in ("python:3.11-slim", "python:3.11-alpine")
    assert any(line.startswith("USER ") and line.split()[1] not in ("root", "0") for line in lines)
    assert "EXPOSE 8000" in lines
    assert 'CMD ["python", "-m", "rawproxy", "--host", "0.0.0.0"]' in lines
    assert any("pip install --no-cache-dir /src" in line for line in lines)
    # .dockerignore lets in exactly what the COPY lines name (nothing else goes up as context).
    allowed = {line[1:] for line in (Path(ROOT) / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    copied = {s for line in lines if line.startswith("COPY ") for s in shlex.split(line)[1:-1]}
    assert allowed == copied


def test_runtime_set_installs_small_and_serves(tmp_path):
    src = lay_out_context(tmp_path / "context")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    install = subprocess.run([*pip, "install", "--no-cache-dir", "--quiet", str(src)],
                             capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        probe = subprocess.run([*pip, "download", "--no-deps", "--no-cache-dir", "--quiet", "-d",
                                str(tmp_path / "probe"), "h11"], capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            pytest.skip(f"pip cannot reach the package index: {probe.stderr.strip()[-300:]}")
        pytest.fail(f"pip install of the project failed:\n{install.stdout[-2000:]}\n{install.stderr[-2000:]}")

    listed = subprocess.run([*pip, "list", "--format=json"], capture_output=True, text=True, check=True)
    names = sorted(p["name"].lower() for p in json.loads(listed.stdout))
    assert {"rawproxy", "trio", "h11", "httpcore", "certifi", "orjson"} <= set(names)
    assert not [n for n in names if n.startswith(TEST_ONLY)], f"test-only packages installed: {names}"

    site = next((venv / "lib").glob("python3*/site-packages"))
    size = installed_size(site)
    print(f"\ninstalled runtime set ({', '.join(n for n in names if n not in ('pip', 'setuptools'))}): "
          f"{size / 1024 / 1024:.1f} MiB in site-packages, pip and setuptools excluded")
    assert size < SIZE_BOUND, f"{size / 1024 / 1024:.1f} MiB is over the {SIZE_BOUND // 1024 // 1024} MiB bound"

    # The Dockerfile's CMD on loopback, from a folder without the source: the installed copy runs.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ZENMUX_API_KEY", "MOONSHOT_BASE_URL", "RAWPROXY_UPSTREAM", "PROXY_WORKERS")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import rawproxy; print(rawproxy.__file__)"],
                           cwd=run_dir, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), where
    port = free_port()
    log_path = tmp_path / "proxy.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "rawproxy", "--host", "127.0.0.1",
                                 "--port", str(port), "--simulator"],
                                cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    health = json.loads(resp.read())
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        assert health["status"] == "ok"
        status, answer = http_json(url + "/v1/chat/completions", "POST",
                                   {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "Hello!"}]},
                                   {"authorization": "Bearer any"})
        assert status == 200, answer
        assert answer["choices"][0]["message"]["content"].startswith("Sim answer")
        # The dashboard's page is package data: the installed copy serves it.
        with urllib.request.urlopen(url + "/dashboard", timeout=5) as resp:
            assert resp.status == 200 and b"<title>rawproxy</title>" in resp.read()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log_path.read_text()
