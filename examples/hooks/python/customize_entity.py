"""customize_entity (formerly get_updated_entity_fields / get_updated_lead_fields): at the end of a call, the lead
this connector created gets a title naming the line the client called.

In:  {"params": {"id": "…", "from": "…", "to": "…", "trunk": "73432723033", "type": "incoming", …}, …}
Out: {"data": {"TITLE": "Call to line 73432723033 from 89001234567"}, "state": "success"}
"""
import json
import sys

params = json.load(sys.stdin)["params"]
line = params.get("trunk") or params.get("to")
print(json.dumps({"data": {"TITLE": f"Call to line {line} from {params.get('from')}"}, "state": "success"}))
