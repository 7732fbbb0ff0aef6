//! The planning fields of a task: priority, tags, timestamps given by clients, and the
//! recurrence rule with its calendar arithmetic. Each is parsed once from JSON (or from the
//! stored form) and is valid past that point.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use crate::text;

pub const TAGS_MAX: usize = 20;
pub const TAG_MAX_CHARS: usize = 32;
pub const INTERVAL_MAX: u16 = 365;

/// How urgent a task is: `low` < `medium` < `high` < `urgent`.
// Stored as its rank (0–3), so that sorting by the column sorts by urgency.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Low, Self::Medium, Self::High, Self::Urgent];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|priority| priority.as_str() == text)
            .ok_or_else(|| "must be one of low, medium, high, urgent".to_owned())
    }

    /// The stored rank: `low` 0 … `urgent` 3.
    pub fn rank(self) -> i16 {
        self as i16
    }

    pub fn from_rank(rank: i64) -> Option<Self> {
        usize::try_from(rank)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

/// One tag: trimmed like a title, 1–32 characters, no control characters. Compared by its
/// folded key ([`text::fold`]), so `Work` and `work` are the same tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    text: String,
}

impl Tag {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = text::trim_invisible(raw);
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        match trimmed.chars().count() {
            0 => Err("must not be empty".to_owned()),
            n if n > TAG_MAX_CHARS => Err(format!("must be at most {TAG_MAX_CHARS} characters")),
            _ => Ok(Self {
                text: trimmed.to_owned(),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The folded key, what filters and the tags route compare. Computed when asked: only
    /// writes of tag rows and tag filters need it, never a read of a task.
    pub fn key(&self) -> String {
        text::fold(&self.text)
    }
}

/// A task's tags: at most 20, unique ignoring case, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags(Vec<Tag>);

impl Tags {
    /// Reads the JSON array of a request body.
    pub fn from_json(value: Value) -> Result<Self, String> {
        let Value::Array(items) = value else {
            return Err("must be an array of strings".to_owned());
        };
        if items.len() > TAGS_MAX {
            return Err(format!("must have at most {TAGS_MAX} tags"));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(items.len());
        let mut keys: Vec<String> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let Value::String(raw) = item else {
                return Err(format!("item {index} must be a string"));
            };
            let tag = Tag::parse(raw).map_err(|message| format!("item {index} {message}"))?;
            let key = tag.key();
            if keys.contains(&key) {
                return Err(format!(
                    "item {index} repeats a tag (tags are compared ignoring case)"
                ));
            }
            keys.push(key);
            tags.push(tag);
        }
        Ok(Self(tags))
    }

    /// Reads the stored JSON text (written by [`Tags::to_stored`], from tags that passed
    /// [`Tags::from_json`]): every task read takes this path, so nothing is checked again.
    pub fn from_stored(text: &str) -> Result<Self, anyhow::Error> {
        let items: Vec<String> = serde_json::from_str(text)?;
        Ok(Self(items.into_iter().map(|text| Tag { text }).collect()))
    }

    /// The JSON text stored with the task.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(&self.0.iter().map(Tag::as_str).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".to_owned())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tag> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(Tag::as_str))
    }
}

/// Reads an RFC 3339 timestamp with an offset, kept to the millisecond (what both databases
/// store and the API returns).
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|time| time.with_timezone(&Utc).trunc_subsecs(3))
        .map_err(|_| {
            "must be an RFC 3339 timestamp with an offset, e.g. 2026-01-18T09:30:00Z".to_owned()
        })
}

/// The one form timestamps leave the service in (task fields, event `time`): RFC 3339 in UTC,
/// always three digits of milliseconds, and `Z` (`2026-01-18T09:30:00.000Z`).
pub fn rfc3339_millis_text(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `Option<DateTime>` as [`rfc3339_millis_text`], or `null`.
pub fn rfc3339_millis_opt<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&rfc3339_millis_text(time)),
        None => serializer.serialize_none(),
    }
}

/// The unit a recurrence advances by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Frequency {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "daily" => Ok(Self::Daily),
            "weekly" => Ok(Self::Weekly),
            "monthly" => Ok(Self::Monthly),
            "yearly" => Ok(Self::Yearly),
            _ => Err("must be one of daily, weekly, monthly, yearly".to_owned()),
        }
    }
}

/// How a task repeats: every `interval` × `frequency`, on the wall clock of `timezone`, up
/// to `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"frequency": "weekly", "interval": 1, "timezone": "Europe/Berlin", "until": null}))]
pub struct Recurrence {
    pub frequency: Frequency,
    /// 1–365.
    #[schema(minimum = 1, maximum = 365, default = 1)]
    pub interval: u16,
    /// An IANA time zone name.
    #[schema(default = "UTC", example = "Europe/Berlin")]
    pub timezone: String,
    /// No occurrence is due after it.
    #[serde(serialize_with = "rfc3339_millis_opt")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub until: Option<DateTime<Utc>>,
}

