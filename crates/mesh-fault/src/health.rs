//! Component health and alert rules.
//!
//! [`Components`] holds each component's [`Status`] with a reason (the node's overall
//! health is the worst of them). [`Alerts`] evaluates [`Rule`]s over gauges the driver
//! observes: a rule fires once its condition held continuously for its `fire_after`
//! duration, and resolves once the value came back past a separate clear threshold
//! (hysteresis) for `resolve_after`, so a value hovering at the threshold does not flap.
//! Examples: "a peer suspected for more than 5 s" (`suspected_peers >= 1` for 5 s), "no
//! commit for 10 s" (`commit_rate <= 0` for 10 s).
//!
//! Sans-IO: the driver calls [`Alerts::observe`] with each new value, calls
//! [`Alerts::handle_timeout`] at [`Alerts::poll_timeout`] (so a rule fires on time even
//! when no new value arrives), and drains [`Alerts::poll_event`]. The last
//! `history_limit` events stay readable in [`Alerts::history`].
//!
//! ```
//! use std::time::Duration;
//! use mesh_fault::health::{Alerts, Condition, Rule};
//! use mesh_types::Instant;
//!
//! let t = Instant::from_millis;
//! let rule = Rule::new("no-commits", "commit_rate", Condition::Below { fire: 0.0, clear: 0.0 })
//!     .fire_after(Duration::from_secs(10));
//! let mut alerts = Alerts::new(vec![rule], 100).unwrap();
//! alerts.observe("commit_rate", 0.0, t(0));
//! assert_eq!(alerts.poll_timeout(), Some(t(10_000)));
//! alerts.handle_timeout(t(10_000));
//! assert!(alerts.poll_event().unwrap().fired);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mesh_types::Instant;

use crate::error::{Result, setting};

/// How well a component works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Working.
    Healthy,
    /// Working with reduced capacity or guarantees (a minority partition serving reads, a
    /// replica short of `k` copies).
    Degraded,
    /// Not working.
    Unhealthy,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The status.
    pub status: Status,
    /// Why (empty when healthy).
    pub reason: String,
    /// Since when the status holds.
    pub since: Instant,
}

/// Most components tracked.
pub const MAX_COMPONENTS: usize = 256;
/// Longest reason kept (longer ones are cut at a character boundary).
pub const MAX_REASON: usize = 256;

/// The health of a node's components.
#[derive(Debug, Clone, Default)]
pub struct Components {
    components: BTreeMap<String, Health>,
}

impl Components {
    /// No component yet (overall healthy).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name`'s status at `now`; returns the previous health if the status changed
    /// (`None` if unchanged or new). Refused beyond [`MAX_COMPONENTS`] components.
    pub fn set(
        &mut self,
        name: &str,
        status: Status,
        reason: &str,
        now: Instant,
    ) -> Result<Option<Health>> {
        let reason = truncate(reason, MAX_REASON);
        if let Some(h) = self.components.get_mut(name) {
            if h.status == status {
                h.reason = reason;
                return Ok(None);
            }
            let previous = std::mem::replace(
                h,
                Health {
                    status,
                    reason,
                    since: now,
                },
            );
            return Ok(Some(previous));
        }
        if self.components.len() >= MAX_COMPONENTS {
            return Err(setting(
                "component",
                format!("at most {MAX_COMPONENTS} components"),
            ));
        }
        self.components.insert(
            truncate(name, MAX_REASON),
            Health {
                status,
                reason,
                since: now,
            },
        );
        Ok(None)
    }

    /// One component's health.
    pub fn get(&self, name: &str) -> Option<&Health> {
        self.components.get(name)
    }

    /// Every component, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Health)> {
        self.components.iter().map(|(n, h)| (n.as_str(), h))
    }

    /// The worst status, and the components that have it (none when all are healthy).
    pub fn overall(&self) -> (Status, Vec<&str>) {
        let worst = self
            .components
            .values()
            .map(|h| h.status)
            .max()
            .unwrap_or(Status::Healthy);
        let names = if worst == Status::Healthy {
            Vec::new()
        } else {
            self.components
                .iter()
                .filter(|(_, h)| h.status == worst)
                .map(|(n, _)| n.as_str())
                .collect()
        };
        (worst, names)
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// When a rule's gauge is in breach and when it is clear again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// In breach at `value >= fire`, clear at `value < clear` (`clear <= fire`).
    Above {
        /// The firing threshold.
        fire: f64,
        /// The clearing threshold.
        clear: f64,
    },
    /// In breach at `value <= fire`, clear at `value > clear` (`clear >= fire`).
    Below {
        /// The firing threshold.
        fire: f64,
        /// The clearing threshold.
        clear: f64,
    },
}

