"""Turn one run's results into bench/results/<date>-<commit>.{json,md,svg} and refresh
bench/README.md. No plotting dependency: the chart is hand-written SVG.

Ratios: shared machines drift, so every figure is also given against the direct run of the
same dialect (the floor) and against each baseline. A factor ">1" always means rawproxy is
better (faster, more requests/s, less memory, smaller).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from pathlib import Path

from . import chart

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ["direct", "direct openai", "rawproxy same", "rawproxy cross", "rawproxy openai", "seed same", "seed cross",
         "seed openai", "nginx same", "litellm cross", "litellm openai"]
BASELINES = [("seed same", "rawproxy same"), ("nginx same", "rawproxy same"), ("seed cross", "rawproxy cross"),
             ("litellm cross", "rawproxy cross"), ("seed openai", "rawproxy openai"), ("litellm openai", "rawproxy openai")]


def ms(ns) -> float | None:
    return None if ns is None else ns / 1e6


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = next((int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), None)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(),
            "kernel": platform.release(), "os": platform.platform()}


def commit() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "nogit"
    except OSError:
        return "nogit"


def figures(results: dict) -> tuple[dict, dict]:
    """Flatten to rows[name] -> figures (ms, rps) and per_system[key] -> memory/start/size."""
    rows, per_system = {}, {}
    sizes = results.get("sizes", {})
    for key, s in results["systems"].items():
        kind = key.split("-")[0]
        size = sizes.get(kind, (None, ""))
        loaded = s.get("loaded") or {}
        per_system[key] = {"label": s["label"], "idle_rss_mb": (s.get("idle_rss") or 0) / 2**20 or None,
                           "loaded_rss_mb": (loaded.get("rss") or 0) / 2**20 or None,
                           "loaded_open": loaded.get("open"), "loaded_streams": loaded.get("streams"),
                           "cold_start_s": min(s["cold_start_s"]) if s.get("cold_start_s") else None,
                           "cold_tries": len(s.get("cold_start_s", [])), "processes": s.get("processes"),
                           "size_mb": size[0] / 1e6 if size[0] else None, "size_how": size[1],
                           "foreign_cpu": s.get("foreign_cpu", 0.0)}
        for name, r in s["rows"].items():
            st = r["stream"]
            f = {"system": key, "route": r["route"], "floor": r["floor"], "dialect": r["dialect"],
                 "c1_rps": r["c1"]["rps"], "c1_p50": ms(r["c1"]["latency"]["p50"]), "c1_p99": ms(r["c1"]["latency"]["p99"]),
                 "c1_ttfb": ms((r["c1"].get("ttfb") or {}).get("p50")),
                 "c32_rps": r["c32"]["rps"], "c32_p50": ms(r["c32"]["latency"]["p50"]),
                 "c32_p99": ms(r["c32"]["latency"]["p99"]),
                 "sat_rps": max(r["c32"]["rps"], (r.get("sat") or {}).get("rps", 0)),
                 "errors": r["c1"]["errors"] + r["c32"]["errors"] + (r.get("sat") or {}).get("errors", 0) + st["errors"],
                 "ev_p50": ms(st["delay"]["p50"]), "ev_p99": ms(st["delay"]["p99"]), "ev_max": ms(st["delay"]["max"]),
                 "ev_rate": st["events_per_s"], "delivered": st["delivered_events"] / max(1, st["expected_events"]),
                 "st_ttfb_p50": ms(st["ttfb"]["p50"]), "st_ttfb_p99": ms(st["ttfb"]["p99"]),
                 "last_error": r["c1"].get("last_error") or r["c32"].get("last_error") or st.get("last_error")}
            big, cw = r.get("big") or {}, st.get("cpu_window") or {}
            f.update({"body_kb": (r.get("body_bytes") or 0) / 1000 or None, "big_kb": (big.get("body_bytes") or 0) / 1000 or None,
                      "cpu_c1": r["c1"].get("cpu_us_per_req"), "cpu_c32": r["c32"].get("cpu_us_per_req"),
                      "cpu_big": big.get("cpu_us_per_req"),
                      "big_p50": ms((big.get("latency") or {}).get("p50")), "big_p99": ms((big.get("latency") or {}).get("p99")),
                      "cpu_ev": cw["cpu_s"] * 1e6 / cw["events"] if cw.get("events") else None,
                      "cpu_ev_n": cw.get("events")})
            f["errors"] += big.get("errors", 0)
            # The stream scenario with the Claude Code-sized body (fewer streams, same pace).
            bs = r.get("big_stream") or {}
            bcw = bs.get("cpu_window") or {}
            f.update({"bs_streams": bs.get("streams"), "bs_kb": (bs.get("body_bytes") or 0) / 1000 or None,
                      "bs_rate": bs.get("events_per_s"),
                      "bs_delivered": bs["delivered_events"] / max(1, bs["expected_events"]) if bs else None,
                      "bs_p50": ms((bs.get("delay") or {}).get("p50")), "bs_p99": ms((bs.get("delay") or {}).get("p99")),
                      "bs_max": ms((bs.get("delay") or {}).get("max")),
                      "bs_ttfb_p50": ms((bs.get("ttfb") or {}).get("p50")), "bs_ttfb_p99": ms((bs.get("ttfb") or {}).get("p99")),
                      "bs_cpu_ev": bcw["cpu_s"] * 1e6 / bcw["events"] if bcw.get("events") else None,
                      "bs_cpu_ev_n": bcw.get("events")})
            f["errors"] += bs.get("errors", 0)
            if not f["last_error"] and bs.get("last_error"):
                f["last_error"] = bs["last_error"]
            rows[name] = f
    for f in rows.values():   # added figures: this row minus its floor (difference of percentiles)
        floor = rows.get(f["floor"])
        for k in ("c1_p50", "c1_p99", "c32_p50", "c32_p99", "ev_p50", "ev_p99", "big_p50", "big_p99", "bs_p50", "bs_p99"):
            f["add_" + k] = None if floor is None or f[k] is None or floor[k] is None else f[k] - floor[k]
        f["x_c1_p50"] = f["c1_p50"] / floor["c1_p50"] if floor and floor["c1_p50"] else None
        f["x_sat_rps"] = f["sat_rps"] / floor["sat_rps"] if floor and floor["sat_rps"] else None
    return dict(sorted(rows.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99)), per_system


def fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:.{max(1, digits - 1)}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def factor(raw, other, higher_better=False) -> str:
    """How many times better rawproxy is (>1) or worse (<1)."""
    if raw is None or other is None or raw <= 0 or other <= 0:
        return "–"
    x = raw / other if higher_better else other / raw
    return f"×{x:.2f}" if x < 10 else f"×{x:.0f}"


COMPARE = [  # (label, key, source, higher_better)
    ("added p50 c=1 (ms)", "add_c1_p50", "row", False), ("added p99 c=1 (ms)", "add_c1_p99", "row", False),
    ("added p50 c=32 (ms)", "add_c32_p50", "row", False), ("added p99 c=32 (ms)", "add_c32_p99", "row", False),
    ("req/s at saturation", "sat_rps", "row", True),
    ("event added p50 (ms)", "add_ev_p50", "row", False), ("event added p99 (ms)", "add_ev_p99", "row", False),
    ("idle RSS (MB)", "idle_rss_mb", "sys", False), ("RSS, open streams (MB)", "loaded_rss_mb", "sys", False),
    ("cold start (s)", "cold_start_s", "sys", False), ("install size (MB)", "size_mb", "sys", False)]


def _val(rows, per_system, name, key, source):
    row = rows.get(name)
    if row is None:
        return None
    return row.get(key) if source == "row" else per_system[row["system"]].get(key)


def markdown(results: dict, rows: dict, per_system: dict, info: dict) -> tuple[str, str]:
    c, m = results["config"], info["machine"]
    cores = results["cores"]
    head = [f"# rawproxy benchmark, {info['date']}, commit {info['commit']} ({results['mode']} run)", "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB, Linux {m['kernel']}, "
            f"Python {m['python']}.",
            f"Pinned: mock upstream on core {cores['mock']}, load generator on core {cores['load']}, each system "
            f"under test on core {cores['system']} (all its processes). Plain load: {results['load_tool']}; streams: "
            f"own asyncio client. Durations: c=1 {c['c1']} s, c=32 {c['c32']} s"
            + (f", saturation c={c['sat_conc']} {c['sat']} s" if c["sat"] else "")
            + f", {c['streams']} streams x {c['rate']} events/s for {c['stream_secs']} s"
            + (f", {c['big_streams']} streams x {c['rate']} events/s with the ~50 KB body for {c['big_stream_secs']} s"
               if c.get("big_streams") else "")
            + "; warm-up before each. "
            f"Run took {results['elapsed_s']:.0f} s ({results.get('settle_s', 0):.0f} s of it waiting for systems "
            f"to go idle between measurements).", headroom(rows),
            f"Other processes on this machine (not the bench's) used {results.get('foreign_cpu', 0):.0%} of one core "
            f"on average during the run (per system below): figures taken while that is high are disturbed.", ""]
    t = ["| route | c=1 req/s | c=1 p50 | c=1 p99 | added p50 | added p99 | c=1 TTFB | c=32 req/s | c=32 p50 | "
         "c=32 p99 | added p50 | added p99 | sat. req/s | p50 ×direct | req/s ×direct | errors |",
         "|---" * 16 + "|"]
    for name, f in rows.items():
        t.append(f"| {name} | {fmt(f['c1_rps'])} | {fmt(f['c1_p50'])} | {fmt(f['c1_p99'])} | {fmt(f['add_c1_p50'])} | "
                 f"{fmt(f['add_c1_p99'])} | {fmt(f['c1_ttfb'])} | {fmt(f['c32_rps'])} | {fmt(f['c32_p50'])} | "
                 f"{fmt(f['c32_p99'])} | {fmt(f['add_c32_p50'])} | {fmt(f['add_c32_p99'])} | {fmt(f['sat_rps'])} | "
                 f"{fmt(f['x_c1_p50'], 2)} | {fmt(f['x_sat_rps'], 2)} | {f['errors']} |")
    s = ["| route | streams | events/s delivered | delivered | delay p50 | delay p99 | delay max | added p50 | "
         "added p99 | TTFB p50 | TTFB p99 |", "|---" * 11 + "|"]
    for name, f in rows.items():
        s.append(f"| {name} | {c['streams']} | {fmt(f['ev_rate'])} | {f['delivered']:.1%} | {fmt(f['ev_p50'])} | "
                 f"{fmt(f['ev_p99'])} | {fmt(f['ev_max'])} | {fmt(f['add_ev_p50'])} | {fmt(f['add_ev_p99'])} | "
                 f"{fmt(f['st_ttfb_p50'])} | {fmt(f['st_ttfb_p99'])} |")
    b = ["The same stream scenario with the Claude Code-sized request body of the big plain run: fewer streams, "
         "the same pace and length; added = minus the direct run's figure in this scenario.", "",
         "| route | streams | body (KB) | events/s delivered | delivered | delay p50 | delay p99 | delay max | "
         "added p50 | added p99 | TTFB p50 | TTFB p99 |", "|---" * 12 + "|"]
    for name, f in rows.items():
        if f["bs_streams"] is None:
            continue
        b.append(f"| {name} | {f['bs_streams']} | {fmt(f['bs_kb'], 1)} | {fmt(f['bs_rate'])} | {f['bs_delivered']:.1%} | "
                 f"{fmt(f['bs_p50'])} | {fmt(f['bs_p99'])} | {fmt(f['bs_max'])} | {fmt(f['add_bs_p50'])} | "
                 f"{fmt(f['add_bs_p99'])} | {fmt(f['bs_ttfb_p50'])} | {fmt(f['bs_ttfb_p99'])} |")
    u = ["CPU = utime + stime of the system's processes from /proc over the measured window, divided by the "
         "requests (or events) completed in it; it holds steady on a busy machine when latency does not. "
         "Events: from the moment every stream has its first event to the end.", "",
         "| route | body (KB) | CPU us/req c=1 | CPU us/req c=32 | big body (KB) | big c=1 p50 | big added p50 | "
         f"big added p99 | CPU us/req big | CPU us/event ({c['streams']} streams) | events counted | "
         f"CPU us/event ({c.get('big_streams', '')} big-body streams) | events counted |".replace("( ", "("),
         "|---" * 13 + "|"]
    for name, f in rows.items():
        if f.get("cpu_c32") is None and f.get("cpu_ev") is None and f.get("bs_cpu_ev") is None:
            continue
        u.append(f"| {name} | {fmt(f['body_kb'], 1)} | {fmt(f['cpu_c1'])} | {fmt(f['cpu_c32'])} | {fmt(f['big_kb'], 1)} | "
                 f"{fmt(f['big_p50'])} | {fmt(f['add_big_p50'])} | {fmt(f['add_big_p99'])} | {fmt(f['cpu_big'])} | "
                 f"{fmt(f['cpu_ev'])} | {fmt(f['cpu_ev_n'])} | {fmt(f['bs_cpu_ev'])} | {fmt(f['bs_cpu_ev_n'])} |")
    p = ["| system | processes | idle RSS (MB) | RSS with open streams (MB) | cold start (s) | install size (MB) | "
         "size measured as | other CPU load during its run |", "|---" * 8 + "|"]
    for v in per_system.values():
        if v["processes"] is None:
            continue
        open_ = f" ({v['loaded_open']}/{v['loaded_streams']} open)" if v["loaded_streams"] else ""
        p.append(f"| {v['label']} | {v['processes']} | {fmt(v['idle_rss_mb'], 1)} | {fmt(v['loaded_rss_mb'], 1)}{open_} "
                 f"| {fmt(v['cold_start_s'])} (best of {v['cold_tries']}) | {fmt(v['size_mb'], 1)} | {v['size_how']} "
                 f"| {v['foreign_cpu']:.0%} of a core |")
    cmp_ = ["Factor = how many times better rawproxy is (>1 better, <1 worse); rawproxy's value / the baseline's "
            "value in brackets. Added figures are differences of percentiles against the direct run.", "",
            "| rawproxy vs | " + " | ".join(lbl for lbl, *_ in COMPARE) + " |", "|---" * (len(COMPARE) + 1) + "|"]
    for other, raw in BASELINES:
        if other not in rows or raw not in rows:
            continue
        cells = []
        for _lbl, key, src, hb in COMPARE:
            ours, theirs = _val(rows, per_system, raw, key, src), _val(rows, per_system, other, key, src)
            cells.append(f"{factor(ours, theirs, hb)} ({fmt(ours, 2)} / {fmt(theirs, 2)})")
        cmp_.append(f"| {other} ({raw}) | " + " | ".join(cells) + " |")
    targets = target_checks(rows, per_system, c)
    notes = [f"- {k}: {v}" for k, v in results["notes"].items()] or ["- none"]
    errs = [f"- {n}: {f['last_error']}" for n, f in rows.items() if f["errors"] and f["last_error"]]
    body = (head + ["## Plain requests (latency in ms)", ""] + t
            + ["", f"## Streams: per-event delay, mock send -> client receipt (ms), {c['streams']} streams x "
               f"{c['rate']} events/s", ""] + s
            + (["", f"## Streams with a Claude Code-sized body: per-event delay (ms), {c['big_streams']} streams x "
                f"{c['rate']} events/s", ""] + b if len(b) > 4 else [])
            + ["", "## CPU per request and per event (proxy processes)", ""] + u
            + ["", "## Memory, start-up, size", ""] + p
            + ["", "## rawproxy against each baseline", ""] + cmp_
            + ["", "## Targets", ""] + targets + ["", "## Skipped or failed", ""] + notes
            + (["", "## Errors seen", ""] + errs if errs else []))
    return "\n".join(body) + "\n", "\n".join(t + [""] + s + [""] + b + [""] + u + [""] + p + [""] + targets)


def headroom(rows: dict) -> str:
    """The mock must never be the bottleneck: its rate in the direct run vs the proxies'."""
    floor = rows.get("direct")
    proxies = {n: f["sat_rps"] for n, f in rows.items() if not n.startswith(("direct", "nginx"))}
    if not floor or not proxies:
        return ""
    best = max(proxies, key=proxies.get)
    x = floor["sat_rps"] / proxies[best] if proxies[best] else float("inf")
    return (f"Mock headroom: the direct run reached {floor['sat_rps']:,.0f} req/s (mock and load generator sharing "
            f"one core), {x:.0f}x the fastest parsing proxy ({best}, {proxies[best]:,.0f} req/s)"
            + (": the mock is not the bottleneck." if x >= 3 else ": WARNING, under the 3x the bench needs."))


