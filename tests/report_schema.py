"""Validation of report.json files against docs/report.schema.json, shared by the tests that write reports."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "report.schema.json"


def load_schema() -> dict:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def schema_errors(report: dict) -> list[str]:
    """Return each place where `report` breaks the schema, as 'path: message', so a failing test lists them all."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message[:300]}"
        for error in validator.iter_errors(report)
    ]


def assert_matches_schema(report_path: Path) -> dict:
    """Validate the report.json at `report_path` and return it."""
    report = json.loads(Path(report_path).read_text())
    errors = schema_errors(report)
    assert errors == [], "\n".join(errors[:20])
    return report
