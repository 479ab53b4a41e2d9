"""process_entity_creation_params: what ringlink creates for a caller the CRM does not know. This office keeps
callers as contacts (no leads), named after their number until a manager fills the name in, with the source
"CALLBACK" for calls to the callback line 74950000000 and "CALL" otherwise.

In:  {"params": {"type": "lead", "ASSIGNED_BY_ID": 2, "COMMENTS": "", "OPENED": "Y",
                 "PHONE": [{"VALUE": "89001234567", "VALUE_TYPE": "WORK"}], "SOURCE_ID": "CALL",
                 "TITLE": "89001234567 - Incoming call"}, "call_full": {…}, "call_stage": "…"}
Out: {"data": {"type": "contact", "NAME": "Caller 89001234567", "SOURCE_ID": "CALL"}, "state": "success"}
"""
import json
import sys

request = json.load(sys.stdin)
phones = request["params"].get("PHONE") or [{}]
phone = phones[0].get("VALUE", "")
line = (((request.get("call_full") or {}).get("channel") or {}).get("trunk") or {}).get("original", "")
print(json.dumps({"data": {
    "type": "contact",
    "NAME": f"Caller {phone}",
    "SOURCE_ID": "CALLBACK" if line == "74950000000" else "CALL",
}, "state": "success"}))