impl Condition {
    fn breached(self, v: f64) -> bool {
        match self {
            Self::Above { fire, .. } => v >= fire,
            Self::Below { fire, .. } => v <= fire,
        }
    }

    fn cleared(self, v: f64) -> bool {
        match self {
            Self::Above { clear, .. } => v < clear,
            Self::Below { clear, .. } => v > clear,
        }
    }
}

/// An alert rule over one gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The alert's name.
    pub name: String,
    /// The gauge it watches.
    pub metric: String,
    /// Breach and clear thresholds.
    pub condition: Condition,
    /// How long the breach must last before firing (Prometheus' `for`). Default 0.
    pub fire_after: Duration,
    /// How long the value must stay clear before resolving. Default 0.
    pub resolve_after: Duration,
}

impl Rule {
    /// A rule that fires as soon as the condition is breached and resolves as soon as it
    /// clears.
    pub fn new(name: &str, metric: &str, condition: Condition) -> Self {
        Self {
            name: name.to_owned(),
            metric: metric.to_owned(),
            condition,
            fire_after: Duration::ZERO,
            resolve_after: Duration::ZERO,
        }
    }

    /// Sets [`Rule::fire_after`].
    #[must_use]
    pub fn fire_after(mut self, d: Duration) -> Self {
        self.fire_after = d;
        self
    }

    /// Sets [`Rule::resolve_after`].
    #[must_use]
    pub fn resolve_after(mut self, d: Duration) -> Self {
        self.resolve_after = d;
        self
    }
}

/// An alert fired or resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// The rule's name.
    pub rule: String,
    /// `true`: fired; `false`: resolved.
    pub fired: bool,
    /// The gauge's last value.
    pub value: f64,
    /// When.
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Inactive,
    Pending { since: Instant },
    Firing,
    Resolving { since: Instant },
}

/// Most rules.
pub const MAX_RULES: usize = 256;

/// Alert rules and their state.
#[derive(Debug, Clone)]
pub struct Alerts {
    rules: Vec<(Rule, Phase)>,
    values: BTreeMap<String, f64>,
    history: VecDeque<AlertEvent>,
    events: VecDeque<AlertEvent>,
    history_limit: usize,
}

impl Alerts {
    /// Alerts over `rules`, keeping the last `history_limit` events (and at most that many
    /// unpolled ones).
    pub fn new(rules: Vec<Rule>, history_limit: usize) -> Result<Self> {
        if rules.len() > MAX_RULES {
            return Err(setting("rules", format!("at most {MAX_RULES}")));
        }
        if history_limit == 0 {
            return Err(setting("history_limit", "must be above zero"));
        }
        for r in &rules {
            let ok = match r.condition {
                Condition::Above { fire, clear } => {
                    fire.is_finite() && clear.is_finite() && clear <= fire
                }
                Condition::Below { fire, clear } => {
                    fire.is_finite() && clear.is_finite() && clear >= fire
                }
            };
            if !ok {
                return Err(setting(
                    "condition",
                    format!(
                        "rule {}: thresholds must be finite, clear on the safe side of fire",
                        r.name
                    ),
                ));
            }
        }
        Ok(Self {
            rules: rules.into_iter().map(|r| (r, Phase::Inactive)).collect(),
            values: BTreeMap::new(),
            history: VecDeque::new(),
            events: VecDeque::new(),
            history_limit,
        })
    }

    /// Records the gauge `metric` at `value` (NaN is ignored; gauges no rule watches are
    /// not kept) and evaluates the rules watching it.
    pub fn observe(&mut self, metric: &str, value: f64, now: Instant) {
        if value.is_nan() || !self.rules.iter().any(|(r, _)| r.metric == metric) {
            return;
        }
        self.values.insert(metric.to_owned(), value);
        self.evaluate(now, Some(metric));
    }

