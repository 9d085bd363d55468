"""The mapping file: renames AsyncAPI `info.title`s to the service names traces carry.

    # choreoscope-mapping.yaml
    services:
      "Order Service API": order-service

Found by its name (`choreoscope-mapping.yaml`, `.yml` or `.json`), given as a file or lying in a
directory given to --intended. It applies to every AsyncAPI document loaded together with it.
"""

from __future__ import annotations

from pathlib import Path

from choreoscope.analysis.intended.source import Document

MAPPING_NAMES = ("choreoscope-mapping.yaml", "choreoscope-mapping.yml", "choreoscope-mapping.json")


def is_mapping_file(path: str | Path) -> bool:
    return Path(path).name in MAPPING_NAMES


def parse_mapping(doc: Document) -> dict[str, str]:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise doc.error(["services"], 'expected `services: {"<AsyncAPI info.title>": <service name>}`')
    extra = sorted(set(data) - {"services"})
    if extra:
        raise doc.error([extra[0]], "unknown key; a mapping file holds only `services`")
    for title, name in data["services"].items():
        if not isinstance(name, str) or not name:
            raise doc.error(["services", title], "expected the service name (a non-empty string)")
    return {str(k): v for k, v in data["services"].items()}
