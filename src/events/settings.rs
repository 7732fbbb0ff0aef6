//! The events settings (`EVENTS_*`, `DAPR_*`), one block of [`crate::Settings`].

use std::time::Duration;

use crate::config::{ConfigError, Secret};

/// Where the relay publishes.
#[derive(Clone, Debug)]
pub enum SinkSettings {
    /// Log each event (ids only) and mark it delivered.
    Log,
    /// Dapr's publish API on the sidecar: the full URL (without query) and the optional
    /// `dapr-api-token`.
    Dapr {
        url: url::Url,
        api_token: Option<Secret>,
    },
    /// POST to a URL (a Knative broker, a webhook); any 2xx is success.
    Http { url: url::Url },
}

#[derive(Clone, Debug)]
pub struct EventSettings {
    pub sink: SinkSettings,
    /// The CloudEvents `source` of every event (`EVENTS_SOURCE`).
    pub source: String,
    /// Delivered events are pruned after this (`EVENTS_RETENTION_HOURS`).
    pub retention: Duration,
    /// Bound on one publish request (`EVENTS_SINK_TIMEOUT_SECONDS`).
    pub sink_timeout: Duration,
    /// The longest wait between two attempts at a failing sink (`EVENTS_RETRY_MAX_SECONDS`).
    pub retry_max: Duration,
    /// Open `text/event-stream` feeds allowed per user (`EVENTS_STREAMS_PER_USER`).
    pub streams_per_user: usize,
    /// How often the relay and the live feeds look for events committed by other instances
    /// (`EVENTS_POLL_MILLISECONDS`).
    pub poll_interval: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            sink: SinkSettings::Log,
            source: "todo-api".to_owned(),
            retention: Duration::from_secs(168 * 3600),
            sink_timeout: Duration::from_secs(3),
            retry_max: Duration::from_secs(30),
            streams_per_user: 5,
            poll_interval: Duration::from_millis(500),
        }
    }
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        reason: reason.into(),
    }
}

fn number(variable: &'static str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            invalid(
                variable,
                format!("must be a whole number from {min} to {max}"),
            )
        })
}

/// A Dapr component or topic name: it goes into the URL path as it is.
fn name(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !value.is_empty()
        && value != "."
        && value != ".."
    {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            variable,
            "must be letters, digits, '-', '_' or '.'",
        ))
    }
}