/// A failure inside a JSON object: the field (dotted path) and why.
pub type FieldFailure = (String, String);

impl Recurrence {
    /// Reads the `recurrence` object of a request body, reporting every bad field inside it
    /// as `recurrence.<field>`.
    pub fn from_json(value: Value) -> Result<Self, Vec<FieldFailure>> {
        let Value::Object(mut fields) = value else {
            return Err(vec![(
                "recurrence".to_owned(),
                "must be an object or null".to_owned(),
            )]);
        };
        let mut failures = Vec::new();
        let mut fail = |name: &str, message: String| {
            failures.push((format!("recurrence.{name}"), message));
        };
        let frequency = match fields.remove("frequency") {
            Some(Value::String(text)) => Frequency::parse(&text)
                .map_err(|m| fail("frequency", m))
                .ok(),
            None => {
                fail("frequency", "is required".to_owned());
                None
            }
            Some(_) => {
                fail(
                    "frequency",
                    "must be one of daily, weekly, monthly, yearly".to_owned(),
                );
                None
            }
        };
        let interval = match fields.remove("interval") {
            None => Some(1),
            Some(Value::Number(number)) => number
                .as_u64()
                .filter(|n| (1..=u64::from(INTERVAL_MAX)).contains(n))
                .map(|n| n as u16)
                .or_else(|| {
                    fail(
                        "interval",
                        format!("must be a whole number from 1 to {INTERVAL_MAX}"),
                    );
                    None
                }),
            Some(_) => {
                fail(
                    "interval",
                    format!("must be a whole number from 1 to {INTERVAL_MAX}"),
                );
                None
            }
        };
        let timezone = match fields.remove("timezone") {
            None => Some("UTC".to_owned()),
            Some(Value::String(name)) => match zone(&name) {
                Ok(tz) => Some(tz.iana_name().unwrap_or(&name).to_owned()),
                Err(message) => {
                    fail("timezone", message);
                    None
                }
            },
            Some(_) => {
                fail("timezone", "must be an IANA time zone name".to_owned());
                None
            }
        };
        let until = match fields.remove("until") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(text)) => match parse_timestamp(&text) {
                Ok(time) => Some(Some(time)),
                Err(message) => {
                    fail("until", message);
                    None
                }
            },
            Some(_) => {
                fail("until", "must be a timestamp or null".to_owned());
                None
            }
        };
        let mut unknown: Vec<String> = fields.keys().cloned().collect();
        unknown.sort();
        for name in unknown {
            fail(&name, "is not a known field".to_owned());
        }
        match (frequency, interval, timezone, until) {
            (Some(frequency), Some(interval), Some(timezone), Some(until))
                if failures.is_empty() =>
            {
                Ok(Self {
                    frequency,
                    interval,
                    timezone,
                    until,
                })
            }
            _ => Err(failures),
        }
    }

    /// Reads the stored JSON text (written by [`Recurrence::to_stored`]).
    pub fn from_stored(text: &str) -> Result<Self, anyhow::Error> {
        Ok(serde_json::from_str(text)?)
    }

    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The due time of the occurrence after one due at `due`: `interval` × `frequency`
    /// later on the wall clock of `timezone` (a day of the month the target month lacks
    /// becomes its last day; a skipped wall-clock time moves forward by the gap, a repeated
    /// one takes the earlier instant: RFC 5545 §3.3.5, jiff's "compatible"). `None` when that
    /// is after `until`, or beyond 9999-12-30 (the end of jiff's range).
    pub fn next_due(&self, due: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = zone(&self.timezone).ok()?;
        let start = jiff::Timestamp::from_millisecond(due.timestamp_millis())
            .ok()?
            .to_zoned_datetime(tz);
        let n = i64::from(self.interval);
        let span = match self.frequency {
            Frequency::Daily => jiff::Span::new().try_days(n),
            Frequency::Weekly => jiff::Span::new().try_weeks(n),
            Frequency::Monthly => jiff::Span::new().try_months(n),
            Frequency::Yearly => jiff::Span::new().try_years(n),
        }
        .ok()?;
        // jiff's range ends late on 9999-12-30 (UTC), so that every zone's local date has four
        // digits; a series that would go beyond it ends.
        let next = start.checked_add(span).ok()?;
        let next = DateTime::from_timestamp_millis(next.timestamp().as_millisecond())?;
        self.until.is_none_or(|until| next <= until).then_some(next)
    }
}

