#!/usr/bin/env python3
"""Checks the event contract in proto/.

* every schema is a valid draft 2020-12 schema whose $id ends in its file name;
* every per-message schema carries $defs identical to money.schema.json (no drift);
* every example in examples/valid/ passes its schema, with format checking on;
* every example in examples/invalid/ fails its schema, even with format checking
  off (validators such as the Rust `jsonschema` crate skip `format` by default, so
  the patterns must catch the same mistakes);
* valid examples are consistent in ways the schema cannot say (type equals the file
  name prefix, data.account_id equals subject);
* every file asyncapi.yaml points at exists.

The schema for an example is chosen by the part of its file name before `--`
(task.scheduled, task.due and task.cancelled share task.schema.json;
arrangement.broken and arrangement.kept share arrangement.outcome.schema.json).

Needs: pip install jsonschema rfc3339-validator pyyaml
Usage: python3 proto/check.py [-v]
"""
import json
import re
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
EXAMPLES = HERE / "examples"
VERBOSE = "-v" in sys.argv[1:]

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def require_format_support():
    # Without rfc3339-validator, jsonschema silently skips "date-time": the
    # offset-less example would then be caught only by the pattern. Insist on it.
    checker = Draft202012Validator.FORMAT_CHECKER
    if checker.conforms("2026-11-04T15:00:00", "date-time"):
        sys.exit("date-time format checking is off: pip install rfc3339-validator")


def schema_for(stem):
    ty = stem.split("--", 1)[0]
    if ty.startswith("task."):
        name = "task"
    elif ty in ("arrangement.broken", "arrangement.kept"):
        name = "arrangement.outcome"
    else:
        name = ty
    return ty, SCHEMAS / f"{name}.schema.json"


def main():
    require_format_support()
    shared = load(SCHEMAS / "money.schema.json")
    validators = {}
    no_format = {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = load(path)
        Draft202012Validator.check_schema(schema)
        if not schema.get("$id", "").endswith("/" + path.name):
            fail(f"{path.name}: $id {schema.get('$id')!r} does not end in its file name")
        if path.name != "money.schema.json" and schema.get("$defs") != shared["$defs"]:
            fail(f"{path.name}: $defs differ from money.schema.json")
        validators[path] = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        no_format[path] = Draft202012Validator(schema)

    counts = {"valid": 0, "invalid": 0}
    for kind in ("valid", "invalid"):
        for path in sorted((EXAMPLES / kind).glob("*.json")):
            rel = f"{kind}/{path.name}"
            if not re.fullmatch(r"[a-z]+\.[a-z]+--[a-z0-9-]+", path.stem):
                fail(f"{rel}: name is not <type>--<case>.json")
                continue
            ty, schema_path = schema_for(path.stem)
            if schema_path not in validators:
                fail(f"{rel}: no schema {schema_path.name}")
                continue
            doc = load(path)
            errors = list(validators[schema_path].iter_errors(doc))
            counts[kind] += 1
            if kind == "valid":
                for e in errors:
                    fail(f"{rel}: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
                if doc.get("type") != ty:
                    fail(f"{rel}: type {doc.get('type')!r} does not match the file name")
                data = doc.get("data") or {}
                if data.get("account_id") != doc.get("subject"):
                    fail(f"{rel}: data.account_id differs from subject")
                if not errors and VERBOSE:
                    print(f"ok   {rel}")
            else:
                if not errors:
                    fail(f"{rel}: passed its schema but should fail")
                elif no_format[schema_path].is_valid(doc):
                    fail(f"{rel}: fails only by `format`; add a pattern that catches it")
                elif VERBOSE:
                    e = best_match(errors)
                    where = "/".join(map(str, e.absolute_path)) or "<root>"
                    print(f"ok   {rel}: rejected at {where}: {e.message[:90]}")

    asyncapi = (HERE / "asyncapi.yaml").read_text(encoding="utf-8")
    for ref in sorted(set(re.findall(r"\$ref:\s*['\"]?(\./schemas/[^#'\"\s]+)", asyncapi))):
        if not (HERE / ref).is_file():
            fail(f"asyncapi.yaml: $ref {ref} does not exist")
    try:
        import yaml  # optional: only to prove the document parses
        yaml.safe_load(asyncapi)
    except ImportError:
        pass

    print(
        f"{len(validators)} schemas, {counts['valid']} valid and {counts['invalid']} invalid examples, "
        f"{len(failures)} failure(s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
