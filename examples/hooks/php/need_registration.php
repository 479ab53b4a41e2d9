<?php
// need_registration: a black list by trunk. Calls through these lines are not registered in the CRM;
// every other call is left to ringlink's settings.
// In:  {"params": {"type": "incoming", "from": "…", "to": "…", "trunk": "73432723033"}, "call_full": {…}, …}
// Out: {"data": false, "state": "success"} to skip the call, {"data": true, …} to register it.
$black_list = ['73432723033'];
$in = json_decode(file_get_contents('php://stdin'), true);
$trunk = (string)($in['params']['trunk'] ?? ($in['call_full']['channel']['trunk']['original'] ?? ''));
$digits = preg_replace('/\D+/', '', $trunk);
echo json_encode(['data' => !in_array($digits, $black_list, true), 'state' => 'success']);
