<?php
// customize_autodistribution: key accounts always ring the key-account desk (extension 105), whatever the CRM
// says; a caller known only as a lead takes the normal route (the queue: whoever is free answers a new
// prospect); everyone else rings the manager the CRM names.
// In:  {"params": {"phone": "89001234567", "extension": "102", "user_id": 2, "entity_type": "CONTACT",
//                  "entity_id": 7}, …}
// Out: {"data": {"extension": "105"}, "state": "success"}   ("extension": "" = normal route)
const KEY_ACCOUNTS = ['89001112233', '89004445566'];
const KEY_ACCOUNT_DESK = '105';

$in = json_decode(file_get_contents('php://stdin'), true);
$params = $in['params'];
$extension = $params['extension'] ?? '';
if (in_array($params['phone'] ?? '', KEY_ACCOUNTS, true)) {
    $extension = KEY_ACCOUNT_DESK;
} elseif (strtoupper((string) ($params['entity_type'] ?? '')) === 'LEAD') {
    $extension = '';
}
echo json_encode(['data' => ['extension' => $extension], 'state' => 'success']);
