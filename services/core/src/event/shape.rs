//! The lexical forms the contract's JSON schemas require and that serde and jiff do not
//! check by themselves: canonical UUIDs, `YYYY-MM-DD` dates, RFC 3339 instants with
//! seconds and an offset, `HH:MM` local times, IANA zone names, and which members of each
//! event's `data` must have which form.

use jiff::Timestamp;
use serde_json::Value;

use super::EventType;

/// What the type's schema requires of a member of `data` that serde and jiff do not check
/// by themselves: serde reads a struct from a JSON array and an `Option` from `null`, and
/// jiff reads instants and dates in more forms than the schema's patterns allow.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// A JSON object (`money`, `customer`, `installment`).
    Object,
    /// The schema's `instant`: see [`is_instant_shape`].
    Instant,
    /// The schema's `date`: `YYYY-MM-DD`.
    Date,
    /// Anything but `null`; serde checks the type.
    NotNull,
    /// The schema's `uuid`: see [`is_canonical_uuid`].
    Uuid,
    /// A JSON array (`instalments`).
    Array,
    /// A local time of day, `HH:MM` on the 24-hour clock (`hours.start`, `hours.end`):
    /// see [`is_local_time_shape`].
    LocalTime,
}

/// Members of `data` with a [`Shape`] to check, as dotted paths; a parent comes before its
/// members. An absent member is left to serde, which knows whether it is required.
pub(super) fn shapes(ty: EventType) -> &'static [(&'static str, Shape)] {
    match ty {
        EventType::PaymentFailed => &[
            ("customer", Shape::Object),
            ("customer.timezone", Shape::NotNull),
            ("installment", Shape::Object),
            ("installment.due_date", Shape::Date),
            ("installment.amount", Shape::Object),
            ("overdue_amount", Shape::Object),
            ("attempted_at", Shape::Instant),
        ],
        EventType::PromiseMade => &[("amount", Shape::Object), ("promised_at", Shape::Instant)],
        EventType::PromiseBroken => &[],
        EventType::PaymentReceived => &[
            ("amount", Shape::Object),
            ("received_at", Shape::Instant),
            ("overdue_amount_after", Shape::Object),
            ("next_due_date", Shape::Date),
        ],
        EventType::ContactAttempted => &[
            ("debtor_id", Shape::NotNull),
            ("task_id", Shape::Uuid),
            ("contact_point_id", Shape::NotNull),
            ("disposition", Shape::NotNull),
            ("callback_at", Shape::Instant),
            ("started_at", Shape::Instant),
            ("agent_id", Shape::NotNull),
        ],
        EventType::HoldPlaced => &[
            ("placed_at", Shape::Instant),
            ("review_at", Shape::Instant),
            ("pause_dpd", Shape::NotNull),
            ("case_ref", Shape::NotNull),
        ],
        EventType::HoldReleased => &[("released_at", Shape::Instant)],
        EventType::ContactRestricted => &[
            ("debtor_id", Shape::NotNull),
            ("channel", Shape::NotNull),
            ("contact_point_id", Shape::NotNull),
            ("hours", Shape::Object),
            ("hours.start", Shape::LocalTime),
            ("hours.end", Shape::LocalTime),
            ("effective_at", Shape::Instant),
            ("expires_at", Shape::Instant),
        ],
        EventType::ContactUnrestricted => &[("effective_at", Shape::Instant)],
        EventType::ArrangementMade => &[
            ("total", Shape::Object),
            ("instalments", Shape::Array),
            ("instalments.*", Shape::Object),
            ("instalments.*.due_at", Shape::Instant),
            ("instalments.*.amount", Shape::Object),
            ("discount_approved_by", Shape::NotNull),
        ],
        EventType::ArrangementCancelled => &[],
        EventType::PaymentReversed => &[("amount", Shape::Object), ("reversed_at", Shape::Instant)],
    }
}

/// How the schema's `instant` is described in error details.
pub(super) const INSTANT_FORM: &str =
    "an RFC 3339 date-time with seconds and an offset (YYYY-MM-DDThh:mm:ss[.f]Z or ±hh:mm)";

/// Checks a `data` object against the [`shapes`] of its type. The detail names the member
/// and what is wrong with it, never its value.
pub(super) fn check_shapes(ty: EventType, data: &Value) -> Result<(), String> {
    for &(path, shape) in shapes(ty) {
        for (at, v) in members(data, path) {
            check_shape(&at, v, shape)?;
        }
    }
    Ok(())
}

