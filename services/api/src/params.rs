//! Query parameters, parsed by hand so that a bad one gets a 400 naming it (axum's own
//! `Query` rejection names no parameter), and unknown ones are refused rather than
//! silently ignored (a misspelt filter would otherwise return everything).

use std::collections::HashMap;

use jiff::Timestamp;
use uuid::Uuid;

use crate::error::ApiError;

/// The raw query string's pairs.
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses `query`, refusing names outside `allowed` and repeated names.
    ///
    /// # Errors
    /// [`ApiError::BadParameter`] naming the first offending parameter.
    pub fn parse(query: Option<&str>, allowed: &[&'static str]) -> Result<Self, ApiError> {
        let mut out = HashMap::new();
        for (k, v) in form_pairs(query.unwrap_or("")) {
            let Some(name) = allowed.iter().find(|a| **a == k) else {
                return Err(ApiError::BadParameter {
                    name: "query",
                    message: format!("unknown parameter {k:?} (known: {})", allowed.join(", ")),
                });
            };
            if out.insert(k, v).is_some() {
                return Err(ApiError::bad(name, "given more than once"));
            }
        }
        Ok(Self(out))
    }

    /// The value of `name`, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A value out of a closed list.
    ///
    /// # Errors
    /// When the value is not in `values`.
    pub fn one_of(&self, name: &'static str, values: &[&str]) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if values.contains(&v) => Ok(Some(v.to_owned())),
            Some(v) => Err(ApiError::bad(
                name,
                format!("{v:?} is not one of {}", values.join(", ")),
            )),
        }
    }

    /// An instant (RFC 3339 with offset).
    ///
    /// # Errors
    /// When the value is not one.
    pub fn instant(&self, name: &'static str) -> Result<Option<Timestamp>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<Timestamp>().map_err(|_| {
                    ApiError::bad(
                        name,
                        format!(
                            "{v:?} is not an RFC 3339 instant (e.g. 2026-03-01T09:00:00+08:00)"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// An integer in `min..=max`.
    ///
    /// # Errors
    /// When the value is not one, or out of range.
    pub fn int(&self, name: &'static str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    name,
                    format!("{v:?} is not an integer from {min} to {max}"),
                )),
            })
            .transpose()
    }

    /// A free text of 1-128 characters (ids).
    ///
    /// # Errors
    /// When longer.
    pub fn text(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            Some(v) if v.chars().count() > 128 => {
                Err(ApiError::bad(name, "longer than 128 characters"))
            }
            v => Ok(v.map(str::to_owned)),
        }
    }
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded (`+` is a space).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A task page cursor: `<due_at in Unix microseconds>_<task_id>`.
///
/// # Errors
/// When `s` is not one.
pub fn task_cursor(s: &str) -> Result<(Timestamp, Uuid), ApiError> {
    let bad = || ApiError::bad("cursor", "not a cursor this API returned");
    let (micros, id) = s.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = Timestamp::from_microsecond(micros).map_err(|_| bad())?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

/// The cursor of a task row.
pub fn make_task_cursor(at: Timestamp, id: Uuid) -> String {
    format!("{}_{id}", at.as_microsecond())
}

/// A feed cursor: `<xact>-<id>`.
///
/// # Errors
/// When `s` is not one; `name` is the parameter (or header) it came in.
pub fn feed_cursor(name: &'static str, s: &str) -> Result<(u64, i64), ApiError> {
    let bad = || ApiError::bad(name, "not a task-event cursor (<xact>-<id>)");
    let (x, id) = s.split_once('-').ok_or_else(bad)?;
    Ok((
        x.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

/// The cursor of a feed row.
pub fn make_feed_cursor(xact: u64, id: i64) -> String {
    format!("{xact}-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_and_plus_decode() {
        assert_eq!(decode("a%2Bb+c%3A"), "a+b c:");
        assert_eq!(decode("100%"), "100%");
    }

    #[test]
    fn cursors_round_trip() {
        let at: Timestamp = "2026-03-01T09:00:00.123456Z".parse().expect("instant");
        let id = Uuid::new_v4();
        assert_eq!(
            task_cursor(&make_task_cursor(at, id)).expect("parses"),
            (at, id)
        );
        assert_eq!(
            feed_cursor("after", &make_feed_cursor(77, 9)).expect("parses"),
            (77, 9)
        );
        assert!(feed_cursor("after", "77").is_err());
        assert!(task_cursor("x_y").is_err());
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(Params::parse(Some("stat=due"), &["state"]).is_err());
        assert!(Params::parse(Some("state=due&state=due"), &["state"]).is_err());
        let p = Params::parse(Some("state=due&limit="), &["state", "limit"]).expect("parses");
        assert_eq!(p.get("state"), Some("due"));
        assert_eq!(p.get("limit"), None);
    }
}
