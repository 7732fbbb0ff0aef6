//! The event record: what the outbox stores for one task change, and its CloudEvents 1.0
//! form (JSON, structured mode).
//!
//! The CloudEvent is built with the official `cloudevents-sdk` crate (no features: it then
//! needs only serde, chrono, url and uuid, which we have, plus three small crates), so the
//! attribute names, the `specversion` and the JSON format follow the specification without
//! our own serializer. The store keeps the attributes as columns and the task as JSON text;
//! the CloudEvent is assembled when an event is read, identically every time, so a retry
//! carries the same `id` and the same bytes.

use chrono::{DateTime, SubsecRound, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use serde_json::Value;
use uuid::Uuid;

use crate::tasks::{domain::Task, planning::rfc3339_millis_text};

/// The `type` of a task event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Created,
    /// Any change other than `completed` going from false to true.
    Updated,
    /// A change that set `completed` from false to true.
    Completed,
    Deleted,
    /// The task's `remind_at` passed while it was open.
    Reminder,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::Created,
        EventType::Updated,
        EventType::Completed,
        EventType::Deleted,
        EventType::Reminder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "todo.task.created",
            Self::Updated => "todo.task.updated",
            Self::Completed => "todo.task.completed",
            Self::Deleted => "todo.task.deleted",
            Self::Reminder => "todo.task.reminder",
        }
    }
}

/// An event about to be written with its change: everything but the `sequence` and `time`,
/// which the store assigns inside the transaction.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The CloudEvents `id`: unique per event, kept across retries.
    pub id: Uuid,
    pub event_type: EventType,
    /// The CloudEvents `source` (`EVENTS_SOURCE`).
    pub source: String,
    /// The owner, the `userid` extension attribute.
    pub user_id: String,
    /// The task id, the CloudEvents `subject`.
    pub subject: String,
    /// The task as the API returns it (as it was, for a delete).
    pub data: Value,
}

impl NewEvent {
    pub fn new(event_type: EventType, source: &str, task: &Task) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_type,
            source: source.to_owned(),
            user_id: task.user_id.clone(),
            subject: task.id.to_string(),
            // A task is strings, booleans and timestamps: serializing it cannot fail.
            data: serde_json::to_value(task).unwrap_or(Value::Null),
        }
    }

    /// The commit time to record: now, to the millisecond (what the API's timestamps keep).
    pub fn time_now() -> DateTime<Utc> {
        Utc::now().trunc_subsecs(3)
    }
}

/// One event as the outbox holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in the service's event log: strictly increasing in commit order.
    pub sequence: i64,
    pub id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub user_id: String,
    pub time: DateTime<Utc>,
    /// The task as JSON text.
    pub data: String,
}

/// The width of a sequence as text: every `i64` fits, so the strings sort as the numbers do.
const SEQUENCE_DIGITS: usize = 20;

/// `sequence` as the CloudEvents extension carries it: zero-padded to 20 digits, so that the
/// strings sort in log order.
pub fn format_sequence(sequence: i64) -> String {
    format!("{:0width$}", sequence.max(0), width = SEQUENCE_DIGITS)
}

/// Reads a sequence as a client sends it back (`after`, `Last-Event-ID`): 1 to 20 decimal
/// digits, padded or not, at most `i64::MAX`.
pub fn parse_sequence(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty()
        || text.len() > SEQUENCE_DIGITS
        || !text.bytes().all(|byte| byte.is_ascii_digit())
    {
        return Err("must be a sequence: up to 20 decimal digits".to_owned());
    }
    text.parse::<i64>()
        .map_err(|_| "must be a sequence: up to 20 decimal digits".to_owned())
}

impl StoredEvent {
    pub fn sequence_text(&self) -> String {
        format_sequence(self.sequence)
    }

    /// The CloudEvent, with `userid` and `sequence` as extension attributes.
    pub fn to_cloudevent(&self) -> anyhow::Result<cloudevents::Event> {
        let data: Value = serde_json::from_str(&self.data)?;
        let event = EventBuilderV10::new()
            .id(self.id.to_string())
            .source(self.source.clone())
            .ty(self.event_type.clone())
            .subject(self.subject.clone())
            .time(self.time)
            .data("application/json", data)
            .extension("userid", self.user_id.clone())
            .extension("sequence", self.sequence_text())
            .build()?;
        Ok(event)
    }

    /// The CloudEvent as a JSON value (structured mode), `time` with exactly three digits of
    /// milliseconds as every timestamp of the API has (`…:30.000Z`, where the SDK writes
    /// `…:30Z` for a whole second: valid RFC 3339, but a client comparing times as text would
    /// put it after `…:30.123Z`).
    pub fn to_json(&self) -> anyhow::Result<Value> {
        let mut json = serde_json::to_value(self.to_cloudevent()?)?;
        json["time"] = Value::String(rfc3339_millis_text(&self.time));
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredEvent {
        StoredEvent {
            sequence: 42,
            id: Uuid::nil(),
            event_type: EventType::Completed.as_str().to_owned(),
            source: "todo-api".to_owned(),
            subject: "0190c3a0-0000-7000-8000-000000000001".to_owned(),
            user_id: "alice".to_owned(),
            time: DateTime::parse_from_rfc3339("2026-01-18T09:30:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
            data: r#"{"id":"0190c3a0-0000-7000-8000-000000000001","completed":true}"#.to_owned(),
        }
    }

    #[test]
    fn the_cloudevent_has_every_required_and_extension_attribute() {
        let json = stored().to_json().unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], Uuid::nil().to_string());
        assert_eq!(json["type"], "todo.task.completed");
        assert_eq!(json["source"], "todo-api");
        assert_eq!(json["subject"], "0190c3a0-0000-7000-8000-000000000001");
        assert_eq!(json["time"], "2026-01-18T09:30:00.123Z");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["completed"], true);
        assert_eq!(json["userid"], "alice");
        assert_eq!(json["sequence"], "00000000000000000042");
    }

    #[test]
    fn a_time_on_a_whole_second_keeps_its_three_digits_of_milliseconds() {
        let mut event = stored();
        event.time = DateTime::parse_from_rfc3339("2026-01-18T09:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(event.to_json().unwrap()["time"], "2026-01-18T09:30:00.000Z");
    }

    #[test]
    fn sequences_sort_as_text_in_numeric_order_and_read_back() {
        let texts: Vec<String> = [0, 9, 10, 99, 100, i64::MAX]
            .into_iter()
            .map(format_sequence)
            .collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
        for (text, number) in texts.iter().zip([0, 9, 10, 99, 100, i64::MAX]) {
            assert_eq!(parse_sequence(text), Ok(number));
        }
        assert_eq!(parse_sequence("7"), Ok(7));
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "abc",
            "99999999999999999999",
            "000000000000000000001",
        ] {
            assert!(parse_sequence(bad).is_err(), "{bad:?}");
        }
    }
}
