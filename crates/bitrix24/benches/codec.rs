//! Client-side cost per request without the network: encoding the parameters of a typical call and
//! decoding a typical envelope into the typed result.

use std::hint::black_box;

use bitrix24::methods::crm::{CrmFields, CrmRecord, LeadAdd, MultifieldWrite};
use bitrix24::methods::telephony::{CallType, ExternalCallRegister, RegisteredCall};
use bitrix24::{decode_response, encode_form, Batch};
use criterion::{criterion_group, criterion_main, Criterion};

fn register_request() -> ExternalCallRegister {
    ExternalCallRegister {
        user_phone_inner: Some("101".into()),
        phone_number: "+79001234567".into(),
        call_type: CallType::Incoming,
        call_start_date: chrono::DateTime::parse_from_rfc3339("2026-03-07T10:20:30+03:00").ok(),
        crm_create: Some(true),
        line_number: Some("74950000000".into()),
        external_call_id: Some("asterisk-1710140185.18441/leg-1".into()),
        ..Default::default()
    }
}

const REGISTER_BODY: &[u8] = br#"{"result":{"CALL_ID":"externalCall.716f1cb73def9700a23842adf9c4c568.1773130779","CRM_CREATED_LEAD":null,"CRM_CREATED_ENTITIES":[],"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797},"time":{"start":1773130779.1,"finish":1773130779.4,"duration":0.3,"processing":0.29,"date_start":"2026-03-10T11:19:38+03:00","date_finish":"2026-03-10T11:19:38+03:00","operating_reset_at":1773131379,"operating":0.29}}"#;

fn lead_list_body() -> Vec<u8> {
    let items: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"ID":"{i}","TITLE":"Lead {i}","NAME":"Ann","LAST_NAME":"Lee","STATUS_ID":"NEW","SOURCE_ID":"CALL","ASSIGNED_BY_ID":"5","OPPORTUNITY":"0.00","DATE_CREATE":"2026-03-10T11:19:38+03:00","PHONE":[{{"ID":"{i}","VALUE_TYPE":"WORK","VALUE":"+7900123{i:04}","TYPE_ID":"PHONE"}}]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"result":[{}],"total":500,"next":50,"time":{{"start":1.0,"finish":1.1}}}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let register = register_request();
    c.bench_function("register: encode JSON + decode typed result", |b| {
        b.iter(|| {
            let params = serde_json::to_value(black_box(&register)).unwrap();
            let body = serde_json::to_vec(&params).unwrap();
            let envelope = decode_response("telephony.externalCall.register", 200, black_box(REGISTER_BODY)).unwrap();
            let call: RegisteredCall = serde_json::from_value(envelope.result).unwrap();
            black_box((body, call))
        })
    });

    let lead = LeadAdd {
        fields: CrmFields {
            title: Some("Incoming call +79001234567".into()),
            source_id: Some("CALL".into()),
            assigned_by_id: Some(5),
            phone: vec![MultifieldWrite::new("+79001234567", "WORK")],
            ..Default::default()
        },
        params: None,
    };
    c.bench_function("lead.add: encode PHP bracket form", |b| {
        b.iter(|| {
            let params = serde_json::to_value(black_box(&lead)).unwrap();
            black_box(encode_form(&params).unwrap())
        })
    });

    let list = lead_list_body();
    c.bench_function("lead.list: decode 50 records", |b| {
        b.iter(|| {
            let envelope = decode_response("crm.lead.list", 200, black_box(&list)).unwrap();
            let records: Vec<CrmRecord> = serde_json::from_value(envelope.result).unwrap();
            black_box(records)
        })
    });

    c.bench_function("batch: build 50 register commands", |b| {
        b.iter(|| {
            let mut batch = Batch::new();
            for i in 0..50 {
                batch.push_method(format!("r{i}"), black_box(&register)).unwrap();
            }
            black_box(batch.command_lines().unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
