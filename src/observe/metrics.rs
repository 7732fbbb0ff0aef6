//! The service's counters and gauges, in one `prometheus-client` registry: responses by
//! status are counted as they happen; values other parts own (the hashing queue, JWKS fetch
//! failures, later the event relay's lag) are read at each scrape through [`Metrics::sample_gauge`]
//! and [`Metrics::sample_counter`].

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
    },
    registry::Registry,
};

/// The `Content-Type` of the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

pub struct Metrics {
    registry: Registry,
    responses: Family<StatusLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with `http_responses_total{status}`; add sampled values before sharing it.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let responses = Family::<StatusLabel, Counter>::default();
        registry.register(
            "http_responses",
            "Responses sent, by status code (499: the client went away before the response)",
            responses.clone(),
        );
        Self {
            registry,
            responses,
        }
    }

    /// Counts one response with `status`.
    pub fn count_response(&self, status: u16) {
        self.responses.get_or_create(&StatusLabel { status }).inc();
    }

    /// How many responses with `status` were counted.
    pub fn responses(&self, status: u16) -> u64 {
        self.responses.get_or_create(&StatusLabel { status }).get()
    }

    /// A gauge whose value `read` gives at each scrape. `name` is a Prometheus metric name
    /// (`[a-z_][a-z0-9_]*`), unique in the registry.
    pub fn sample_gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.registry.register_collector(Box::new(Sampled {
            name,
            help,
            read: Reading::Gauge(Box::new(read)),
        }));
    }

    /// A counter (a value that only grows) that `read` gives at each scrape; exposed as
    /// `<name>_total`.
    pub fn sample_counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.registry.register_collector(Box::new(Sampled {
            name,
            help,
            read: Reading::Counter(Box::new(read)),
        }));
    }

    /// The whole registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; a collector's error would leave a partial text.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "could not encode the metrics");
        }
        text
    }
}

type Read<T> = Box<dyn Fn() -> T + Send + Sync>;

enum Reading {
    Gauge(Read<i64>),
    Counter(Read<u64>),
}

struct Sampled {
    name: &'static str,
    help: &'static str,
    read: Reading,
}

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampled").field("name", &self.name).finish()
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        match &self.read {
            Reading::Gauge(read) => {
                let gauge = ConstGauge::new(read());
                let metric =
                    encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
                gauge.encode(metric)
            }
            Reading::Counter(read) => {
                let counter = ConstCounter::new(read());
                let metric =
                    encoder.encode_descriptor(self.name, self.help, None, counter.metric_type())?;
                counter.encode(metric)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_sampled_values_appear_in_the_text_format() {
        let mut metrics = Metrics::new();
        metrics.sample_gauge("queue_depth", "Waiting jobs", || 3);
        metrics.sample_counter("fetch_failures", "Failed fetches", || 2);
        metrics.count_response(503);
        metrics.count_response(503);
        metrics.count_response(429);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE http_responses_total counter"),
            "{text}"
        );
        assert!(
            text.contains("http_responses_total{status=\"503\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("http_responses_total{status=\"429\"} 1"),
            "{text}"
        );
        assert!(text.contains("queue_depth 3"), "{text}");
        assert!(text.contains("fetch_failures_total 2"), "{text}");
    }
}
