"""Set up what the bench needs from nothing: Debian packages (wrk, nginx) and the venvs of
the Python baselines under .cache/bench/ (created once, then reused).

Why venvs of their own: each baseline's install size is measured on a venv that holds only
its runtime dependencies, and none of them may change the project venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"

# name -> (pip requirements, full-run only)
VENVS = {
    "seed": (["fastapi", "uvicorn", "httpx"], False),   # the seed README's `pip install fastapi uvicorn httpx`
    # LiteLLM 1.107.0 was a compromised release (pulled from PyPI); never take it.
    "litellm": (["litellm[proxy]!=1.107.0"], True),
}
NOT_PIP = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth", "__pycache__")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def apt_install(binary: str, package: str) -> str | None:
    """Install a Debian package when its binary is missing; None when ready, else why not."""
    if shutil.which(binary):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{binary} missing and apt-get unavailable (needs root)"
    log(f"installing {package} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-qq", package], ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", package]):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} timed out"
        if cmd[1] == "install" and r.returncode == 0 and shutil.which(binary):
            return None
    return f"apt-get install {package} failed: {(r.stderr or r.stdout).strip()[-300:]}"


def venv_python(name: str) -> Path:
    return CACHE / name / "bin" / "python"


def venv_ready(name: str) -> bool:
    """Made, and with the requirements it has now (a changed list makes it again)."""
    stamp = CACHE / name / ".installed"
    return stamp.exists() and stamp.read_text() == "\n".join(VENVS[name][0])


def ensure_venv(name: str) -> str | None:
    """Create .cache/bench/<name> with its requirements; None when ready, else why not."""
    if venv_ready(name):
        return None
    reqs = VENVS[name][0]
    path = CACHE / name
    log(f"creating venv {path} with {' '.join(reqs)} (once; cached afterwards) ...")
    t0 = time.monotonic()
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(path)],
                       check=True, capture_output=True, timeout=120)
        r = subprocess.run([str(path / "bin" / "pip"), "install", "-q", *reqs], capture_output=True, text=True,
                           timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"venv {name}: {exc}"
    if r.returncode != 0:
        return f"pip install {' '.join(reqs)} failed: {r.stderr.strip()[-300:]}"
    (path / ".installed").write_text("\n".join(reqs))
    log(f"venv {name} ready in {time.monotonic() - t0:.0f} s")
    return None


def rawproxy_deps_venv() -> Path | None:
    """A venv with only rawproxy's runtime dependencies (from pyproject.toml), to size them."""
    name = "rawproxy-deps"
    VENVS[name] = (rawproxy_deps(), False)
    return CACHE / name if ensure_venv(name) is None else None


def rawproxy_deps() -> list[str]:
    import tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _du(path: Path) -> int:
    """Bytes used on disk (like du), hard links counted once."""
    seen, total = set(), 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def site_packages_size(venv: Path) -> int:
    """Size of a venv's site-packages without pip/setuptools (present in every venv)."""
    sp = next((venv / "lib").glob("python3*/site-packages"), None)
    if sp is None:
        return 0
    total = 0
    for entry in sp.iterdir():
        if entry.name.startswith(NOT_PIP):
            continue
        total += _du(entry) if entry.is_dir() else entry.lstat().st_blocks * 512
    return total


def rawproxy_size() -> tuple[int | None, str]:
    venv = rawproxy_deps_venv()
    own = _du(ROOT / "rawproxy")
    if venv is None:
        return None, "could not build the runtime-deps venv"
    return site_packages_size(venv) + own, f"runtime deps ({', '.join(VENVS['rawproxy-deps'][0])}) + rawproxy/ source"


def dpkg_size(*packages: str) -> int | None:
    """Debian's Installed-Size (KiB) of the named packages, in bytes."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Installed-Size}\\n", *packages], capture_output=True,
                             text=True, timeout=10).stdout
        return sum(int(x) for x in out.split()) * 1024 or None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
