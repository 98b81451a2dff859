//! JSON of the routing parameters echoed in a `reconfigure` answer (`Users`, `ReqMode`, ...),
//! in the order and with the types the domain gives.
//!
//! Must not: decide which fields appear (that is `domain::routing_echo`).

use serde_json::{Map, Value, json};

use crate::domain::EchoValue;

/// The echoed fields as a JSON object, in order (serde_json keeps insertion order here).
pub(super) fn echo_fields(fields: Vec<(&'static str, EchoValue)>) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(name, value)| {
            let v = match value {
                EchoValue::Str(s) => Value::String(s),
                EchoValue::Bool(b) => Value::Bool(b),
                EchoValue::Int(n) => Value::from(n),
                EchoValue::List(l) => json!(l),
                EchoValue::Map(m) => json!(m),
                EchoValue::Users(users) => Value::Array(
                    users
                        .into_iter()
                        .map(|(u, e)| json!({"Username": u, "PassEncrypted": e}))
                        .collect(),
                ),
            };
            (name.to_owned(), v)
        })
        .collect()
}
