"""Schemathesis against the served OpenAPI document: property-based requests to
every endpoint of a real ``python -m app`` (an admin key, any room), valid and
invalid, find no server error, no status or header the document does not
list, no reply that breaks its schema, no invalid input accepted and no
request without a key let through."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from app.api.keys import entry, new_key
from app.api.routes import ENDPOINTS

from ..processes import start_server

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance",
          "negative_data_rejection", "ignored_auth"]
EXAMPLES = 25  # per operation and phase


async def test_schemathesis_finds_nothing_wrong_with_the_api(tmp_path: Path) -> None:
    key = new_key()
    server, port = await start_server(
        tmp_path, "--api-rate", "1000000", "--api-burst", "1000000",
        env={"ROOMCAST_API_KEYS": entry("ops", "admin", "*", key)})
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is not installed: run `make test`"
    try:
        run = await asyncio.create_subprocess_exec(
            st, "run", f"http://127.0.0.1:{port}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {key}", "--checks", ",".join(CHECKS),
            "--max-examples", str(EXAMPLES), "--no-color", "--suppress-health-check", "all",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(run.communicate(), 300)
        report = output.decode(errors="replace")
        assert run.returncode == 0, report
        assert f"Tested: {len(ENDPOINTS)}" in report, report  # every operation
    finally:
        assert await server.stop() == 0
