//! The template language: parsing and rendering any text never panics.
#![no_main]

use flow_proxy::ctmpl::{ServiceEntry, StaticSource, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse("fuzz", text) else {
        return;
    };
    let mut source = StaticSource::default();
    source.add_service(ServiceEntry {
        node: "node1".into(),
        id: "app_1".into(),
        name: "app".into(),
        address: "10.0.0.1".into(),
        port: 8080,
        tags: vec!["v1".into()],
        ..ServiceEntry::default()
    });
    source.set_key("config/a", "1");
    let _ = template.render(&source);
});
