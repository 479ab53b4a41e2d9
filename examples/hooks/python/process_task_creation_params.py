"""process_task_creation_params: the missed-call task's deadline falls within working hours (Mon–Fri 09:00–18:00):
a deadline in the evening, at night or at the weekend moves to 12:00 of the next working day.

In:  {"params": {"arNewTaskData": {"DEADLINE": "2026-11-27T20:15:00+03:00", "TITLE": "…", …}}, …}
Out: {"data": {"arNewTaskData": {"DEADLINE": "2026-11-30T12:00:00+03:00"}}, "state": "success"}
"""
import json
import sys
from datetime import datetime, timedelta

task = json.load(sys.stdin)["params"]["arNewTaskData"]
if task.get("DEADLINE"):
    deadline = datetime.fromisoformat(task["DEADLINE"])
    if not (deadline.weekday() < 5 and 9 <= deadline.hour < 18):
        day = deadline if deadline.hour < 9 else deadline + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        deadline = day.replace(hour=12, minute=0, second=0, microsecond=0)
    task["DEADLINE"] = deadline.isoformat()
print(json.dumps({"data": {"arNewTaskData": task}, "state": "success"}))
