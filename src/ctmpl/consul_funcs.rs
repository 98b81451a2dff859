//! consul-template's data functions over a [`DataSource`]: `service`, `services`, `key`,
//! `keyOrDefault`, `keyExists`, `ls`, `tree`, `safeLs`, `safeTree`, plus `byTag` and `byKey`.
//! Owns query parsing (`tag.name|filter`), health filtering, ordering, the field layout of the
//! records templates see, and dependency recording. Pure: data comes only from the data source.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::data::{CatalogService, HealthCheck, KvPair, ServiceEntry, ServiceQuery};
use super::error::RenderErrorKind;
use super::funcs::{Ctx, FResult, FuncError, PlainFn, arity, as_str, map_value, msg};
use super::value::{StructValue, Value};

pub(crate) fn lookup(name: &str) -> Option<PlainFn> {
    Some(match name {
        "service" => f_service,
        "services" => f_services,
        "key" => f_key,
        "keyOrDefault" => f_key_or_default,
        "keyExists" => f_key_exists,
        "ls" => |c, a| list_fn(c, a, "ls", false, is_ls_key),
        "tree" => |c, a| list_fn(c, a, "tree", false, is_tree_key),
        "safeLs" => |c, a| list_fn(c, a, "safeLs", true, is_ls_key),
        "safeTree" => |c, a| list_fn(c, a, "safeTree", true, is_tree_key),
        "byTag" => f_by_tag,
        "byKey" => f_by_key,
        _ => return None,
    })
}

const FILTERS: &[&str] = &["any", "passing", "warning", "critical", "maintenance"];

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses consul-template's `[tag.]name[|filter,filter...]` service query.
pub(crate) fn parse_service_query(s: &str) -> Result<ServiceQuery, String> {
    let (query, filter) = match s.split_once('|') {
        Some((q, f)) => (q, Some(f)),
        None => (s, None),
    };
    for (c, what) in [
        ('?', "query parameters"),
        ('@', "datacenters"),
        ('~', "\"near\" sorting"),
    ] {
        if query.contains(c) {
            return Err(format!("service {s:?}: {what} are not supported"));
        }
    }
    let (tag, name) = match query.rsplit_once('.') {
        Some((t, n)) => (Some(t), n),
        None => (None, query),
    };
    let name_ok = !name.is_empty() && name.chars().all(|c| is_word(c) || c == '-' || c == '/');
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.chars()
                .all(|c| is_word(c) || matches!(c, '=' | ':' | '-' | '.'))
    });
    if !name_ok || !tag_ok {
        return Err(format!("health.service: invalid format: {s:?}"));
    }
    let mut filters = Vec::new();
    match filter {
        None => filters.push("passing".to_string()),
        Some(f) => {
            if f.is_empty() || !f.chars().all(|c| is_word(c) || c == ',') {
                return Err(format!("health.service: invalid format: {s:?}"));
            }
            for part in f.split(',') {
                if part.is_empty() {
                    continue;
                }
                if !FILTERS.contains(&part) {
                    return Err(format!("health.service: invalid filter: {part:?} in {s:?}"));
                }
                filters.push(part.to_string());
            }
            filters.sort();
        }
    }
    Ok(ServiceQuery {
        name: name.to_string(),
        tag: tag.map(str::to_string),
        filters,
    })
}

fn data_err(e: super::data::DataError) -> FuncError {
    FuncError::Render(RenderErrorKind::Data(e))
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn record(type_name: &'static str, fields: Vec<(&'static str, Value)>) -> Value {
    Value::Struct(Rc::new(StructValue { type_name, fields }))
}

fn sorted_tags(tags: &[String]) -> Vec<String> {
    let mut t = tags.to_vec();
    t.sort();
    t
}

fn check_value(c: &HealthCheck) -> Value {
    record(
        "*api.HealthCheck",
        vec![
            ("Node", Value::str(c.node.as_str())),
            ("CheckID", Value::str(c.check_id.as_str())),
            ("Name", Value::str(c.name.as_str())),
            ("Status", Value::str(c.status.as_str())),
            ("Notes", Value::str(c.notes.as_str())),
            ("Output", Value::str(c.output.as_str())),
            ("ServiceID", Value::str(c.service_id.as_str())),
            ("ServiceName", Value::str(c.service_name.as_str())),
        ],
    )
}