impl EventSettings {
    /// Reads the block through `get`, which yields only non-blank values.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some(value) = get("EVENTS_SOURCE") {
            let value = value.trim();
            // A URI-reference (CloudEvents 1.0 `source`): no spaces or control characters.
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "EVENTS_SOURCE",
                    "must be a URI reference such as todo-api or https://todo.example.com",
                ));
            }
            settings.source = value.to_owned();
        }
        if let Some(value) = get("EVENTS_RETENTION_HOURS") {
            settings.retention =
                Duration::from_secs(number("EVENTS_RETENTION_HOURS", &value, 1, 24 * 365)? * 3600);
        }
        if let Some(value) = get("EVENTS_SINK_TIMEOUT_SECONDS") {
            settings.sink_timeout =
                Duration::from_secs(number("EVENTS_SINK_TIMEOUT_SECONDS", &value, 1, 60)?);
        }
        if let Some(value) = get("EVENTS_RETRY_MAX_SECONDS") {
            settings.retry_max =
                Duration::from_secs(number("EVENTS_RETRY_MAX_SECONDS", &value, 1, 3600)?);
        }
        if let Some(value) = get("EVENTS_STREAMS_PER_USER") {
            settings.streams_per_user =
                number("EVENTS_STREAMS_PER_USER", &value, 1, 1000)? as usize;
        }
        if let Some(value) = get("EVENTS_POLL_MILLISECONDS") {
            settings.poll_interval =
                Duration::from_millis(number("EVENTS_POLL_MILLISECONDS", &value, 50, 10_000)?);
        }
        let sink = get("EVENTS_SINK").map(|v| v.trim().to_ascii_lowercase());
        settings.sink = match sink.as_deref() {
            None | Some("log") => SinkSettings::Log,
            Some("dapr") => {
                let port = match get("DAPR_HTTP_PORT") {
                    Some(value) => number("DAPR_HTTP_PORT", &value, 1, u16::MAX as u64)?,
                    None => 3500,
                };
                let pubsub = name(
                    "DAPR_PUBSUB_NAME",
                    &get("DAPR_PUBSUB_NAME").unwrap_or_else(|| "pubsub".into()),
                )?;
                let topic = name(
                    "EVENTS_TOPIC",
                    &get("EVENTS_TOPIC").unwrap_or_else(|| "task-events".into()),
                )?;
                let url = url::Url::parse(&format!(
                    "http://127.0.0.1:{port}/v1.0/publish/{pubsub}/{topic}"
                ))
                .map_err(|error| invalid("EVENTS_TOPIC", error.to_string()))?;
                SinkSettings::Dapr {
                    url,
                    api_token: get("DAPR_API_TOKEN").map(Secret::new),
                }
            }
            Some("http") => {
                let value = get("EVENTS_HTTP_URL").ok_or_else(|| {
                    invalid("EVENTS_HTTP_URL", "must be set when EVENTS_SINK=http")
                })?;
                let url = url::Url::parse(value.trim())
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
                    .ok_or_else(|| {
                        invalid("EVENTS_HTTP_URL", "must be an http:// or https:// URL")
                    })?;
                SinkSettings::Http { url }
            }
            Some(_) => return Err(invalid("EVENTS_SINK", "must be log, dapr or http")),
        };
        Ok(settings)
    }

    /// How long a relay's lease lasts: long enough for one publish to finish inside it,
    /// short enough that another instance takes over within a few seconds.
    pub fn lease_ttl(&self) -> Duration {
        self.sink_timeout + Duration::from_secs(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<EventSettings, ConfigError> {
        EventSettings::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn no_variables_give_the_documented_defaults() {
        let settings = parse(&[]).unwrap();
        assert!(matches!(settings.sink, SinkSettings::Log));
        assert_eq!(settings.source, "todo-api");
        assert_eq!(settings.retention, Duration::from_secs(168 * 3600));
        assert_eq!(settings.streams_per_user, 5);
    }

    #[test]
    fn dapr_builds_the_publish_url_from_its_variables() {
        let settings = parse(&[("EVENTS_SINK", "dapr")]).unwrap();
        let SinkSettings::Dapr { url, api_token } = settings.sink else {
            panic!("a Dapr sink");
        };
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:3500/v1.0/publish/pubsub/task-events"
        );
        assert!(api_token.is_none());
        let settings = parse(&[
            ("EVENTS_SINK", "DAPR"),
            ("DAPR_HTTP_PORT", "3601"),
            ("DAPR_PUBSUB_NAME", "kafka-pubsub"),
            ("EVENTS_TOPIC", "todo.tasks"),
            ("DAPR_API_TOKEN", "t0ken"),
        ])
        .unwrap();
        let SinkSettings::Dapr { url, api_token } = settings.sink else {
            panic!("a Dapr sink");
        };
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:3601/v1.0/publish/kafka-pubsub/todo.tasks"
        );
        assert_eq!(api_token.unwrap().expose(), "t0ken");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (vars, variable) in [
            (vec![("EVENTS_SINK", "kafka")], "EVENTS_SINK"),
            (vec![("EVENTS_SINK", "http")], "EVENTS_HTTP_URL"),
            (
                vec![("EVENTS_SINK", "http"), ("EVENTS_HTTP_URL", "ftp://x")],
                "EVENTS_HTTP_URL",
            ),
            (
                vec![("EVENTS_SINK", "dapr"), ("DAPR_HTTP_PORT", "0")],
                "DAPR_HTTP_PORT",
            ),
            (
                vec![("EVENTS_SINK", "dapr"), ("EVENTS_TOPIC", "a/b")],
                "EVENTS_TOPIC",
            ),
            (
                vec![("EVENTS_SINK", "dapr"), ("DAPR_PUBSUB_NAME", "..")],
                "DAPR_PUBSUB_NAME",
            ),
            (vec![("EVENTS_SOURCE", "todo api")], "EVENTS_SOURCE"),
            (
                vec![("EVENTS_RETENTION_HOURS", "0")],
                "EVENTS_RETENTION_HOURS",
            ),
            (
                vec![("EVENTS_STREAMS_PER_USER", "x")],
                "EVENTS_STREAMS_PER_USER",
            ),
            (
                vec![("EVENTS_POLL_MILLISECONDS", "1")],
                "EVENTS_POLL_MILLISECONDS",
            ),
        ] {
            let error = parse(&vars).unwrap_err();
            assert_eq!(error.variable, variable, "{vars:?}");
        }
    }
}
