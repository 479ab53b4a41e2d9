"""process_originate_params: a click-to-call goes through another dialplan context (here "from-crm", which dials
out through the office's second trunk); everything else stays as ringlink built it.

In:  {"params": {"caller_id": "…", "channel": "PJSIP/101", "context": "from-internal", "extension": "…",
                 "priority": "1"}, …}
Out: {"data": {…, "context": "from-crm"}, "state": "success"}
"""
import json
import sys

params = json.load(sys.stdin)["params"]
params["context"] = "from-crm"
print(json.dumps({"data": params, "state": "success"}))
