//! Loading a policy file and checking it whole: a TOML error names the dotted key it
//! concerns, and [`Policy::validate`] checks the relations between keys that the types
//! cannot express (window hours, increasing ladders, shares summing to one, ...).

use jiff::tz::TimeZone;

use super::{
    err,
    sections::{bucket_rank, WeekdayName, ESCALATION_KINDS},
    Policy, PolicyError,
};
use crate::task::{Channel, TaskKind};

/// The dotted key at byte `offset` of a TOML text: the nearest `key =` at or before the
/// offset, prefixed with the table header it sits under.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    // The offset may sit on a key itself (an unknown key): end the head after its line's
    // `=` so that the key found is that line's.
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let offset = match text[line_start..line_end].find('=') {
        Some(eq) if line_start + eq >= offset => line_start + eq + 1,
        _ => offset,
    };
    let head = &text[..offset];
    let mut key = String::new();
    let mut section = String::new();
    for line in head.lines().rev() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            break;
        }
        if key.is_empty() {
            if let Some((lhs, _)) = l.split_once('=') {
                let lhs = lhs.trim().trim_matches('"');
                if !lhs.is_empty() && !lhs.starts_with('#') {
                    lhs.clone_into(&mut key);
                }
            }
        }
    }
    match (section.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

fn is_phone_or_sms(c: Channel) -> bool {
    c.is_phone() || c == Channel::Sms
}

impl Policy {
    /// Parses and checks a policy file.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the first key that is missing, unknown or inconsistent.
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let mut key = e.span().map(|s| key_at(text, s.start)).unwrap_or_default();
            let msg = e.message().to_owned();
            // "missing field `x`" points at the table: name the missing key.
            if let Some(field) = msg
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                let table = e
                    .span()
                    .map(|s| {
                        let l = text[s].lines().next().unwrap_or("").trim();
                        if l.starts_with('[') {
                            l.trim_matches(|c| c == '[' || c == ']').trim().to_owned()
                        } else {
                            String::new()
                        }
                    })
                    .unwrap_or_default();
                key = if table.is_empty() {
                    field.to_owned()
                } else {
                    format!("{table}.{field}")
                };
            }
            err(&key, msg)
        })?;
        policy.validate()?;
        // Hashed once here, not at every decision.
        let _ = policy.version();
        Ok(policy)
    }

    /// Checks the relations between keys that the types cannot express.
    ///
    /// # Errors
    /// The first problem found.
    #[allow(clippy::too_many_lines)]
    pub fn validate(&self) -> Result<(), PolicyError> {
        TimeZone::get(&self.default_timezone).map_err(|_| {
            err(
                "default_timezone",
                format!("unknown IANA zone {:?}", self.default_timezone),
            )
        })?;
        let w = &self.contact_window;
        if w.end <= w.start {
            return Err(err(
                "contact_window.end",
                format!("end {} is not after start {}", w.end, w.start),
            ));
        }
        for (day, hours) in w.weekdays.all() {
            if let Some(h) = hours {
                if h.end <= h.start {
                    return Err(err(
                        &format!("contact_window.weekdays.{day}.end"),
                        format!("end {} is not after start {}", h.end, h.start),
                    ));
                }
            }
        }
        if w.closed_weekdays.len() >= 7
            && [
                WeekdayName::Monday,
                WeekdayName::Tuesday,
                WeekdayName::Wednesday,
                WeekdayName::Thursday,
                WeekdayName::Friday,
                WeekdayName::Saturday,
                WeekdayName::Sunday,
            ]
            .iter()
            .all(|d| w.closed_weekdays.contains(d))
        {
            return Err(err(
                "contact_window.closed_weekdays",
                "every weekday is closed: no contact would ever be allowed",
            ));
        }
        let p = &self.promise;
        for (key, d) in [
            ("promise.max_horizon", p.max_horizon),
            ("promise.reminder_before", p.reminder_before),
            ("promise.check_after", p.check_after),
            ("promise.grace", p.grace),
        ] {
            if d.is_negative() {
                return Err(err(key, "must not be negative"));
            }
        }
        for (key, c) in [
            ("promise.reminder_channel", p.reminder_channel),
            ("promise.check_channel", p.check_channel),
            ("pre_due.channel", self.pre_due.channel),
        ] {
            if !is_phone_or_sms(c) {
                return Err(err(
                    key,
                    format!("{c} is not one of phone_mobile, phone_work, phone_home, sms"),
                ));
            }
        }
        let e = &self.escalation;
        for (i, s) in e.by_broken_promises.iter().enumerate() {
            let key = format!("escalation.by_broken_promises[{i}]");
            if s.from == 0 {
                return Err(err(
                    &format!("{key}.from"),
                    "steps start at 1 broken promise",
                ));
            }
            if i > 0 && s.from <= e.by_broken_promises[i - 1].from {
                return Err(err(
                    &format!("{key}.from"),
                    "steps must have strictly increasing `from`",
                ));
            }
            check_open(&format!("{key}.open"), &s.open)?;
        }
        for (i, s) in e.by_bucket.iter().enumerate() {
            let key = format!("escalation.by_bucket[{i}]");
            let Some(rank) = bucket_rank(&s.from) else {
                return Err(err(
                    &format!("{key}.from"),
                    format!("unknown bucket {:?} (M0, M1, M2, M3, M3+)", s.from),
                ));
            };
            if i > 0 && bucket_rank(&e.by_bucket[i - 1].from).is_some_and(|r| rank <= r) {
                return Err(err(
                    &format!("{key}.from"),
                    "steps must have strictly increasing buckets",
                ));
            }
            check_open(&format!("{key}.open"), &s.open)?;
        }
        if self.priority.large_balance_minor < 0 {
            return Err(err("priority.large_balance_minor", "must not be negative"));
        }
        if self.priority.order.is_empty() {
            return Err(err("priority.order", "needs at least one criterion"));
        }
        for (i, c) in self.priority.order.iter().enumerate() {
            if self.priority.order[..i].contains(c) {
                return Err(err(
                    "priority.order",
                    format!("{c:?} is listed twice").to_lowercase(),
                ));
            }
        }
        let c = &self.cadence;
        if c.hours.is_empty() {
            return Err(err("cadence.hours", "needs at least one hour"));
        }
        for h in &c.hours {
            if *h < w.start || *h >= w.end {
                return Err(err(
                    "cadence.hours",
                    format!("{h} is outside the contact window {}-{}", w.start, w.end),
                ));
            }
        }
        if c.hours.windows(2).any(|p| p[1] <= p[0]) {
            return Err(err("cadence.hours", "hours must be strictly increasing"));
        }
        if c.attempts_per_day == 0 {
            return Err(err("cadence.attempts_per_day", "must be at least 1"));
        }
        for (b, d) in c.days_between_attempts.all() {
            if !(1..=31).contains(d) {
                return Err(err(
                    &format!("cadence.days_between_attempts.{b}"),
                    format!("{d} is not between 1 (every day) and 31"),
                ));
            }
        }
        let m = &self.channel_mix;
        for (key, v) in [
            ("channel_mix.phone_mobile", m.phone_mobile),
            ("channel_mix.phone_work", m.phone_work),
            ("channel_mix.phone_home", m.phone_home),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(err(key, format!("{v} is not a share between 0 and 1")));
            }
        }
        let sum = m.phone_mobile + m.phone_work + m.phone_home;
        if (sum - 1.0).abs() > 1e-9 {
            return Err(err("channel_mix", format!("shares sum to {sum}, not 1")));
        }
        let caps = &self.caps;
        if caps.max_call_attempts > 0 && caps.window_days == 0 {
            return Err(err(
                "caps.window_days",
                "must be at least 1 when max_call_attempts is set",
            ));
        }
        if caps.quiet_after_conversation.is_negative() {
            return Err(err("caps.quiet_after_conversation", "must not be negative"));
        }
        if caps.max_call_attempts > 0 && caps.max_call_attempts < c.attempts_per_day {
            return Err(err(
                "caps.max_call_attempts",
                format!(
                    "{} is below cadence.attempts_per_day {}: the cap would always bite first",
                    caps.max_call_attempts, c.attempts_per_day
                ),
            ));
        }
        let s = &self.segments;
        if s.habitual_late_min_failures == 0
            || s.habitual_late_min_failures > s.habitual_late_last_instalments
        {
            return Err(err(
                "segments.habitual_late_min_failures",
                "need 1 <= habitual_late_min_failures <= habitual_late_last_instalments",
            ));
        }
        let pd = &self.pre_due;
        for (key, d) in [
            (
                "pre_due.habitual_late_payer_days",
                pd.habitual_late_payer_days,
            ),
            (
                "pre_due.partial_payer_last_period_days",
                pd.partial_payer_last_period_days,
            ),
            ("pre_due.other_days", pd.other_days),
        ] {
            if d > 31 {
                return Err(err(key, format!("{d} days is more than a month ahead")));
            }
        }
        let h = &self.holds;
        for (key, d) in [
            ("holds.review_dispute", h.review_dispute),
            ("holds.review_complaint", h.review_complaint),
            ("holds.review_hardship", h.review_hardship),
            (
                "holds.review_cease_communication",
                h.review_cease_communication,
            ),
            (
                "holds.review_attorney_represented",
                h.review_attorney_represented,
            ),
            ("holds.review_bankruptcy", h.review_bankruptcy),
            ("holds.review_deceased", h.review_deceased),
            ("holds.review_fraud_claim", h.review_fraud_claim),
            ("holds.review_other", h.review_other),
        ] {
            if !d.is_positive() {
                return Err(err(key, format!("{d:#} is not a positive duration")));
            }
        }
        let a = &self.arrangement;
        if !a.grace.is_positive() {
            return Err(err(
                "arrangement.grace",
                format!("{:#} is not a positive duration", a.grace),
            ));
        }
        if a.tolerance_percent > 100 {
            return Err(err(
                "arrangement.tolerance_percent",
                format!("{} is more than 100", a.tolerance_percent),
            ));
        }
        if a.tolerance_min_minor < 0 {
            return Err(err(
                "arrangement.tolerance_min_minor",
                "must not be negative",
            ));
        }
        if a.misses_to_break == 0 {
            return Err(err("arrangement.misses_to_break", "must be at least 1"));
        }
        if self.contacts.claims_paid_hold.is_negative() {
            return Err(err("contacts.claims_paid_hold", "must not be negative"));
        }
        if pd.at < w.start || pd.at >= w.end {
            return Err(err(
                "pre_due.at",
                format!(
                    "{} is outside the contact window {}-{}",
                    pd.at, w.start, w.end
                ),
            ));
        }
        Ok(())
    }
}

