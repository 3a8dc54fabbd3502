"""Where the Node.js end-to-end harness lives and a check that its packages are installed."""

from __future__ import annotations

import shutil
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parents[1] / "e2e" / "node"


class NodeHarnessMissing(RuntimeError):
    """Node.js or the harness's npm packages are not installed."""


def require_node_modules() -> Path:
    """Return the `node` executable, or raise telling how to install the harness packages."""
    node = shutil.which("node")
    if node is None:
        raise NodeHarnessMissing("Node.js is not on PATH; install Node.js 20 or newer")
    if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        raise NodeHarnessMissing(
            f"{NODE_DIR / 'node_modules'} is missing: run `make node-deps` "
            f"(or `npm ci --prefix {NODE_DIR}`)"
        )
    return Path(node)