/// The members of `data` at a dotted `path`, each with its concrete path; `*` stands for
/// every element of an array (`instalments.*.due_at` -> `instalments[2].due_at`).
fn members<'a>(data: &'a Value, path: &str) -> Vec<(String, &'a Value)> {
    let mut found = vec![(String::new(), data)];
    for key in path.split('.') {
        let mut next = Vec::new();
        for (at, v) in found {
            if key == "*" {
                if let Some(items) = v.as_array() {
                    for (i, item) in items.iter().enumerate() {
                        next.push((format!("{at}[{i}]"), item));
                    }
                }
            } else if let Some(m) = v.get(key) {
                let at = if at.is_empty() {
                    key.to_owned()
                } else {
                    format!("{at}.{key}")
                };
                next.push((at, m));
            }
        }
        found = next;
    }
    found
}

fn check_shape(path: &str, v: &Value, shape: Shape) -> Result<(), String> {
    if v.is_null() {
        return Err(format!(
            "{path} is null, which its schema type does not allow (leave an optional \
                 member out instead)"
        ));
    }
    let problem = match shape {
        Shape::Object => (!v.is_object()).then(|| format!("{path} is not a JSON object")),
        Shape::Array => (!v.is_array()).then(|| format!("{path} is not a JSON array")),
        Shape::Instant => (!v.as_str().is_some_and(is_instant_shape))
            .then(|| format!("{path} is not {INSTANT_FORM}")),
        Shape::Date => (!v.as_str().is_some_and(|s| is_date_shape(s.as_bytes())))
            .then(|| format!("{path} is not a date of the form YYYY-MM-DD")),
        Shape::NotNull => None,
        Shape::Uuid => (!v.as_str().is_some_and(is_canonical_uuid))
            .then(|| format!("{path} is not a UUID in the canonical 8-4-4-4-12 hex form")),
        Shape::LocalTime => (!v.as_str().is_some_and(is_local_time_shape))
            .then(|| format!("{path} is not a local time of the form HH:MM (00:00-23:59)")),
    };
    match problem {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// The schema's `uuid` pattern: 8-4-4-4-12 hex digits, either case. `Uuid::parse_str`
/// alone would also take the simple, braced and `urn:uuid:` forms, which the schema
/// refuses.
pub(super) fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn all_digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// The schema's `date` pattern, `^[0-9]{4}-[0-9]{2}-[0-9]{2}$`. jiff also reads
/// `20261203`, `+002026-12-03` and a date followed by a time, offset or `[zone]`.
pub(super) fn is_date_shape(b: &[u8]) -> bool {
    match b {
        [y @ .., b'-', m1, m2, b'-', d1, d2] => {
            y.len() == 4 && all_digits(y) && all_digits(&[*m1, *m2, *d1, *d2])
        }
        _ => false,
    }
}

/// The schema's `HH:MM` pattern, `^([01][0-9]|2[0-3]):[0-5][0-9]$`. jiff's `civil::Time`
/// also reads `18`, `1800`, `18:00:00` and `18:00:00.5`, which the contract does not
/// allow: agreed hours are whole minutes.
pub(super) fn is_local_time_shape(s: &str) -> bool {
    match s.as_bytes() {
        [h1, h2, b':', m1, m2] => {
            all_digits(&[*h1, *h2, *m1, *m2])
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// The schema's `instant`: `YYYY-MM-DDThh:mm:ss`, an optional fraction, then `Z` or
/// `±hh:mm` (`T` and `Z` in either case), as its pattern says; the offset is also bounded
/// to 23:59 as `format: date-time` requires. jiff alone would take a space for the `T`,
/// `+0800`, a missing `:ss`, a `[Asia/Shanghai]` suffix and offsets up to ±25:59.
pub(super) fn is_instant_shape(s: &str) -> bool {
    let Some((date, rest)) = s.as_bytes().split_at_checked(10) else {
        return false;
    };
    let [b'T' | b't', h1, h2, b':', m1, m2, b':', s1, s2, rest @ ..] = rest else {
        return false;
    };
    if !is_date_shape(date) || !all_digits(&[*h1, *h2, *m1, *m2, *s1, *s2]) {
        return false;
    }
    let offset = match rest {
        [b'.', fraction @ ..] => {
            let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            &fraction[n..]
        }
        _ => rest,
    };
    match offset {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            all_digits(&[*h1, *h2, *m1, *m2])
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// An instant of the schema's shape that is also a real date and time (jiff refuses
/// 2026-02-30 and 25:00).
pub(super) fn parse_instant(s: &str) -> Option<Timestamp> {
    if is_instant_shape(s) {
        s.parse().ok()
    } else {
        None
    }
}

/// The schema's `timezone` pattern and length: a first part of letters and `_`, then
/// `/`-separated parts that may also hold digits, `+` and `-`. A few legacy names of the
/// tz database fall outside it (`EST5EDT`, `GMT+0`, `GMT0`, `W-SU`, `NZ-CHAT`).
pub(super) fn is_timezone_shape(s: &str) -> bool {
    let mut parts = s.split('/');
    let first = parts.next().unwrap_or_default();
    // Every accepted byte is ASCII, so the byte length is the character count here.
    s.len() <= 64
        && !first.is_empty()
        && first.bytes().all(|c| c.is_ascii_alphabetic() || c == b'_')
        && parts.all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_must_have_the_schema_shape() {
        for ok in [
            "2026-11-04T15:00:00+08:00",
            "2026-11-04t15:00:00z",
            "2026-11-04T15:00:00.5Z",
            "2026-11-04T15:00:00.123456789-05:00",
            "2026-11-04T15:00:00-00:00",
            "2026-11-04T15:00:00+23:59",
        ] {
            assert!(parse_instant(ok).is_some(), "{ok} should pass");
        }
        for bad in [
            "2026-11-04 15:00:00+08:00",
            "2026-11-04T15:00:00+0800",
            "2026-11-04T15:00+08:00",
            "2026-11-04T15:00:00+08:00[Asia/Shanghai]",
            "2026-11-04T15:00:00",
            "2026-11-04T15:00:00+08",
            "2026-11-04T15:00:00.Z",
            "2026-11-04T15:00:00+24:00",
            "2026-11-04T15:00:00+08:60",
            "20261104T150000Z",
            "2026-11-04T15Z",
            "2026-02-30T15:00:00Z",
            "2026-11-04T25:00:00Z",
            "+002026-11-04T15:00:00Z",
            "2026-11-04T15:00:00Z ",
            "２０２６-11-04T15:00:00Z",
            "",
        ] {
            assert!(parse_instant(bad).is_none(), "{bad:?} should fail");
        }
    }

    #[test]
    fn dates_must_be_yyyy_mm_dd() {
        assert!(is_date_shape(b"2026-11-03"));
        for bad in [
            "20261103",
            "+002026-11-03",
            "2026-11-3",
            "2026/11/03",
            "2026-11-03T00:00",
            "2026-11-03[Asia/Shanghai]",
            " 2026-11-03",
            "",
        ] {
            assert!(!is_date_shape(bad.as_bytes()), "{bad:?} should fail");
        }
    }

    #[test]
    fn local_times_must_be_hh_mm() {
        for ok in ["00:00", "18:00", "09:30", "23:59"] {
            assert!(is_local_time_shape(ok), "{ok} should pass");
        }
        for bad in [
            "24:00",
            "18:60",
            "18",
            "1800",
            "18:00:00",
            "18:00:00.5",
            "8:00",
            "18:0",
            "T18:00",
            " 18:00",
            "１８:00",
            "",
        ] {
            assert!(!is_local_time_shape(bad), "{bad:?} should fail");
        }
    }

    #[test]
    fn only_the_hyphenated_uuid_form_is_canonical() {
        let id = "5b0f3c1e-8d2a-4c47-9f61-2e7a1d9b4c01";
        assert!(is_canonical_uuid(id));
        assert!(is_canonical_uuid(&id.to_uppercase()));
        for bad in [
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.replace('1', "g"),
            format!("{id} "),
        ] {
            assert!(!is_canonical_uuid(&bad), "{bad} should fail");
        }
    }

    #[test]
    fn every_zone_of_the_tz_database_but_a_few_legacy_names_has_the_schema_shape() {
        // jiff may read the system's tz database, whose names vary a little by release. A
        // name outside the schema's pattern that is not one of these legacy names needs a
        // decision: refuse it too, or widen the pattern in proto/schemas.
        let legacy = [
            "CST6CDT", "EST5EDT", "GB-Eire", "GMT+0", "GMT-0", "GMT0", "MST7MDT", "NZ-CHAT",
            "PST8PDT", "W-SU",
        ];
        let outside: Vec<String> = jiff::tz::db()
            .available()
            .map(|name| name.as_str().to_owned())
            .filter(|name| !is_timezone_shape(name) && !legacy.contains(&name.as_str()))
            .collect();
        assert!(
            outside.is_empty(),
            "outside the schema's pattern: {outside:?}"
        );
        for zone in ["Asia/Shanghai", "America/New_York", "UTC", "Etc/GMT+8"] {
            assert!(is_timezone_shape(zone), "{zone} should pass");
        }
        for bad in [
            "",
            "Asia/Shang hai",
            "Asia//Shanghai",
            "Asia/Shanghai/",
            "/UTC",
        ] {
            assert!(!is_timezone_shape(bad), "{bad:?} should fail");
        }
        assert!(!is_timezone_shape(&format!("A/{}", "b".repeat(63))));
        assert!(is_timezone_shape(&format!("A/{}", "b".repeat(62))));
    }
}
