"""customize_autodistribution: key accounts always ring the key-account desk (extension 105), whatever the CRM
says; a caller known only as a lead takes the normal route (the queue: whoever is free answers a new prospect);
everyone else rings the manager the CRM names.

In:  {"params": {"phone": "89001234567", "extension": "102", "user_id": 2, "entity_type": "CONTACT",
                 "entity_id": 7}, …}
Out: {"data": {"extension": "105"}, "state": "success"}   ("extension": "" = normal route)
"""
import json
import sys

KEY_ACCOUNTS = {"89001112233", "89004445566"}
KEY_ACCOUNT_DESK = "105"

params = json.load(sys.stdin)["params"]
extension = params.get("extension", "")
if params.get("phone") in KEY_ACCOUNTS:
    extension = KEY_ACCOUNT_DESK
elif str(params.get("entity_type", "")).upper() == "LEAD":
    extension = ""
print(json.dumps({"data": {"extension": extension}, "state": "success"}))