    /// Fires and resolves rules whose duration is up at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.evaluate(now, None);
    }

    /// When a pending rule would fire or a resolving one resolve, if its gauge stays.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rules
            .iter()
            .filter_map(|(r, p)| match p {
                Phase::Pending { since } => Some(*since + r.fire_after),
                Phase::Resolving { since } => Some(*since + r.resolve_after),
                _ => None,
            })
            .min()
    }

    /// The next event not yet polled.
    pub fn poll_event(&mut self) -> Option<AlertEvent> {
        self.events.pop_front()
    }

    /// The rules firing now (resolving ones included).
    pub fn firing(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter(|(_, p)| matches!(p, Phase::Firing | Phase::Resolving { .. }))
            .map(|(r, _)| r.name.as_str())
    }

    /// The last events, oldest first.
    pub fn history(&self) -> &VecDeque<AlertEvent> {
        &self.history
    }

    fn evaluate(&mut self, now: Instant, only: Option<&str>) {
        let mut out = Vec::new();
        for (rule, phase) in &mut self.rules {
            if only.is_some_and(|m| m != rule.metric) {
                continue;
            }
            let Some(&v) = self.values.get(&rule.metric) else {
                continue;
            };
            let c = rule.condition;
            let (next, event) = match *phase {
                Phase::Inactive | Phase::Pending { .. } if !c.breached(v) => {
                    (Phase::Inactive, None)
                }
                Phase::Inactive => {
                    if rule.fire_after.is_zero() {
                        (Phase::Firing, Some(true))
                    } else {
                        (Phase::Pending { since: now }, None)
                    }
                }
                Phase::Pending { since } => {
                    if now >= since + rule.fire_after {
                        (Phase::Firing, Some(true))
                    } else {
                        (Phase::Pending { since }, None)
                    }
                }
                Phase::Firing | Phase::Resolving { .. } if !c.cleared(v) => (Phase::Firing, None),
                Phase::Firing => {
                    if rule.resolve_after.is_zero() {
                        (Phase::Inactive, Some(false))
                    } else {
                        (Phase::Resolving { since: now }, None)
                    }
                }
                Phase::Resolving { since } => {
                    if now >= since + rule.resolve_after {
                        (Phase::Inactive, Some(false))
                    } else {
                        (Phase::Resolving { since }, None)
                    }
                }
            };
            *phase = next;
            if let Some(fired) = event {
                out.push(AlertEvent {
                    rule: rule.name.clone(),
                    fired,
                    value: v,
                    at: now,
                });
            }
        }
        for e in out {
            push_bounded(&mut self.history, e.clone(), self.history_limit);
            push_bounded(&mut self.events, e, self.history_limit);
        }
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, limit: usize) {
    if q.len() >= limit {
        q.pop_front();
    }
    q.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn drain(a: &mut Alerts) -> Vec<(String, bool, u64)> {
        std::iter::from_fn(|| a.poll_event())
            .map(|e| (e.rule, e.fired, e.at.as_nanos() / 1_000_000))
            .collect()
    }

    #[test]
    fn a_rule_fires_only_after_its_duration_of_continuous_breach() {
        let rule = Rule::new(
            "peer-suspected",
            "suspected_peers",
            Condition::Above {
                fire: 1.0,
                clear: 1.0,
            },
        )
        .fire_after(Duration::from_secs(5));
        let mut a = Alerts::new(vec![rule], 10).unwrap();
        a.observe("suspected_peers", 1.0, t(0));
        // Cleared at 3 s: the clock starts again.
        a.observe("suspected_peers", 0.0, t(3_000));
        assert_eq!(a.poll_timeout(), None);
        a.observe("suspected_peers", 2.0, t(4_000));
        a.handle_timeout(t(8_999));
        assert!(drain(&mut a).is_empty());
        assert_eq!(a.poll_timeout(), Some(t(9_000)));
        a.handle_timeout(t(9_000));
        assert_eq!(drain(&mut a), vec![("peer-suspected".into(), true, 9_000)]);
        assert_eq!(a.firing().collect::<Vec<_>>(), vec!["peer-suspected"]);
        a.observe("suspected_peers", 0.0, t(12_000));
        assert_eq!(
            drain(&mut a),
            vec![("peer-suspected".into(), false, 12_000)]
        );
        assert_eq!(a.history().len(), 2);
    }

    #[test]
    fn hysteresis_keeps_a_hovering_value_from_flapping() {
        let rule = Rule::new(
            "hot",
            "cpu",
            Condition::Above {
                fire: 0.9,
                clear: 0.7,
            },
        )
        .resolve_after(Duration::from_secs(2));
        let mut a = Alerts::new(vec![rule], 10).unwrap();
        let mut now = 0;
        for v in [0.95, 0.85, 0.91, 0.8, 0.89, 0.93, 0.75] {
            a.observe("cpu", v, t(now));
            now += 1_000;
        }
        assert_eq!(
            drain(&mut a),
            vec![("hot".into(), true, 0)],
            "fired once, never resolved"
        );
        // Below the clear threshold, but for less than resolve_after: still firing.
        a.observe("cpu", 0.5, t(now));
        a.observe("cpu", 0.95, t(now + 1_000));
        a.observe("cpu", 0.5, t(now + 2_000));
        a.handle_timeout(t(now + 3_999));
        assert!(drain(&mut a).is_empty());
        a.handle_timeout(t(now + 4_000));
        assert_eq!(drain(&mut a), vec![("hot".into(), false, now + 4_000)]);
    }

    #[test]
    fn no_commit_for_ten_seconds_fires_on_the_timer() {
        let rule = Rule::new(
            "stalled",
            "commit_rate",
            Condition::Below {
                fire: 0.0,
                clear: 0.0,
            },
        )
        .fire_after(Duration::from_secs(10));
        let mut a = Alerts::new(vec![rule], 2).unwrap();
        a.observe("commit_rate", 3.0, t(0));
        a.observe("commit_rate", 0.0, t(1_000));
        a.observe("other", 0.0, t(1_000));
        a.observe("commit_rate", f64::NAN, t(2_000));
        assert_eq!(a.poll_timeout(), Some(t(11_000)));
        a.handle_timeout(t(11_000));
        a.observe("commit_rate", 1.0, t(12_000));
        a.observe("commit_rate", 0.0, t(13_000));
        a.handle_timeout(t(23_000));
        // History keeps the last two of three events.
        let h: Vec<bool> = a.history().iter().map(|e| e.fired).collect();
        assert_eq!(h, vec![false, true]);
    }

    #[test]
    fn components_report_the_worst_status() {
        let mut c = Components::new();
        assert_eq!(c.overall(), (Status::Healthy, vec![]));
        c.set("transport", Status::Healthy, "", t(0)).unwrap();
        c.set(
            "consensus",
            Status::Degraded,
            "minority partition: not committing",
            t(1),
        )
        .unwrap();
        c.set("store", Status::Degraded, "disk 91% full", t(2))
            .unwrap();
        assert_eq!(c.overall(), (Status::Degraded, vec!["consensus", "store"]));
        let previous = c
            .set("consensus", Status::Unhealthy, "no quorum for 60 s", t(3))
            .unwrap();
        assert_eq!(previous.map(|h| h.status), Some(Status::Degraded));
        assert_eq!(c.overall(), (Status::Unhealthy, vec!["consensus"]));
        assert_eq!(
            c.set("store", Status::Degraded, "disk 92% full", t(4))
                .unwrap(),
            None
        );
        assert_eq!(c.get("store").unwrap().since, t(2));
        for i in 0..MAX_COMPONENTS - 3 {
            c.set(&format!("c{i}"), Status::Healthy, "", t(5)).unwrap();
        }
        assert!(c.set("one-too-many", Status::Healthy, "", t(5)).is_err());
        let long = "é".repeat(MAX_REASON);
        c.set("store", Status::Degraded, &long, t(6)).unwrap();
        assert!(c.get("store").unwrap().reason.len() <= MAX_REASON);
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = Rule::new(
            "x",
            "m",
            Condition::Above {
                fire: 0.5,
                clear: 0.9,
            },
        );
        assert!(Alerts::new(vec![bad], 10).is_err());
        let nan = Rule::new(
            "x",
            "m",
            Condition::Below {
                fire: f64::NAN,
                clear: 0.0,
            },
        );
        assert!(Alerts::new(vec![nan], 10).is_err());
        assert!(Alerts::new(vec![], 0).is_err());
    }
}
