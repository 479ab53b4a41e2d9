"""get_search_filter: which of the CRM entities found for the client's number the call is registered with. This
office works leads first (a returning caller usually has an open lead), then contacts, then companies; among
entities of one type, the newest (highest ID). Empty "entities" would register the call without any.

In:  {"params": {"phone": "89001234567", "entities": [{"type": "contact", "id": 5}, {"type": "lead", "id": 12}]}, …}
Out: {"data": {"entities": [{"type": "lead", "id": 12}, {"type": "contact", "id": 5}]}, "state": "success"}
"""
import json
import sys

request = json.load(sys.stdin)
entities = request["params"].get("entities", [])
rank = {"lead": 0, "contact": 1, "company": 2}
entities.sort(key=lambda e: (rank.get(e["type"], 3), -int(e["id"])))
print(json.dumps({"data": {"entities": entities}, "state": "success"}))
