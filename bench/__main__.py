"""`python -m bench [--quick]`: measure rawproxy against what its users would run instead.

One run, one mock upstream, one load: direct (the floor), rawproxy (same- and
cross-dialect), the seed's design, nginx and (full run) LiteLLM, then a report in
bench/results/. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import shutil
import sys
import tempfile
import time

from . import deps, load, report, systems
from .deps import log

# big_streams / big_stream_secs: the stream scenario again with a Claude Code-sized body
# (about 50 KB), fewer streams at the same pace.
FULL = dict(warmup=1.0, probe=1.0, c1=4, c32=4, sat=4, sat_conc=64, stream_secs=8, stream_grace=12,
            streams=200, rate=50, big_streams=50, big_stream_secs=8, rss_streams=500, cold_tries=3)
QUICK = dict(warmup=0.3, probe=0.4, c1=1, c32=1, sat=0, sat_conc=64, stream_secs=1.5, stream_grace=3,
             streams=200, rate=50, big_streams=50, big_stream_secs=1.0, rss_streams=0, cold_tries=1)


def pick_cores() -> dict:
    """Mock and load generator share one core, the system under test gets another.

    Why: the proxy is single-threaded; giving it a core of its own keeps its figures from
    depending on how the scheduler mixes it with the load. With 3+ cores the load
    generator gets its own core too."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 3:
        return {"mock": cpus[0], "load": cpus[1], "system": cpus[2]}
    if len(cpus) == 2:
        return {"mock": cpus[0], "load": cpus[0], "system": cpus[1]}
    return {"mock": None, "load": None, "system": None}


