<?php
// get_search_filter: which of the CRM entities found for the client's number the call is registered with. This
// office works leads first (a returning caller usually has an open lead), then contacts, then companies; among
// entities of one type, the newest (highest ID). Empty "entities" would register the call without any.
// In:  {"params": {"phone": "89001234567", "entities": [{"type": "contact", "id": 5}, {"type": "lead", "id": 12}]}, …}
// Out: {"data": {"entities": [{"type": "lead", "id": 12}, {"type": "contact", "id": 5}]}, "state": "success"}
$in = json_decode(file_get_contents('php://stdin'), true);
$entities = $in['params']['entities'] ?? [];
$rank = ['lead' => 0, 'contact' => 1, 'company' => 2];
usort($entities, function ($a, $b) use ($rank) {
    $ra = $rank[$a['type']] ?? 3;
    $rb = $rank[$b['type']] ?? 3;
    return $ra === $rb ? $b['id'] <=> $a['id'] : $ra <=> $rb;
});
echo json_encode(['data' => ['entities' => $entities], 'state' => 'success']);
