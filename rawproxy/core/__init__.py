"""The pure core: no IO, no sockets, no clock beyond what callers pass in.

SSE framing (`sse`), ids and signatures (`ids`), errors and their shapes per dialect
(`errors`, `dialects`), settings as one frozen object (`settings`), the tap that keys each
tool-call turn (`tap`), remembered reasoning and the store protocol (`reasoning`),
message-field readers (`messages`), URL display (`urls`), metric primitives (`metrics`),
strict reading of the JSON clients send (`client_json`).
Imports nothing else of rawproxy.
"""