def target_checks(rows: dict, per_system: dict, cfg: dict) -> list[str]:
    """The issue's targets as pass/fail lines ("–": not measured), each from this run's own
    figures; "added" is the row minus the direct run of the client's dialect. Plus the
    big-body streams' CPU per event, for information (no target)."""
    out = []

    def check(label, value, limit, unit=""):
        if value is None:
            out.append(f"- –: {label} <= {limit}{unit} (not measured)")
            return
        out.append(f"- {'PASS' if value <= limit else 'FAIL'}: {label} <= {limit}{unit} (measured {fmt(value)}{unit})")
    streams = f"{cfg['streams']} streams x {cfg['rate']} events/s"
    for name, ev_cpu, ev_p99 in (("rawproxy same", 60, 3), ("rawproxy cross", 75, 5)):
        f = rows.get(name)
        if f is None:
            out.append(f"- –: {name}: not measured")
            continue
        check(f"{name}: CPU per event, {streams}", f["cpu_ev"], ev_cpu, " us")
        check(f"{name}: added per-event delay p99, {streams}", f["add_ev_p99"], ev_p99, " ms")
        check(f"{name}: CPU per plain request ({fmt(f['body_kb'], 1)} KB body, c=32)", f["cpu_c32"], 500, " us")
        check(f"{name}: CPU per request, Claude Code-sized body ({fmt(f['big_kb'], 1)} KB, c=1)", f["cpu_big"], 900, " us")
        check(f"{name}: added p50 latency at c=1 ({fmt(f['body_kb'], 1)} KB body)", f["add_c1_p50"], 0.4, " ms")
        if f["bs_cpu_ev"] is None:
            out.append(f"- info: {name}: CPU per event, big-body streams (no target): not measured")
        else:
            out.append(f"- info: {name}: CPU per event, {f['bs_streams']} streams x {cfg['rate']} events/s with the "
                       f"{fmt(f['bs_kb'], 1)} KB body (no target): measured {fmt(f['bs_cpu_ev'])} us")
    sysf = per_system.get("rawproxy-anthropic") or {}
    check("rawproxy idle RSS", sysf.get("idle_rss_mb"), 35, " MB")
    check("rawproxy cold start", sysf.get("cold_start_s"), 0.3, " s")
    return out


