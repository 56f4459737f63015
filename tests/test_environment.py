"""The README's configuration table lists exactly the environment variables the code reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_CODE = ("autocomplete", "embeddings", "config")


def variables_read() -> set[str]:
    """Every variable config/settings.py and config/gunicorn.py read, in a process of its own."""
    script = (
        "import json, config.settings, config.gunicorn\n"
        "from config.environment import READ\n"
        "print(json.dumps(sorted(READ)))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(json.loads(output))


def variables_documented() -> set[str]:
    """The backticked names in the first column of the README's configuration table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # past header and rule
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_the_readme_documents_exactly_the_variables_read() -> None:
    read, documented = variables_read(), variables_documented()
    assert read, "no environment variable was recorded"
    assert sorted(read - documented) == [], "read but not documented in the README"
    assert sorted(documented - read) == [], "documented in the README but never read"


def test_no_other_module_reads_the_environment_for_settings() -> None:
    # Settings come from config/environment.py alone, so the table above stays complete.
    pattern = re.compile(r"os\.(environ\.get|getenv)\(|os\.environ\[")
    offenders = [
        str(path.relative_to(ROOT))
        for package in PRODUCT_CODE
        for path in (ROOT / package).rglob("*.py")
        if path.name != "environment.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_index_storage_variable_becomes_a_storages_entry(tmp_path: Path) -> None:
    script = (
        "import json, config.settings as s\n"
        "print(json.dumps([s.STORAGES.get('autocomplete_indexes'), s.AUTOCOMPLETE.get('INDEX_STORAGE')]))\n"
    )
    storage = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": "indexes"}}
    env = {"PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "1", "AUTOCOMPLETE_VAR_DIR": str(tmp_path)}

    def run(value: str | None) -> subprocess.CompletedProcess[str]:
        extra = {} if value is None else {"AUTOCOMPLETE_INDEX_STORAGE": value}
        return subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env | extra, capture_output=True, text=True, check=False
        )

    assert json.loads(run(json.dumps(storage)).stdout) == [storage, "autocomplete_indexes"]
    assert json.loads(run(None).stdout) == [None, None]  # the local index directory, read in place
    refused = run('{"BACKEND": ')
    assert refused.returncode != 0 and "AUTOCOMPLETE_INDEX_STORAGE is not valid JSON" in refused.stderr