fn service_value(e: &ServiceEntry) -> Value {
    let address = if e.address.is_empty() {
        &e.node_address
    } else {
        &e.address
    };
    record(
        "*dependency.HealthService",
        vec![
            ("Node", Value::str(e.node.as_str())),
            ("NodeID", Value::str(e.node_id.as_str())),
            ("NodeAddress", Value::str(e.node_address.as_str())),
            (
                "NodeTaggedAddresses",
                Value::string_map(&e.node_tagged_addresses),
            ),
            ("NodeMeta", Value::string_map(&e.node_meta)),
            ("ServiceMeta", Value::string_map(&e.service_meta)),
            ("Address", Value::str(address.as_str())),
            ("ID", Value::str(e.id.as_str())),
            ("Name", Value::str(e.name.as_str())),
            ("Tags", Value::string_list(&sorted_tags(&e.tags))),
            (
                "Checks",
                Value::list(e.checks.iter().map(check_value).collect()),
            ),
            ("Status", Value::str(e.aggregated_status())),
            ("Port", Value::Int(e.port)),
            (
                "Weights",
                record(
                    "api.AgentWeights",
                    vec![
                        ("Passing", Value::Int(e.weights.passing)),
                        ("Warning", Value::Int(e.weights.warning)),
                    ],
                ),
            ),
        ],
    )
}

fn f_service(ctx: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    if a.is_empty() {
        return Ok(Value::list(Vec::new()));
    }
    let parts = a.iter().map(as_str).collect::<Result<Vec<_>, _>>()?;
    if parts[0].is_empty() {
        return Ok(Value::list(Vec::new()));
    }
    let query = parse_service_query(&parts.join("|")).map_err(msg)?;
    ctx.deps.services.insert(query.clone());
    let mut entries = ctx
        .source
        .service(&query.name, query.tag.as_deref())
        .map_err(data_err)?;
    let any = query.filters.iter().any(|f| f == "any");
    entries.retain(|e| {
        query.tag.as_ref().is_none_or(|t| e.tags.contains(t))
            && (any || query.filters.iter().any(|f| f == e.aggregated_status()))
    });
    entries.sort_by(|x, y| x.node.cmp(&y.node).then_with(|| x.id.cmp(&y.id)));
    Ok(Value::list(entries.iter().map(service_value).collect()))
}

fn f_services(ctx: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    if !a.is_empty() {
        return Err(msg("datacenter and query arguments are not supported"));
    }
    ctx.deps.catalog_services = true;
    let mut list: Vec<CatalogService> = ctx.source.services().map_err(data_err)?;
    list.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(Value::list(
        list.iter()
            .map(|s| {
                let mut tags = sorted_tags(&s.tags);
                tags.dedup();
                record(
                    "*dependency.CatalogSnippet",
                    vec![
                        ("Name", Value::str(s.name.as_str())),
                        ("Tags", Value::string_list(&tags)),
                    ],
                )
            })
            .collect(),
    ))
}

/// Validates a key path as consul-template's KV queries do: one leading `/` is dropped and a
/// datacenter suffix is refused.
fn kv_path<'s>(name: &str, s: &'s str) -> Result<&'s str, FuncError> {
    if s.contains('@') {
        return Err(msg(format!("{name} {s:?}: datacenters are not supported")));
    }
    Ok(s.strip_prefix('/').unwrap_or(s))
}

fn f_key(ctx: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("key", &a, 1)?;
    let raw = as_str(&a[0])?;
    if raw.is_empty() {
        return Ok(Value::str(""));
    }
    let path = kv_path("key", raw)?;
    ctx.deps.keys.insert(path.to_string());
    match ctx.source.key(path).map_err(data_err)? {
        Some(v) => Ok(Value::str(v)),
        None => Err(FuncError::Render(RenderErrorKind::MissingKey(
            path.to_string(),
        ))),
    }
}

fn f_key_or_default(ctx: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("keyOrDefault", &a, 2)?;
    let path = kv_path("keyOrDefault", as_str(&a[0])?)?;
    let default = as_str(&a[1])?;
    ctx.deps.keys.insert(path.to_string());
    Ok(match ctx.source.key(path).map_err(data_err)? {
        Some(v) => Value::str(v),
        None => Value::str(default),
    })
}

fn f_key_exists(ctx: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("keyExists", &a, 1)?;
    let path = kv_path("keyExists", as_str(&a[0])?)?;
    ctx.deps.keys.insert(path.to_string());
    Ok(Value::Bool(
        ctx.source.key(path).map_err(data_err)?.is_some(),
    ))
}

fn is_ls_key(key: &str) -> bool {
    !key.is_empty() && !key.contains('/')
}

fn is_tree_key(key: &str) -> bool {
    !key.is_empty() && !key.ends_with('/')
}

