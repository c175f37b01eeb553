//! Holds and contact restrictions as account state: what is in force at an instant, and
//! what it forbids.
//!
//! A hold (`hold.placed` .. `hold.released`) stops collection contact: all of it (scope
//! `all`, or a reason that stops everything whatever the scope says), or some channels.
//! A restriction (`contact.restricted` .. `contact.unrestricted`, or its `expires_at`)
//! removes a channel or a contact point, calls at work, third-party calls, or narrows the
//! hours of contact. Both are recorded by id whatever order their events arrive in: a
//! release or a lift applied before its placement leaves a record that the placement
//! completes, and a placement applied twice changes nothing.
//!
//! Times are the publisher's (`placed_at`, `released_at`, `effective_at`, `expires_at`),
//! so what is in force at an instant does not depend on when events were applied.

use std::borrow::Cow;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    event::{HoldChannel, HoldOutcome, HoldReason, HoldScope, LocalHours, RestrictionKind},
    policy::{ContactWindow, Hours},
    state::AccountState,
    task::{Channel, TaskKind},
};

/// One hold as the account keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// The publisher's id.
    pub hold_id: String,
    /// Why (unknown while only its release has arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<HoldReason>,
    /// What it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<HoldScope>,
    /// When it took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_at: Option<Timestamp>,
    /// When to review it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_at: Option<Timestamp>,
    /// DPD does not advance while it is in force.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_dpd: bool,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Timestamp>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<HoldOutcome>,
}

impl HoldRecord {
    /// In force at `t`: placed by then and not released by then.
    #[must_use]
    pub fn in_force_at(&self, t: Timestamp) -> bool {
        self.placed_at.is_some_and(|p| p <= t) && self.released_at.is_none_or(|r| t < r)
    }

    /// Stops every contact (scope `all`, or a reason that stops all contact).
    #[must_use]
    pub fn stops_all(&self) -> bool {
        matches!(self.scope, Some(HoldScope::All))
            || self.reason.is_some_and(HoldReason::stops_all_contact)
    }

    /// Whether it covers `channel`.
    #[must_use]
    pub fn covers(&self, channel: Channel) -> bool {
        self.stops_all()
            || matches!(&self.scope, Some(HoldScope::Channels(list))
                if list.iter().any(|c| c.task_channel() == Some(channel)))
    }

    /// `hold:<reason>`, the cancel reason of a task it stops.
    #[must_use]
    pub fn label(&self) -> String {
        format!("hold:{}", self.reason.map_or("unknown", HoldReason::as_str))
    }
}

/// One restriction as the account keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictionRecord {
    /// The publisher's id.
    pub restriction_id: String,
    /// What it forbids (unknown while only its lift has arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<RestrictionKind>,
    /// The channel it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<HoldChannel>,
    /// The contact point it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_point_id: Option<String>,
    /// The agreed hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<LocalHours>,
    /// From when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<Timestamp>,
    /// Until when, by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// When it was lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_at: Option<Timestamp>,
}

impl RestrictionRecord {
    /// In force at `t`.
    #[must_use]
    pub fn in_force_at(&self, t: Timestamp) -> bool {
        self.kind.is_some()
            && self.effective_at.is_some_and(|e| e <= t)
            && self.expires_at.is_none_or(|x| t < x)
            && self.lifted_at.is_none_or(|l| t < l)
    }

    /// Whether it forbids a task on `channel` (to `point`, when the task names one).
    #[must_use]
    pub fn forbids(&self, channel: Channel, point: Option<&str>) -> bool {
        let named = |c: Option<HoldChannel>| c.and_then(HoldChannel::task_channel);
        match self.kind {
            Some(RestrictionKind::OptOut) => match (&self.contact_point_id, self.channel) {
                (Some(p), _) => point == Some(p.as_str()),
                (None, Some(_)) => named(self.channel) == Some(channel),
                (None, None) => channel != Channel::None,
            },
            Some(RestrictionKind::DoNotCall) => match (&self.contact_point_id, self.channel) {
                (Some(p), _) => point == Some(p.as_str()),
                (None, Some(_)) => named(self.channel) == Some(channel),
                (None, None) => channel.is_phone(),
            },
            Some(RestrictionKind::WorkplaceProhibited) => channel == Channel::PhoneWork,
            Some(RestrictionKind::ThirdPartyRefused) => channel == Channel::ContactPerson,
            Some(RestrictionKind::AgreedHours) | None => false,
        }
    }

    /// `restriction:<kind>[:<channel or point>]`, the cancel reason of a task it stops.
    #[must_use]
    pub fn label(&self) -> String {
        let kind = self.kind.map_or("unknown", RestrictionKind::as_str);
        match (&self.channel, &self.contact_point_id) {
            (Some(c), _) => format!("restriction:{kind}:{c}"),
            (None, Some(p)) => format!("restriction:{kind}:{p}"),
            (None, None) => format!("restriction:{kind}"),
        }
    }
}

