//! Where the relay publishes: the log, a Dapr sidecar, or any HTTP endpoint.
//!
//! Dapr: `POST http://127.0.0.1:{DAPR_HTTP_PORT}/v1.0/publish/{pubsub}/{topic}
//! ?metadata.partitionKey={owner}` with `Content-Type: application/cloudevents+json`, so Dapr
//! forwards our CloudEvent as it is (without that type it wraps the body in one of its own),
//! and one user's events keep their order in one Kafka partition. Dapr answers 204 when the
//! broker took the event; anything else is a failure to retry.

use reqwest::{StatusCode, header};

use super::{
    record::StoredEvent,
    settings::{EventSettings, SinkSettings},
};
use crate::config::Secret;

const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

pub enum Sink {
    Log,
    Dapr {
        client: reqwest::Client,
        url: url::Url,
        api_token: Option<Secret>,
    },
    Http {
        client: reqwest::Client,
        url: url::Url,
    },
}

/// Why one publish failed; the relay retries either way.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the sink answered {0}")]
    Status(StatusCode),
    #[error("the sink could not be reached: {0}")]
    Unreachable(String),
    #[error("the event could not be encoded: {0}")]
    Encoding(String),
}

impl Sink {
    pub fn new(settings: &EventSettings) -> anyhow::Result<Self> {
        let client = || {
            reqwest::Client::builder()
                .timeout(settings.sink_timeout)
                .connect_timeout(settings.sink_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
        };
        Ok(match &settings.sink {
            SinkSettings::Log => Self::Log,
            SinkSettings::Dapr { url, api_token } => Self::Dapr {
                client: client()?,
                url: url.clone(),
                api_token: api_token.clone(),
            },
            SinkSettings::Http { url } => Self::Http {
                client: client()?,
                url: url.clone(),
            },
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Dapr { .. } => "dapr",
            Self::Http { .. } => "http",
        }
    }

    /// Publishes one event; `Ok` only once the sink has taken it.
    pub async fn publish(&self, event: &StoredEvent) -> Result<(), PublishError> {
        match self {
            Self::Log => {
                // As before the outbox: a debug line per event, ids only (a task's title and
                // description are the user's, not the log's).
                tracing::debug!(
                    event_type = %event.event_type,
                    event_id = %event.id,
                    sequence = event.sequence,
                    task_id = %event.subject,
                    user_id = %event.user_id,
                    "task event"
                );
                Ok(())
            }
            Self::Dapr {
                client,
                url,
                api_token,
            } => {
                let mut url = url.clone();
                url.query_pairs_mut()
                    .append_pair("metadata.partitionKey", &event.user_id);
                let mut request = client.post(url).body(body(event)?);
                request = request.header(header::CONTENT_TYPE, CLOUDEVENTS_JSON);
                if let Some(token) = api_token {
                    request = request.header("dapr-api-token", token.expose());
                }
                let status = send(request).await?;
                // Dapr's publish API answers exactly 204 when the broker took the event.
                if status == StatusCode::NO_CONTENT {
                    Ok(())
                } else {
                    Err(PublishError::Status(status))
                }
            }
            Self::Http { client, url } => {
                let request = client
                    .post(url.clone())
                    .header(header::CONTENT_TYPE, CLOUDEVENTS_JSON)
                    .body(body(event)?);
                let status = send(request).await?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(PublishError::Status(status))
                }
            }
        }
    }
}

fn body(event: &StoredEvent) -> Result<Vec<u8>, PublishError> {
    event
        .to_json()
        .and_then(|event| Ok(serde_json::to_vec(&event)?))
        .map_err(|error| PublishError::Encoding(error.to_string()))
}

async fn send(request: reqwest::RequestBuilder) -> Result<StatusCode, PublishError> {
    let response = request.send().await.map_err(|error| {
        // The URL carries no secret (the Dapr token travels in a header), but keep the
        // message to its cause.
        PublishError::Unreachable(error.without_url().to_string())
    })?;
    Ok(response.status())
}
