"""Where the Node.js end-to-end harness lives and a check that its packages are installed."""

from __future__ import annotations

import shutil
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parents[1] / "e2e" / "node"
# The package `@vamu/ai-jobs`, which the e2e producer drives the bridge through.
CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"


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


def require_node_client() -> Path:
    """Return clients/node, or raise telling how to build the package (`dist/`)."""
    if not (CLIENT_DIR / "dist" / "index.js").is_file():
        raise NodeHarnessMissing(
            f"{CLIENT_DIR / 'dist'} is missing: run `make node-client` "
            f"(or `npm ci && npm run build` in {CLIENT_DIR})"
        )
    return CLIENT_DIR
