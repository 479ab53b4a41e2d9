<?php
// process_task_creation_params: the missed-call task's deadline falls within working hours (Mon–Fri 09:00–18:00):
// a deadline in the evening, at night or at the weekend moves to 12:00 of the next working day.
// In:  {"params": {"arNewTaskData": {"DEADLINE": "2026-11-27T20:15:00+03:00", "TITLE": "…", …}}, …}
// Out: {"data": {"arNewTaskData": {"DEADLINE": "2026-11-30T12:00:00+03:00"}}, "state": "success"}
$in = json_decode(file_get_contents('php://stdin'), true);
$task = $in['params']['arNewTaskData'];
if (empty($task['DEADLINE'])) {
    echo json_encode(['data' => ['arNewTaskData' => $task], 'state' => 'success']);
    exit(0);
}
$deadline = new DateTimeImmutable($task['DEADLINE']);
$working = fn($t) => (int)$t->format('N') <= 5 && (int)$t->format('G') >= 9 && (int)$t->format('G') < 18;
if (!$working($deadline)) {
    $day = (int)$deadline->format('G') < 9 ? $deadline : $deadline->modify('+1 day');
    while ((int)$day->format('N') > 5) {
        $day = $day->modify('+1 day');
    }
    $deadline = $day->setTime(12, 0);
}
$task['DEADLINE'] = $deadline->format('Y-m-d\TH:i:sP');
echo json_encode(['data' => ['arNewTaskData' => $task], 'state' => 'success']);
