//! [`Declared`]: a metric family that is exposed from the start. `prometheus-client` leaves a
//! family out of `/metrics` until its first sample exists, so dashboards and alerts would not
//! know it; a declared family always shows its `# HELP` and `# TYPE`, with no samples until
//! something happens.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;

/// A metric (usually a `Family`) that is encoded even while it holds no sample. Register
/// `Declared(family.clone())` and keep updating the family: clones share their series.
#[derive(Debug, Clone)]
pub struct Declared<M>(pub M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn an_empty_declared_family_is_described() {
        let mut registry = Registry::default();
        let declared: Family<Vec<(String, String)>, Counter> = Family::default();
        let hidden: Family<Vec<(String, String)>, Counter> = Family::default();
        registry.register("declared_ops", "Operations.", Declared(declared.clone()));
        registry.register("hidden_ops", "Operations.", hidden);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("# TYPE declared_ops counter"), "{text}");
        assert!(!text.contains("hidden_ops"), "{text}");
        declared
            .get_or_create(&vec![("op".into(), "start".into())])
            .inc();
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("declared_ops_total{op=\"start\"} 1"),
            "{text}"
        );
    }
}
