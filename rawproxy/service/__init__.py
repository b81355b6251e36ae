"""Running rawproxy: the command line (`cli`), serving and signals (`run`), logging
(`logs`), the worker supervisor (`supervisor`), `rawproxy claude|codex|env` (`launcher`).
The top layer: may import any other."""