fn pair_value(p: &KvPair, key: &str) -> Value {
    record(
        "*dependency.KeyPair",
        vec![
            ("Path", Value::str(p.key.as_str())),
            ("Key", Value::str(key)),
            ("Value", Value::str(p.value.as_str())),
            ("CreateIndex", int(p.create_index)),
            ("ModifyIndex", int(p.modify_index)),
            ("LockIndex", int(p.lock_index)),
            ("Flags", int(p.flags)),
            ("Session", Value::str(p.session.as_str())),
        ],
    )
}

fn list_fn(
    ctx: &mut Ctx<'_>,
    a: Vec<Value>,
    name: &str,
    refuse_empty: bool,
    keep: fn(&str) -> bool,
) -> FResult {
    arity(name, &a, 1)?;
    let raw = as_str(&a[0])?;
    if raw.is_empty() && !refuse_empty {
        return Ok(Value::list(Vec::new()));
    }
    let prefix = kv_path(name, raw)?;
    ctx.deps.prefixes.insert(prefix.to_string());
    let mut pairs = ctx.source.list(prefix).map_err(data_err)?;
    pairs.retain(|p| p.key.starts_with(prefix));
    pairs.sort_by(|x, y| x.key.cmp(&y.key));
    let folder = if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    let out: Vec<Value> = pairs
        .iter()
        .filter_map(|p| {
            let rel = p.key.strip_prefix(folder.as_str()).unwrap_or(&p.key);
            let rel = rel.trim_start_matches('/');
            keep(rel).then(|| pair_value(p, rel))
        })
        .collect();
    if out.is_empty() && refuse_empty {
        return Err(FuncError::Render(RenderErrorKind::EmptyPrefix(
            prefix.to_string(),
        )));
    }
    Ok(Value::list(out))
}

fn f_by_tag(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("byTag", &a, 1)?;
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    match &a[0] {
        Value::Nil => {}
        Value::List(items) => {
            for item in items.iter() {
                let tags = match item {
                    Value::Struct(s) => s.get("Tags"),
                    _ => None,
                };
                let Some(Value::List(tags)) = tags else {
                    return Err(msg(format!(
                        "byTag: wrong argument type {}",
                        item.type_name()
                    )));
                };
                for t in tags.iter() {
                    if let Value::Str(t) = t {
                        m.entry(t.to_string()).or_default().push(item.clone());
                    }
                }
            }
        }
        other => {
            return Err(msg(format!(
                "byTag: wrong argument type {}",
                other.type_name()
            )));
        }
    }
    Ok(map_value(
        m.into_iter().map(|(k, v)| (k, Value::list(v))).collect(),
        Value::list(Vec::new()),
    ))
}

fn f_by_key(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("byKey", &a, 1)?;
    let Value::List(items) = &a[0] else {
        return Err(msg(format!("wrong argument type {}", a[0].type_name())));
    };
    let mut m: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for item in items.iter() {
        let Value::Struct(s) = item else {
            return Err(msg(format!("wrong argument type {}", item.type_name())));
        };
        let Some(Value::Str(key)) = s.get("Key") else {
            return Err(msg(format!("wrong argument type {}", s.type_name)));
        };
        let (top, rest) = key.split_once('/').unwrap_or((key, ""));
        if rest.is_empty() {
            continue;
        }
        let mut pair = (**s).clone();
        for (n, v) in &mut pair.fields {
            if *n == "Key" {
                *v = Value::str(rest);
            }
        }
        m.entry(top.to_string())
            .or_default()
            .insert(rest.to_string(), Value::Struct(Rc::new(pair)));
    }
    Ok(map_value(
        m.into_iter()
            .map(|(k, v)| (k, map_value(v, Value::Nil)))
            .collect(),
        map_value(BTreeMap::new(), Value::Nil),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_queries_parse_like_consul_template() {
        let q = |s: &str| parse_service_query(s);
        let sq = |name: &str, tag: Option<&str>, f: &[&str]| ServiceQuery {
            name: name.into(),
            tag: tag.map(Into::into),
            filters: f.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(q("web"), Ok(sq("web", None, &["passing"])));
        assert_eq!(q("web|any"), Ok(sq("web", None, &["any"])));
        assert_eq!(q("prod.web"), Ok(sq("web", Some("prod"), &["passing"])));
        assert_eq!(q("a.b.web"), Ok(sq("web", Some("a.b"), &["passing"])));
        assert_eq!(
            q("web|warning,passing"),
            Ok(sq("web", None, &["passing", "warning"]))
        );
        assert_eq!(q("go-demo|any"), Ok(sq("go-demo", None, &["any"])));
        assert!(q("web|bogus").unwrap_err().contains("invalid filter"));
        assert!(q("web@dc1").unwrap_err().contains("datacenters"));
        assert!(q("we b").unwrap_err().contains("invalid format"));
        assert!(q(".web").unwrap_err().contains("invalid format"));
    }
}
