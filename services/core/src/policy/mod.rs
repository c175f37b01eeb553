//! The collections policy: every number the rules use, loaded from TOML and checked whole.
//!
//! `deploy/policy/README.md` documents every key with its default and where the default
//! comes from. A policy is parsed and validated completely before anything runs on it:
//! [`Policy::from_toml_str`] refuses a file naming the key and the problem.
//!
//! This module holds the [`Policy`] itself, its version and the shipped files; the
//! sections' types (contact window, promise timing, escalation, cadence, caps, ...) are in
//! `sections`, and loading and checking a file in `validate`.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod sections;
mod validate;

pub use sections::{
    BrokenPromiseStep, BucketStep, ByBucket, Cadence, Caps, ChannelMix, ContactWindow, Escalation,
    Hours, PreDue, PriorityCriterion, PriorityRules, PromiseRules, Segments, WeekdayHours,
    WeekdayName, BUCKETS, ESCALATION_KINDS,
};

/// The shipped default policy (`deploy/policy/default.toml`), compiled in so that running
/// without `POLICY_FILE` is exactly running with the shipped file.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../../deploy/policy/default.toml");

/// The shipped Regulation F profile (`deploy/policy/us-reg-f.toml`).
pub const US_REG_F_POLICY_TOML: &str = include_str!("../../../../deploy/policy/us-reg-f.toml");

/// A refused policy file: which key and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy key `{key}`: {problem}")]
pub struct PolicyError {
    /// Dotted key path, e.g. `contact_window.end`.
    pub key: String,
    /// The problem.
    pub problem: String,
}

fn err(key: &str, problem: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Zone for customers whose events name none.
    pub default_timezone: String,
    /// When contact is allowed.
    pub contact_window: ContactWindow,
    /// Promise timing.
    pub promise: PromiseRules,
    /// Escalation ladder.
    pub escalation: Escalation,
    /// Priority order and thresholds.
    pub priority: PriorityRules,
    /// Call cadence.
    pub cadence: Cadence,
    /// Phone channel mix.
    pub channel_mix: ChannelMix,
    /// Frequency caps (off by default).
    pub caps: Caps,
    /// Account segments.
    pub segments: Segments,
    /// Reminders before the next due date, by segment.
    pub pre_due: PreDue,
}

impl Default for Policy {
    fn default() -> Self {
        // The shipped file is checked by a unit test, so this cannot fail in a release.
        Self::from_toml_str(DEFAULT_POLICY_TOML).unwrap_or_else(|e| {
            panic!("the built-in default policy is invalid: {e}");
        })
    }
}

impl Policy {
    /// The policy's content hash: recorded with every decision so that one can tell which
    /// policy decided what. Stable across key order and comments.
    #[must_use]
    pub fn version(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let mut out = String::from("p-");
        for b in &digest[..6] {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The default zone, parsed.
    #[must_use]
    pub fn default_zone(&self) -> TimeZone {
        TimeZone::get(&self.default_timezone).unwrap_or(TimeZone::UTC)
    }
}

#[cfg(test)]
mod tests {
    use jiff::{civil::Time, SignedDuration};

    use super::*;

    #[test]
    fn shipped_default_is_valid_and_has_source_numbers() {
        let p = Policy::from_toml_str(DEFAULT_POLICY_TOML).expect("default policy valid");
        assert_eq!(p.contact_window.start, Time::constant(8, 0, 0, 0));
        assert_eq!(p.contact_window.end, Time::constant(21, 0, 0, 0));
        assert_eq!(p.promise.reminder_before, SignedDuration::from_hours(1));
        assert_eq!(p.promise.grace, SignedDuration::from_hours(2));
        assert_eq!(p.promise.max_horizon, SignedDuration::from_hours(48));
        assert!(!p.caps.active(), "caps are off by default");
        assert_eq!(p.pre_due.habitual_late_payer_days, 7);
        assert_eq!(p.pre_due.partial_payer_last_period_days, 1);
        assert_eq!(p.pre_due.other_days, 0);
    }

    #[test]
    fn shipped_reg_f_profile_is_valid_and_caps_calls() {
        let p = Policy::from_toml_str(US_REG_F_POLICY_TOML).expect("reg f policy valid");
        assert_eq!(p.caps.max_call_attempts, 7);
        assert_eq!(p.caps.window_days, 7);
        assert_eq!(
            p.caps.quiet_after_conversation,
            SignedDuration::from_hours(7 * 24)
        );
        assert_eq!(p.contact_window.start, Time::constant(8, 0, 0, 0));
        assert_eq!(p.contact_window.end, Time::constant(21, 0, 0, 0));
        assert_ne!(p.version(), Policy::default().version());
    }

    #[test]
    fn version_changes_with_content_only() {
        let a = Policy::default();
        let b = Policy::from_toml_str(&format!("# comment\n{DEFAULT_POLICY_TOML}")).expect("valid");
        assert_eq!(a.version(), b.version());
        let c =
            Policy::from_toml_str(&DEFAULT_POLICY_TOML.replace("\"2h\"", "\"3h\"")).expect("valid");
        assert_ne!(a.version(), c.version());
    }
}
