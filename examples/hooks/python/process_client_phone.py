"""process_client_phone (formerly process_phone_number): the client's number in the format the CRM keeps,
+7 900 123-45-67 / 7900… → 8900….

In:  {"params": {"phone": "+79001234567"}, "call_full": {…}, "call_stage": "conversation_requested"}
Out: {"data": {"phone": "89001234567"}, "state": "success"}
"""
import json
import re
import sys

request = json.load(sys.stdin)
phone = re.sub(r"\D+", "", str(request["params"].get("phone", "")))
if len(phone) == 11 and phone.startswith("7"):
    phone = "8" + phone[1:]
print(json.dumps({"data": {"phone": phone}, "state": "success"}))
