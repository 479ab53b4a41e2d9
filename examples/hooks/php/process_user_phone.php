<?php
// process_user_phone (formerly process_phone_number): an employee's number from their Bitrix24 profile, in the
// form the PBX dials. Profiles often keep the desk extension written for people ("ext. 101", "доб. 101",
// "+7 343 272-30-33 доб. 101"): the directory needs the bare extension. Mobiles get the 8 format.
// Empty data would drop the number from the directory.
// In:  {"params": {"phone": "ext. 101"}, "call_full": null, "call_stage": null}
// Out: {"data": {"phone": "101"}, "state": "success"}
$in = json_decode(file_get_contents('php://stdin'), true);
$raw = (string)($in['params']['phone'] ?? '');
if (preg_match('/(?:ext\.?|доб\.?|x)\s*(\d+)\s*$/iu', $raw, $m)) {
    $phone = $m[1];
} else {
    $phone = preg_replace('/\D+/', '', $raw);
    if (strlen($phone) === 11 && $phone[0] === '7') {
        $phone = '8' . substr($phone, 1);
    }
}
echo json_encode(['data' => ['phone' => $phone], 'state' => 'success']);