class Bench:
    def __init__(self, cfg: dict, cores: dict, use_wrk: bool, mock: systems.System):
        self.cfg, self.cores, self.use_wrk, self.mock = cfg, cores, use_wrk, mock
        self.waited = 0.0   # seconds spent waiting for systems to go idle

    def settle(self, s: systems.System) -> None:
        self.waited += systems.settle([s, self.mock])

    def nonstream(self, target, conc: int, secs: float, s: systems.System | None = None) -> dict:
        """One closed-loop run; with `s`, also the CPU the system used per request over it."""
        cpu0 = s.cpu_seconds() if s is not None and s.cmd is not None else None
        if self.use_wrk:
            out = load.nonstream_wrk(target, conc, secs, self.cores["load"])
        else:
            out = asyncio.run(load.nonstream_own(target, conc, secs))
        if cpu0 is not None and s is not None and out["requests"]:
            out["cpu_us_per_req"] = (s.cpu_seconds() - cpu0) / out["requests"] * 1e6
        return out

    def run_route(self, s: systems.System, route: systems.Route) -> dict:
        c, t = self.cfg, route.target
        self.settle(s)
        row: dict = {"route": route.route, "floor": route.floor, "dialect": t.dialect}
        log(f"  {route.name}: warm-up, c=1, c=32" + (f", c={c['sat_conc']}" if c["sat"] else "") + ", streams, big-body streams")
        # Warm-up (pools, caches), then the TTFB probe with our own client (wrk does not
        # report TTFB), then the measured runs.
        asyncio.run(load.nonstream_own(t, 8, c["warmup"]))
        probe = asyncio.run(load.nonstream_own(t, 1, c["probe"]))
        row["c1"] = self.nonstream(t, 1, c["c1"], s)
        row["c1"]["ttfb"] = probe["ttfb"]
        row["c32"] = self.nonstream(t, 32, c["c32"], s)
        if c["sat"]:
            row["sat"] = self.nonstream(t, c["sat_conc"], c["sat"], s)
        # A Claude Code-sized turn (about 50 KB): CPU per request and latency at c=1.
        big = dataclasses.replace(t, pad=45_000)
        asyncio.run(load.nonstream_own(big, 1, c["warmup"]))
        row["big"] = self.nonstream(big, 1, c["c1"], s)
        row["big"]["body_bytes"] = len(big.body(stream=False))
        row["body_bytes"] = len(t.body(stream=False))
        # Warm the upstream pool for 200 streams, then measure.
        asyncio.run(load.streams(t, c["streams"], 5, c["rate"], timeout=10))
        self.settle(s)
        events = int(c["rate"] * c["stream_secs"])
        row["stream"] = asyncio.run(load.streams(t, c["streams"], events, c["rate"], timeout=c["stream_secs"] + c["stream_grace"],
                                                 cpu=s.cpu_seconds if s.cmd is not None else None))
        # Streams with the Claude Code-sized body (fewer of them, same pace): each request
        # makes the proxy parse and rewrite ~50 KB before relaying the same events.
        self.settle(s)
        events = int(c["rate"] * c["big_stream_secs"])
        row["big_stream"] = asyncio.run(load.streams(big, c["big_streams"], events, c["rate"],
                                                     timeout=c["big_stream_secs"] + c["stream_grace"],
                                                     cpu=s.cpu_seconds if s.cmd is not None else None))
        return row

    def run_system(self, s: systems.System) -> dict:
        c = self.cfg
        out = {"label": s.label, "cmd": _portable(s.cmd), "rows": {}, "cold_start_s": [], "pinned_core": self.cores["system"]}
        if s.cmd is not None:
            out["cold_start_s"].append(s.start(self.cores["system"]))
            time.sleep(0.5)
            out["idle_rss"] = s.rss()
            out["processes"] = len(s.pids())
        try:
            for route in s.routes:
                out["rows"][route.name] = self.run_route(s, route)
            if c["rss_streams"] and s.cmd is not None:
                self.settle(s)
                out["loaded"] = self.loaded_rss(s)
        finally:
            s.stop()
        try:   # cold start: exec to first 200 on the health path, best of N starts
            for _ in range(c["cold_tries"] - 1 if s.cmd is not None else 0):
                time.sleep(0.3)
                out["cold_start_s"].append(s.start(self.cores["system"]))
                s.stop()
        finally:
            for path in s.cleanup:
                shutil.rmtree(path, ignore_errors=True)
        return out

    def loaded_rss(self, s: systems.System) -> dict:
        """RSS with N streams open at once: slow streams (2 events/s), read once every
        stream has delivered an event (or after 15 s), then all aborted."""
        n = self.cfg["rss_streams"]
        log(f"  {s.key}: RSS with {n} open streams")

        async def hold():
            await asyncio.sleep(0.5)
            return s.rss()
        r = asyncio.run(load.streams(s.routes[0].target, n, 60, 2, timeout=15, hold=hold))
        time.sleep(1.0)
        return {"streams": n, "open": r["streams_started"], "rss": r["held"], "errors": r["errors"],
                "last_error": r["last_error"]}


def _portable(cmd: list[str] | None) -> list[str] | None:
    """A command as the report records it: paths inside the checkout relative to it, and
    temporary folders named as such, so a report says nothing of the machine it ran on."""
    if cmd is None:
        return None
    root, tmp = str(systems.ROOT) + os.sep, tempfile.gettempdir() + os.sep
    return [a.replace(root, "").replace(tmp, "$TMPDIR/") for a in cmd]


def build_systems(mock: int, quick: bool, notes: dict) -> list[systems.System]:
    out = [systems.direct(mock), systems.rawproxy(mock, "anthropic"), systems.rawproxy(mock, "openai")]
    if deps.venv_ready("seed"):
        out += [systems.seed(mock, "anthropic"), systems.seed(mock, "openai")]
    else:
        notes.setdefault("seed", "skipped: its venv is not cached yet (quick mode does not create it; run `make bench` once)")
    if quick:   # the reduced set: Anthropic clients only (same and cross), no nginx/LiteLLM
        for s in out:
            s.routes = [r for r in s.routes if not r.name.endswith("openai")]
        return out
    if "nginx" not in notes:
        out.append(systems.nginx(mock))
    if "litellm" not in notes:
        out.append(systems.litellm(mock))
    return out