def write(results: dict) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = {"date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine()}
    results = {**info, **results}
    stem = f"{info['date']}-{info['commit']}" + ("-quick" if results["mode"] == "quick" else "")
    rows, per_system = figures(results)
    paths = {k: RESULTS / f"{stem}.{k}" for k in ("json", "md", "svg")}
    # The measurements first: a run of many minutes is not lost to a fault in the rendering.
    paths["json"].write_text(json.dumps({**results, "figures": rows, "per_system": per_system}, indent=1, default=str))
    md, table = markdown(results, rows, per_system, info)
    md += f"\n![latency and throughput per system]({stem}.svg)\n"
    paths["md"].write_text(md)
    paths["svg"].write_text(chart.svg(rows, f"{info['date']} {info['commit']} ({results['mode']})"))
    refresh_readme()
    return {**{k: str(v) for k, v in paths.items()}, "table": table}


def refresh_readme() -> None:
    """bench/README.md = the hand-written guide + the newest full run (else the newest quick one)."""
    runs = sorted(RESULTS.glob("*.md"), key=lambda p: p.stat().st_mtime)
    full = [p for p in runs if not p.stem.endswith("-quick")]
    latest = (full or runs)[-1] if runs else None
    guide = (HERE / "README.in.md").read_text()
    if latest is None:
        (HERE / "README.md").write_text(guide)
        return
    text = latest.read_text().replace("](", "](results/").replace("\n## ", "\n### ")
    text = text.replace("# rawproxy benchmark,", "## Latest run:", 1)
    (HERE / "README.md").write_text(guide + "\n" + text)
