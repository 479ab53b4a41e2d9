<?php
// process_originate_params: a click-to-call goes through another dialplan context (here "from-crm", which
// dials out through the office's second trunk); everything else stays as ringlink built it.
// In:  {"params": {"caller_id": "…", "channel": "PJSIP/101", "context": "from-internal", "extension": "…",
//                  "priority": "1"}, …}
// Out: {"data": {…, "context": "from-crm"}, "state": "success"}
$in = json_decode(file_get_contents('php://stdin'), true);
$params = $in['params'];
$params['context'] = 'from-crm';
echo json_encode(['data' => $params, 'state' => 'success']);