impl AccountState {
    /// The first hold in force at `t` that stops all contact.
    #[must_use]
    pub fn full_hold_at(&self, t: Timestamp) -> Option<&HoldRecord> {
        self.holds
            .iter()
            .find(|h| h.in_force_at(t) && h.stops_all())
    }

    /// The first instant at or after `t` at which no hold stops all contact: `t` itself
    /// when none is in force, the end of the holds in force when their releases are known
    /// (a release dated ahead of its processing, or applied before its placement), `None`
    /// while one runs without a known end.
    #[must_use]
    pub fn contact_resumes_at(&self, t: Timestamp) -> Option<Timestamp> {
        let mut at = t;
        // Each step moves past one hold's release; a release never precedes its own
        // placement's instant in force, so the walk ends within one step per hold.
        for _ in 0..=self.holds.len() {
            match self.full_hold_at(at) {
                None => return Some(at),
                Some(h) => at = h.released_at?,
            }
        }
        None
    }

    /// Why a contact task of `kind` on `channel` (to `point`) may not happen at `t`: the
    /// label of the hold or restriction in force that forbids it. Internal work (reviews,
    /// repairs, verifications) is never forbidden.
    #[must_use]
    pub fn forbidden(
        &self,
        kind: TaskKind,
        channel: Channel,
        point: Option<&str>,
        t: Timestamp,
    ) -> Option<String> {
        if !kind.contacts_customer() || kind.is_internal() {
            return None;
        }
        if let Some(h) = self
            .holds
            .iter()
            .find(|h| h.in_force_at(t) && h.covers(channel))
        {
            return Some(h.label());
        }
        if kind == TaskKind::ThirdPartyCall && self.third_party_refused {
            return Some("restriction:third_party_refused".to_owned());
        }
        self.restrictions
            .iter()
            .find(|r| r.in_force_at(t) && r.forbids(channel, point))
            .map(RestrictionRecord::label)
    }

    /// The hours the debtor agreed to at `t` (the intersection of every `agreed_hours` in
    /// force), if any.
    #[must_use]
    pub fn agreed_hours_at(&self, t: Timestamp) -> Option<Hours> {
        self.restrictions
            .iter()
            .filter(|r| r.in_force_at(t) && r.kind == Some(RestrictionKind::AgreedHours))
            .filter_map(|r| r.hours)
            .map(|h| Hours {
                start: h.start,
                end: h.end,
            })
            .reduce(|a, b| Hours {
                start: a.start.max(b.start),
                end: a.end.min(b.end),
            })
    }

    /// The contact window for this account at `t`: the policy's, narrowed to the hours
    /// the debtor agreed to.
    #[must_use]
    pub fn window<'a>(&self, w: &'a ContactWindow, t: Timestamp) -> Cow<'a, ContactWindow> {
        match self.agreed_hours_at(t) {
            None => Cow::Borrowed(w),
            Some(h) => {
                let mut n = w.clone();
                n.narrowed_to = Some(h);
                Cow::Owned(n)
            }
        }
    }

    /// The reasons of the holds and the kinds of the restrictions in force at `t` (the
    /// account summary's `holds` and `restrictions`).
    #[must_use]
    pub fn in_force_labels(&self, t: Timestamp) -> (Vec<String>, Vec<String>) {
        let mut holds: Vec<String> = self
            .holds
            .iter()
            .filter(|h| h.in_force_at(t))
            .filter_map(|h| h.reason.map(|r| r.as_str().to_owned()))
            .collect();
        holds.sort();
        holds.dedup();
        let mut restrictions: Vec<String> = self
            .restrictions
            .iter()
            .filter(|r| r.in_force_at(t))
            .filter_map(|r| r.kind.map(|k| k.as_str().to_owned()))
            .collect();
        restrictions.sort();
        restrictions.dedup();
        (holds, restrictions)
    }

    /// Local days in `[from, to]` during which a `pause_dpd` hold was in force (DPD counts
    /// net of them, as Fineract's pause does).
    #[must_use]
    pub fn paused_days(&self, from: jiff::civil::Date, now: Timestamp) -> i64 {
        let tz = self.zone();
        let today = now.to_zoned(tz.clone()).date();
        let mut spans: Vec<(jiff::civil::Date, jiff::civil::Date)> = self
            .holds
            .iter()
            .filter(|h| h.pause_dpd)
            .filter_map(|h| {
                let start = h.placed_at?.to_zoned(tz.clone()).date().max(from);
                let end = h
                    .released_at
                    .map_or(today, |r| r.to_zoned(tz.clone()).date())
                    .min(today);
                (start < end).then_some((start, end))
            })
            .collect();
        spans.sort();
        // Overlapping pauses count once.
        let mut total = 0i64;
        let mut cursor: Option<jiff::civil::Date> = None;
        for (start, end) in spans {
            let start = cursor.map_or(start, |c| start.max(c));
            if start < end {
                total += end.since(start).map_or(0, |s| i64::from(s.get_days()));
            }
            cursor = Some(cursor.map_or(end, |c| c.max(end)));
        }
        total
    }
}
