//! The collections policy: every number the rules use, loaded from TOML and checked whole.
//!
//! `deploy/policy/README.md` documents every key with its default and where the default
//! comes from. A policy is parsed and validated completely before anything runs on it:
//! [`Policy::from_toml_str`] refuses a file naming the key and the problem.
//!
//! This module holds the [`Policy`] itself, its version and the shipped files; the
//! sections' types (contact window, promise timing, escalation, cadence, caps, ...) are in
//! `sections`, and loading and checking a file in `validate`.

use std::{fmt, fmt::Write as _, sync::OnceLock};

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod sections;
mod validate;

pub use sections::{
    Arrangement, BrokenPromiseStep, BucketStep, ByBucket, Cadence, Caps, ChannelMix, ContactWindow,
    Contacts, Escalation, Holds, Hours, PreDue, PriorityCriterion, PriorityRules,
    PromiseDuringPlan, PromiseRules, Segments, WeekdayHours, WeekdayName, BUCKETS,
    ESCALATION_KINDS,
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
///
/// Build it with [`Policy::from_toml_str`] (or [`Policy::default`]) and leave it as it is
/// afterwards: its [`version`](Policy::version) is computed once, when it is loaded (or
/// first asked for), and kept with it and its clones.
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
    /// Contact outcomes: per-debtor caps, contact points, lost contact (optional section).
    #[serde(default)]
    pub contacts: Contacts,
    /// Hold review dates by reason (optional section).
    #[serde(default)]
    pub holds: Holds,
    /// Payment arrangements: grace, tolerance, misses that break a plan (optional
    /// section). Left out of the canonical form while it holds its defaults, so the
    /// versions of policies written before it stay as they were.
    #[serde(default, skip_serializing_if = "Arrangement::is_default")]
    pub arrangement: Arrangement,
    /// The content hash, once computed (see [`Policy::version`]).
    #[serde(skip)]
    version: VersionCache,
}

/// [`Policy::version`] once computed. It is not part of the policy's content: neither
/// serialised (so the hash covers the content alone) nor compared.
#[derive(Clone, Default)]
struct VersionCache(OnceLock<String>);

impl PartialEq for VersionCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for VersionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
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
    ///
    /// Computed once, when the policy is loaded or first asked for, and kept: the rules
    /// ask for it at every decision. A debug build checks that the policy has not been
    /// changed since.
    #[must_use]
    pub fn version(&self) -> &str {
        let version = self.version.0.get_or_init(|| self.content_hash());
        debug_assert_eq!(
            *version,
            self.content_hash(),
            "the policy changed after its version was computed"
        );
        version
    }

    /// The hash behind [`Policy::version`]: `p-` and the first 6 bytes of the SHA-256 of
    /// the policy's canonical JSON, in hex.
    fn content_hash(&self) -> String {
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

    #[test]
    fn version_is_kept_with_the_policy_and_is_the_content_hash() {
        let a = Policy::default();
        assert_eq!(a.version.0.get().map(String::as_str), Some(a.version()));
        assert_eq!(a.version(), a.content_hash());
        // The shipped files' versions, as recorded in decisions since they were written.
        assert_eq!(a.version(), "p-d687ff492b0c");
        let reg_f = Policy::from_toml_str(US_REG_F_POLICY_TOML).expect("valid");
        assert_eq!(reg_f.version(), "p-f7202c476250");
        // Deserialised without from_toml_str, the version is computed on first use.
        let b: Policy = toml::from_str(DEFAULT_POLICY_TOML).expect("valid");
        assert!(b.version.0.get().is_none());
        assert_eq!(b.version(), a.version());
        assert_eq!(a, b);
        // A clone keeps it, and stays equal.
        let c = a.clone();
        assert_eq!(c.version.0.get().map(String::as_str), Some(a.version()));
        assert_eq!(c, a);
    }
}
