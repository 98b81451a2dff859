//! Aggregated instance health.

use std::fmt;

/// The health of one instance, ordered from best to worst.
///
/// Aggregation follows Consul's `AggregatedStatus`: maintenance > critical > warning >
/// passing, and no checks at all means passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Health {
    /// All checks pass (or there are none).
    #[default]
    Passing,
    /// At least one check warns and none is critical.
    Warning,
    /// At least one check is critical.
    Critical,
    /// The node or the service is in maintenance mode.
    Maintenance,
}

impl Health {
    /// Aggregates several check results: the worst one wins; an empty input is passing.
    pub fn aggregate(checks: impl IntoIterator<Item = Health>) -> Health {
        checks.into_iter().max().unwrap_or(Health::Passing)
    }

    /// Lower-case name, as Consul spells the statuses.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
            Health::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Health::*;
    use super::*;

    #[test]
    fn aggregation_rule() {
        assert_eq!(Health::aggregate([]), Passing);
        assert_eq!(Health::aggregate([Passing, Passing]), Passing);
        assert_eq!(Health::aggregate([Passing, Warning]), Warning);
        assert_eq!(Health::aggregate([Warning, Critical, Passing]), Critical);
        assert_eq!(Health::aggregate([Critical, Maintenance]), Maintenance);
        assert_eq!(Health::aggregate([Maintenance, Passing]), Maintenance);
    }
}
