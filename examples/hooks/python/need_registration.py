"""need_registration: a black list by trunk. Calls through these lines are not registered in the CRM; every other
call is left to ringlink's settings.

In:  {"params": {"type": "incoming", "from": "…", "to": "…", "trunk": "73432723033"}, "call_full": {…}, …}
Out: {"data": false, "state": "success"} to skip the call, {"data": true, …} to register it.
"""
import json
import re
import sys

BLACK_LIST = {"73432723033"}

request = json.load(sys.stdin)
trunk = request["params"].get("trunk") or (
    ((request.get("call_full") or {}).get("channel") or {}).get("trunk", {}).get("original", "")
)
digits = re.sub(r"\D+", "", str(trunk or ""))
print(json.dumps({"data": digits not in BLACK_LIST, "state": "success"}))
