<?php
// customize_entity (formerly get_updated_entity_fields / get_updated_lead_fields): at the end of a call, the lead
// this connector created gets a title naming the line the client called.
// In:  {"params": {"id": "…", "from": "…", "to": "…", "trunk": "73432723033", "type": "incoming", …}, …}
// Out: {"data": {"TITLE": "Call to line 73432723033 from 89001234567"}, "state": "success"}
$in = json_decode(file_get_contents('php://stdin'), true);
$p = $in['params'];
$line = $p['trunk'] ?: $p['to'];
echo json_encode(['data' => ['TITLE' => "Call to line $line from {$p['from']}"], 'state' => 'success']);
