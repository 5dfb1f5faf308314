"""The signature checks docs/api.md gives users, in Python and in JavaScript,
run as written against what the server signs: a user copying them gets a
receiver that takes Roomcast's deliveries and refuses forged or old ones."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from app.hooks.webhook import sign

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "whsec_documented"
BODY = json.dumps({"webhook": "wh_1", "room": "ops", "events": [
    {"id": "ops:1", "type": "message", "message": {"text": "déploiement 🚀"}}]},
    ensure_ascii=False).encode()


def snippet(language: str) -> str:
    """The code block under ``<!-- verify: LANGUAGE -->`` in docs/api.md."""
    text = (ROOT / "docs" / "api.md").read_text()
    match = re.search(rf"<!-- verify: {language} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"docs/api.md has no {language} verification example"
    return match.group(1)


def cases() -> list[tuple[str, str, bytes, bool]]:
    """(secret, header, body, should verify)."""
    now = int(time.time())
    good = sign(SECRET, now, BODY)
    return [(SECRET, good, BODY, True),
            ("whsec_other", good, BODY, False),
            (SECRET, good, BODY.replace(b"ops:1", b"ops:2"), False),
            (SECRET, sign(SECRET, now - 600, BODY), BODY, False),  # replayed, ten minutes on
            (SECRET, good.replace("v1=", "v0="), BODY, False),
            (SECRET, "garbage", BODY, False)]


def test_the_python_example_verifies_what_the_server_signs() -> None:
    scope: dict[str, Any] = {}
    exec(snippet("python"), scope)  # noqa: S102 - the documented code, as a user runs it
    for secret, header, body, expected in cases():
        assert scope["verify"](secret, header, body) is expected, header


def test_the_javascript_example_verifies_what_the_server_signs(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is needed (make test installs it)"
    script = tmp_path / "verify.js"
    script.write_text(snippet("js") + """
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(([secret, header, body]) =>
  verify(secret, header, Buffer.from(body, "base64")))));
""")
    given = [[s, h, base64.b64encode(b).decode()] for s, h, b, _ in cases()]
    out = subprocess.run([node, str(script), json.dumps(given)], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert json.loads(out) == [expected for *_, expected in cases()]
