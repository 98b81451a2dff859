//! Validated domain types for everything read from Consul that may one day reach an HAProxy
//! configuration, and the catalog snapshot built from them.
//!
//! Pure: this module must not do IO (no tokio, reqwest, filesystem or processes) and holds no
//! serde wire types. Values from the outside world enter only through the validating
//! constructors here; the Consul layer converts its wire types at the boundary.
//!
//! Operator intent (`reconfigure` parameters and their copy in Consul KV) is parsed by
//! [`ServiceIntent::from_params`] / [`ServiceIntent::from_kv`], one validation for both.

mod catalog;
mod cert_name;
mod health;
mod intent;
mod names;
mod redirect;
mod routing;
mod stats;
pub mod tag_intent;

pub use catalog::{CatalogSnapshot, Instance, Weights};
pub use cert_name::{CertName, CertNameError};
pub use health::Health;
pub use intent::{
    Color, CustomTemplates, DomainName, IntentError, KV_KEYS, MANDATORY_MESSAGE, PathPattern,
    PathType, RawParams, ReconfigureEcho, ServiceIntent, TemplatePath,
};
pub use names::{InstanceId, MetaKey, MetaValue, NodeName, ServiceName, Tag, ValidationError};
pub use redirect::RedirectCode;
pub use routing::{
    EchoValue, HeaderMatch, HeaderName, HeaderOp, HeaderRule, HeaderValue, Password, PathRegex,
    PathReplacement, PathRewrite, ROUTING_PARAMS, ReqMode, RoutingOptions, RoutingParams,
    SRC_PORT_MANDATORY, StickyKey, StickyKeyError, User, UserName, Users, check_conflicts,
    routing_echo,
};
pub use stats::{STATS_URI, StatsError, StatsPage};