def sizes(sys_list: list[systems.System], notes: dict) -> dict:
    """Installed size of each system's runtime dependency set (bytes, how measured)."""
    out = {}
    keys = {s.key.split("-")[0] for s in sys_list if s.cmd is not None}
    if "rawproxy" in keys:
        out["rawproxy"] = deps.rawproxy_size()
    if "seed" in keys:
        out["seed"] = (deps.site_packages_size(deps.CACHE / "seed") + os.path.getsize(systems.ROOT / "bench" / "baselines" / "seed_proxy.py"),
                       "venv site-packages (fastapi, uvicorn, httpx and their deps) + seed_proxy.py")
    if "litellm" in keys:
        out["litellm"] = (deps.site_packages_size(deps.CACHE / "litellm"), "venv site-packages of litellm[proxy]")
    if "nginx" in keys:
        out["nginx"] = (deps.dpkg_size("nginx", "nginx-common"), "Debian Installed-Size of nginx + nginx-common")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced set in under 60 s (direct, rawproxy, cached seed)")
    ap.add_argument("--only", help="comma list of system keys to run (direct always runs)")
    ap.add_argument("--no-wrk", action="store_true", help="use the built-in load client for plain requests too")
    args = ap.parse_args()
    t_start = time.monotonic()
    cfg = QUICK if args.quick else FULL
    cores = pick_cores()
    if cores["load"] is not None:
        os.sched_setaffinity(0, {cores["load"]})   # this process runs the stream client
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    notes: dict[str, str] = {}
    if not args.quick:
        for binary in ("wrk", "nginx"):
            why = deps.apt_install(binary, binary)
            if why:
                notes[binary] = f"skipped: {why}"
        for name in ("seed", "litellm"):
            why = deps.ensure_venv(name)
            if why:
                notes[name] = f"skipped: {why}"
    use_wrk = load.have_wrk() and not args.no_wrk
    if not use_wrk:
        notes["load"] = "plain requests used the built-in asyncio client" + ("" if args.no_wrk else " (wrk not installed)")
    t_setup = time.monotonic() - t_start

    mock_port = systems.free_port()
    mock_cmd = [sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port)]
    if cores["mock"] is not None:
        mock_cmd += ["--cpu", str(cores["mock"])]
    mock = systems.System("mock", "mock upstream", mock_cmd, mock_port)
    mock.start(None)
    sys_list = build_systems(mock_port, args.quick, notes)
    if args.only:
        keep = {k.strip() for k in args.only.split(",")} | {"direct"}
        sys_list = [s for s in sys_list if s.key in keep or s.key.split("-")[0] in keep]
    bench = Bench(cfg, cores, use_wrk, mock)
    foreign, foreign_all = systems.ForeignCPU(mock), systems.ForeignCPU(mock)
    foreign_all.start()
    results = {"systems": {}, "notes": notes, "mode": "quick" if args.quick else "full", "config": cfg,
               "cores": cores, "load_tool": "wrk" if use_wrk else "own", "setup_s": t_setup}
    try:
        for s in sys_list:
            if s.unavailable:
                log(f"{s.label}: {s.unavailable}")
                notes[s.key] = s.unavailable
                continue
            log(f"{s.label} ...")
            t0 = time.monotonic()
            foreign.start()
            try:
                results["systems"][s.key] = bench.run_system(s)
                results["systems"][s.key]["elapsed_s"] = time.monotonic() - t0
                results["systems"][s.key]["foreign_cpu"] = foreign.stop()
            except Exception as exc:   # one system failing must not lose the others' figures
                s.stop()
                why = str(exc).replace("\n", " ")[:400]
                label = "not available" if s.key.startswith("rawproxy") else "failed"
                notes[s.key] = f"{label}: {why}"
                log(f"{s.label}: {label}: {why}")
        results["mock_rss"] = mock.rss()
        results["settle_s"] = bench.waited
        results["foreign_cpu"] = foreign_all.stop()
    finally:   # never leave a system running, whatever happened (Ctrl-C included)
        for s in sys_list:
            s.stop()
        mock.stop()
    results["sizes"] = sizes(sys_list, notes)
    results["elapsed_s"] = time.monotonic() - t_start
    paths = report.write(results)
    print(paths["table"])
    print(f"\nreport: {paths['md']}\njson:   {paths['json']}\nchart:  {paths['svg']}\n"
          f"total {results['elapsed_s']:.0f} s (setup {t_setup:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