fn check_open(key: &str, open: &[TaskKind]) -> Result<(), PolicyError> {
    for k in open {
        if !ESCALATION_KINDS.contains(k) {
            return Err(err(
                key,
                format!(
                    "{k} cannot be opened by escalation (third_party_call, field_visit, formal_letter, supervisor_review)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DEFAULT_POLICY_TOML;

    #[test]
    fn window_end_before_start_is_refused_naming_the_key() {
        let text = DEFAULT_POLICY_TOML.replace("end = \"21:00\"", "end = \"07:00\"");
        let e = Policy::from_toml_str(&text).expect_err("must refuse");
        assert_eq!(e.key, "contact_window.end");
    }

    #[test]
    fn unknown_zone_is_refused() {
        let text = DEFAULT_POLICY_TOML.replace("Asia/Shanghai", "Mars/Olympus");
        let e = Policy::from_toml_str(&text).expect_err("must refuse");
        assert_eq!(e.key, "default_timezone");
    }

    #[test]
    fn mix_not_summing_to_one_is_refused() {
        let text = DEFAULT_POLICY_TOML.replace("phone_home = 0.10", "phone_home = 0.20");
        let e = Policy::from_toml_str(&text).expect_err("must refuse");
        assert_eq!(e.key, "channel_mix");
    }

    #[test]
    fn key_at_names_section_and_key() {
        let text = "x = 1\n[cadence]\nhours = [\"10:00\",\n  \"25:00\"]\n";
        let off = text.find("\"25").expect("found");
        assert_eq!(key_at(text, off), "cadence.hours");
    }
}
