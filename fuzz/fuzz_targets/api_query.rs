//! The control API's query parser and the validation of `reconfigure` parameters: no input
//! panics, and an accepted intent survives its KV encoding and renders without gaining lines.
#![no_main]

use std::collections::BTreeMap;

use flow_proxy::domain::{CatalogSnapshot, ServiceIntent, ServiceName};
use flow_proxy::plan::{PlanSettings, SlotTable, plan};
use flow_proxy::render::{RenderSettings, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let params = flow_proxy::api::parse_query(raw);
    let Ok(intent) = ServiceIntent::from_params(&params) else {
        return;
    };
    let kv: BTreeMap<String, String> = intent.to_kv_pairs().into_iter().collect();
    assert_eq!(
        ServiceIntent::from_kv(intent.name.as_str(), &kv).as_ref(),
        Ok(&intent)
    );
    let intents: BTreeMap<ServiceName, ServiceIntent> = [(intent.name.clone(), intent)].into();
    let p = plan(
        &intents,
        &CatalogSnapshot::new(),
        &SlotTable::default(),
        &PlanSettings::default(),
    );
    if let Ok(text) = render(&p, &RenderSettings::default()) {
        for line in text.as_str().lines() {
            assert!(!line.contains('\r'), "{line:?}");
        }
    }
});
