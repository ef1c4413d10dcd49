"""The JSON Schema of the config, for editors: the pydantic models plus both registries."""

from __future__ import annotations

from typing import Any

from mailrules.config.model import ConfigModel
from mailrules.notify.model import NotifierModel
from mailrules.rules.actions import ACTIONS
from mailrules.rules.conditions import CONDITIONS, HEADER_MODIFIERS


def json_schema() -> dict[str, Any]:
    schema = ConfigModel.model_json_schema()
    defs = schema.setdefault("$defs", {})
    notifier = NotifierModel.model_json_schema(ref_template="#/$defs/{model}")
    defs.update(notifier.pop("$defs", {}))
    defs["NotifierModel"] = notifier
    schema["properties"]["notifiers"]["additionalProperties"] = {"$ref": "#/$defs/NotifierModel"}
    condition_props: dict[str, Any] = {
        name: {**spec.schema, "description": spec.summary} for name, spec in CONDITIONS.items()
    }
    for modifier in HEADER_MODIFIERS:
        condition_props.setdefault(
            modifier,
            {
                "type": "boolean" if modifier in ("exists", "case_sensitive") else "string",
                "description": f"with 'header': {modifier}",
            },
        )
    condition_object = {
        "type": "object",
        "description": "Conditions; several in one mapping must all hold.",
        "properties": condition_props,
        "additionalProperties": False,
        "minProperties": 1,
    }
    defs["condition"] = {
        "anyOf": [condition_object, {"type": "array", "items": {"$ref": "#/$defs/condition"}}]
    }
    action_items: list[dict[str, Any]] = [
        {
            "type": "object",
            "description": spec.summary,
            "properties": {name: spec.schema},
            "required": [name],
            "additionalProperties": False,
        }
        for name, spec in ACTIONS.items()
    ]
    bare = [name for name, spec in ACTIONS.items() if spec.bare]
    action_items.append({"type": "string", "enum": bare})
    defs["action"] = {"anyOf": action_items}
    defs["actions"] = {
        "anyOf": [
            {"$ref": "#/$defs/action"},
            {"type": "array", "items": {"$ref": "#/$defs/action"}},
        ]
    }
    rule = defs["RuleModel"]["properties"]
    rule["when"] = {"$ref": "#/$defs/condition", "description": rule["when"]["description"]}
    rule["then"] = {"$ref": "#/$defs/actions", "description": rule["then"]["description"]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mailrules config"
    return schema
