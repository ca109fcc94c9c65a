"""Reading fairseq's ``--log-format json`` output back as records."""

import json
from typing import Dict, List


def read_json_log(text: str) -> Dict[str, List[Dict]]:
    """Records per tag ("train_inner", "train", "valid", ...) from fairseq-train/validate output.

    A json-format line looks like ``2026-... | INFO | train_inner | {"epoch": 1, "loss": "0.69", ...}``;
    numbers are turned back from strings into floats.
    """
    records: Dict[str, List[Dict]] = {}
    for line in text.splitlines():
        head, sep, payload = line.rpartition(" | ")
        if not sep or not payload.startswith("{"):
            continue
        try:
            record = json.loads(payload)
        except json.JSONDecodeError:
            continue
        tag = head.rsplit(" | ", 1)[-1].strip()
        records.setdefault(tag, []).append({key: _number(value) for key, value in record.items()})
    return records


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
