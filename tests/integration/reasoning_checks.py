"""What the simulator received, read back for assertions about replayed reasoning."""

from __future__ import annotations


def replayed_reasoning(body: dict, dialect: str) -> list[str | None]:
    """The reasoning each assistant tool-call turn of one upstream request carried."""
    out: list[str | None] = []
    for msg in body["messages"]:
        if msg.get("role") != "assistant":
            continue
        if dialect == "openai":
            if msg.get("tool_calls"):
                out.append(msg.get("reasoning_content"))
        elif isinstance(msg.get("content"), list) and any(b.get("type") == "tool_use" for b in msg["content"]):
            thinking = [b["thinking"] for b in msg["content"] if b.get("type") == "thinking"]
            out.append("".join(thinking) if thinking else None)
    return out


def assert_real_reasoning_replayed(sim) -> int:
    """Every replayed tool-call turn carried the reasoning the simulator produced for it.

    Checked on every request the simulator answered after the first: the i-th assistant
    tool-call turn in its history must carry exactly the reasoning of the i-th tool-call
    answer the simulator gave in this conversation. Returns how many turns were checked.
    """
    emitted = [t["reasoning"] for t in sim.turns() if t["tool_calls"]]
    checked = 0
    for record in sim.requests():
        if record["status"] != 200 or not isinstance(record["body"], dict):
            continue
        replayed = replayed_reasoning(record["body"], record["dialect"])
        assert replayed == emitted[: len(replayed)], (replayed, emitted)
        checked += len(replayed)
    assert checked > 0, "no tool-call turn was replayed"
    return checked
