<?php
// process_client_phone (formerly process_phone_number): the client's number in the format the CRM keeps,
// +7 900 123-45-67 / 7900… → 8900….
// In:  {"params": {"phone": "+79001234567"}, "call_full": {…}, "call_stage": "conversation_requested"}
// Out: {"data": {"phone": "89001234567"}, "state": "success"}
$in = json_decode(file_get_contents('php://stdin'), true);
$phone = preg_replace('/\D+/', '', (string)($in['params']['phone'] ?? ''));
if (strlen($phone) === 11 && $phone[0] === '7') {
    $phone = '8' . substr($phone, 1);
}
echo json_encode(['data' => ['phone' => $phone], 'state' => 'success']);
