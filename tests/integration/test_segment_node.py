"""CONTRACT §9 from a backend in Node: Segment's own ``@segment/analytics-node`` (``npm pack``
of a pinned version, installed with its dependencies into the ignored ``.cache/npm``, never
committed) run by a small script (``tests/data/analytics_node_shop.js``) pointed at a running
Pulse API. Its messages, drained by the real flow, are each in the warehouse exactly once,
enriched, and the anonymous part of the visit counts under the user who logged in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import RunningApi, require
from tests.integration.test_segment_sdks import assert_shop_visit
from tests.pipeline import drained_topics

pytestmark = pytest.mark.integration

NODE_SDK_VERSION = "3.1.0"  # @segment/analytics-node, as checked against Pulse (node >= 20)
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "npm"
SCRIPT = Path(__file__).resolve().parents[1] / "data" / "analytics_node_shop.js"


def _node_sdk() -> Path:
    """The ``node_modules`` holding @segment/analytics-node and its dependencies, cached:
    ``npm pack`` of the pinned version, then ``npm install`` of that tarball (no lock file,
    nothing saved, no audit) into a directory of the cache."""
    modules = CACHE / f"analytics-node-{NODE_SDK_VERSION}" / "node_modules"
    if (modules / "@segment" / "analytics-node" / "package.json").exists():
        return modules
    require(shutil.which("npm") is not None, "npm (Debian package npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        npm = {"check": True, "capture_output": True, "timeout": 300}
        subprocess.run(["npm", "pack", f"@segment/analytics-node@{NODE_SDK_VERSION}",
                        "--pack-destination", tmp], **npm)  # type: ignore[call-overload]  # fmt: skip
        [tgz] = Path(tmp).glob("*.tgz")
        staging = Path(tmp) / "install"
        subprocess.run(["npm", "install", "--no-save", "--no-package-lock", "--no-audit",
                        "--no-fund", "--prefix", str(staging), str(tgz)], **npm)  # type: ignore[call-overload]  # fmt: skip
        modules.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(modules, ignore_errors=True)
        shutil.move(staging / "node_modules", modules)  # whole, or not at all
    return modules


def test_analytics_node_visit_reaches_the_warehouse(
    api: RunningApi, warehouse_dsn: str, tmp_path: Path
) -> None:
    node = shutil.which("node")
    require(node is not None, "node (to run @segment/analytics-node)")
    assert node is not None
    modules = _node_sdk()
    anon, user = f"anon-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    args = json.dumps({"host": api.url, "key": api.keys["ingest"], "anon": anon, "user": user})
    done = subprocess.run(
        [node, str(SCRIPT), args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "NODE_PATH": str(modules)},
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    report = json.loads(done.stdout)
    assert report["errors"] == [] and report["responses"] == [200, 200], report
    assert not api.read(api.topics.dlq)

    with drained_topics(api.bootstrap, api.topics, warehouse_dsn, tmp_path, "node") as warehouse:
        assert_shop_visit(warehouse, user, report["sent"])
