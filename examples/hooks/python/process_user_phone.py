"""process_user_phone (formerly process_phone_number): an employee's number from their Bitrix24 profile, in the
form the PBX dials. Profiles often keep the desk extension written for people ("ext. 101", "доб. 101",
"+7 343 272-30-33 доб. 101"): the directory needs the bare extension. Mobiles get the 8 format.
Empty data would drop the number from the directory.

In:  {"params": {"phone": "ext. 101"}, "call_full": null, "call_stage": null}
Out: {"data": {"phone": "101"}, "state": "success"}
"""
import json
import re
import sys

request = json.load(sys.stdin)
raw = str(request["params"].get("phone", ""))
extension = re.search(r"(?:ext\.?|доб\.?|x)\s*(\d+)\s*$", raw, re.IGNORECASE)
if extension:
    phone = extension.group(1)
else:
    phone = re.sub(r"\D+", "", raw)
    if len(phone) == 11 and phone.startswith("7"):
        phone = "8" + phone[1:]
print(json.dumps({"data": {"phone": phone}, "state": "success"}))