/// The IANA time zone `name`, from the database bundled with the binary.
fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be an IANA time zone name, e.g. Europe/Berlin".to_owned());
    }
    jiff::tz::TimeZone::get(name)
        .map_err(|_| "must be an IANA time zone name, e.g. Europe/Berlin".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        parse_timestamp(text).unwrap()
    }

    fn rule(value: Value) -> Recurrence {
        Recurrence::from_json(value).unwrap()
    }

    #[test]
    fn wall_clock_time_survives_daylight_saving_changes() {
        let daily = rule(json!({"frequency": "daily", "timezone": "Europe/Berlin"}));
        // 09:00 CET the day before summer time, 09:00 CEST the day it starts.
        assert_eq!(
            daily.next_due(at("2026-03-28T08:00:00Z")),
            Some(at("2026-03-29T07:00:00Z"))
        );
        assert_eq!(
            daily.next_due(at("2026-10-24T07:00:00Z")),
            Some(at("2026-10-25T08:00:00Z"))
        );
    }

    #[test]
    fn month_ends_and_leap_days_clamp_to_the_last_day() {
        let monthly = rule(json!({"frequency": "monthly"}));
        assert_eq!(
            monthly.next_due(at("2027-01-31T10:00:00Z")),
            Some(at("2027-02-28T10:00:00Z"))
        );
        assert_eq!(
            monthly.next_due(at("2028-01-31T10:00:00Z")),
            Some(at("2028-02-29T10:00:00Z"))
        );
        let yearly = rule(json!({"frequency": "yearly"}));
        assert_eq!(
            yearly.next_due(at("2028-02-29T10:00:00Z")),
            Some(at("2029-02-28T10:00:00Z"))
        );
    }

    #[test]
    fn nothing_is_due_after_until_or_past_year_9999() {
        let weekly = rule(json!({"frequency": "weekly", "interval": 2,
                                 "until": "2026-01-15T00:00:00Z"}));
        assert_eq!(
            weekly.next_due(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-15T00:00:00Z"))
        );
        assert_eq!(weekly.next_due(at("2026-01-01T00:00:01Z")), None);
        let yearly = rule(json!({"frequency": "yearly", "interval": 365}));
        assert_eq!(yearly.next_due(at("9700-01-01T00:00:00Z")), None);
    }

    #[test]
    fn every_bad_field_of_a_recurrence_is_named() {
        let failures = Recurrence::from_json(json!({
            "frequency": "hourly", "interval": 0, "timezone": "Mars/Base",
            "until": "tomorrow", "colour": "red"
        }))
        .unwrap_err();
        let fields: Vec<&str> = failures.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "recurrence.frequency",
                "recurrence.interval",
                "recurrence.timezone",
                "recurrence.until",
                "recurrence.colour"
            ]
        );
        for interval in [json!(366), json!(1.5), json!("2"), json!(-1)] {
            assert!(
                Recurrence::from_json(json!({"frequency": "daily", "interval": interval})).is_err()
            );
        }
        assert_eq!(
            rule(json!({"frequency": "daily"})),
            Recurrence {
                frequency: Frequency::Daily,
                interval: 1,
                timezone: "UTC".to_owned(),
                until: None
            }
        );
    }

    #[test]
    fn tags_are_trimmed_bounded_and_unique_ignoring_case() {
        let tags = Tags::from_json(json!([" Work ", "home"])).unwrap();
        assert_eq!(tags.to_stored(), r#"["Work","home"]"#);
        for bad in [
            json!(["Work", "WORK"]),
            json!([""]),
            json!(["\u{200b}"]),
            json!(["a\u{7}b"]),
            json!(["x".repeat(33)]),
            json!([1]),
            json!("work"),
            json!(
                vec!["t"; 21]
                    .iter()
                    .enumerate()
                    .map(|(i, _)| i.to_string())
                    .collect::<Vec<_>>()
            ),
        ] {
            assert!(Tags::from_json(bad.clone()).is_err(), "{bad}");
        }
        assert!(Tags::from_json(json!(["é".repeat(32)])).is_ok());
    }

    #[test]
    fn timestamps_need_an_offset_and_keep_milliseconds() {
        assert_eq!(
            parse_timestamp("2026-01-18T10:30:00.123456+01:00").unwrap(),
            at("2026-01-18T09:30:00.123Z")
        );
        for bad in ["2026-01-18", "2026-01-18T10:30:00", "tomorrow", ""] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn priorities_rank_in_order() {
        assert_eq!(Priority::default(), Priority::Medium);
        for priority in Priority::ALL {
            assert_eq!(Priority::from_rank(priority.rank().into()), Some(priority));
            assert_eq!(Priority::parse(priority.as_str()), Ok(priority));
        }
        assert!(Priority::parse("Urgent").is_err());
        assert_eq!(Priority::from_rank(4), None);
    }
}
