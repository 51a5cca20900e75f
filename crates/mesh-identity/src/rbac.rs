//! Roles and capability grants (role-based access control).
//!
//! A [`Grant`] is a statement signed by an issuer: "subject may perform these actions on these
//! resources, from `not_before` until `expires`". Roles are named bundles of actions. A
//! [`Policy`] names the issuers it trusts and answers whether a subject, holding some grants,
//! may perform an action on a resource at a given time.
//!
//! Actions are dotted names (`consensus.submit`); a pattern ending in `.*` matches every
//! action under it and `*` matches everything. Resources match the same way with `/`
//! (`models/*`).

use std::collections::BTreeSet;

use mesh_crypto::ed25519::Signature;
use mesh_types::Timestamp;

use crate::canon::{Parser, Writer};
use crate::did::Did;
use crate::error::{Error, Result, malformed};
use crate::identity::Identity;

const DOMAIN: &str = "agentmesh/grant/v1";
/// The most roles plus capabilities one grant may carry.
pub const MAX_ENTRIES: usize = 64;
/// The longest action or resource pattern.
pub const MAX_PATTERN_LEN: usize = 128;

/// A named bundle of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Bootstrap, agent registry, task dispatch, tool server, gateway.
    Coordinator,
    /// Votes in consensus.
    Validator,
    /// Trains in federated rounds.
    Trainer,
    /// Aggregates federated updates.
    Aggregator,
    /// A hosted agent.
    Agent,
    /// Reads status and ledgers.
    Observer,
}

impl Role {
    const ALL: [Role; 7] = [
        Role::Admin,
        Role::Coordinator,
        Role::Validator,
        Role::Trainer,
        Role::Aggregator,
        Role::Agent,
        Role::Observer,
    ];

    /// The action patterns this role grants.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Self::Admin => &["*"],
            Self::Coordinator => &[
                "agent.register",
                "task.*",
                "tool.*",
                "consensus.submit",
                "read.*",
            ],
            Self::Validator => &["consensus.*", "learning.validate", "read.*"],
            Self::Trainer => &["learning.train", "read.*"],
            Self::Aggregator => &["learning.aggregate", "read.*"],
            Self::Agent => &["agent.message", "tool.invoke", "memory.*", "read.*"],
            Self::Observer => &["read.*"],
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> Result<Self> {
        Self::ALL
            .get(usize::from(c))
            .copied()
            .ok_or_else(|| malformed("grant", format!("unknown role {c}")))
    }
}

/// Permission to perform actions matching `action` on resources matching `resource`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability {
    /// Action pattern (`learning.train`, `tool.*`, `*`).
    pub action: String,
    /// Resource pattern (`models/digits`, `models/*`, `*`).
    pub resource: String,
}

impl Capability {
    /// A capability.
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            resource: resource.into(),
        }
    }
}

fn check_pattern(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.len() <= MAX_PATTERN_LEN
        && p.bytes().all(|b| b.is_ascii_graphic())
        && (!p.contains('*')
            || p == "*"
            || (p.ends_with(".*") || p.ends_with("/*")) && p.matches('*').count() == 1);
    if ok {
        Ok(())
    } else {
        Err(malformed(
            "grant",
            format!("pattern {p:?}: a name, `prefix.*`, `prefix/*` or `*`"),
        ))
    }
}

fn check_name(name: &str, separator: char) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PATTERN_LEN
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'*')
        && name
            .split(separator)
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(Error::Denied {
            detail: format!("{name:?} is not a valid action or resource name"),
        })
    }
}

/// Whether `pattern` matches `name`: exact, `*`, or `prefix.*` / `prefix/*`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return name.starts_with(prefix) && name.len() > prefix.len();
    }
    pattern == name
}

/// A signed grant of roles and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who signed it.
    pub issuer: Did,
    /// Who it empowers.
    pub subject: Did,
    /// Roles granted (on every resource).
    pub roles: BTreeSet<Role>,
    /// Capabilities granted.
    pub capabilities: BTreeSet<Capability>,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity (exclusive).
    pub expires: Timestamp,
    /// The issuer's signature.
    pub signature: Signature,
}

impl Grant {
    /// Issues a grant signed by `issuer`.
    pub fn issue(
        issuer: &Identity,
        subject: Did,
        roles: BTreeSet<Role>,
        capabilities: BTreeSet<Capability>,
        not_before: Timestamp,
        expires: Timestamp,
    ) -> Result<Self> {
        let mut g = Self {
            issuer: issuer.did().clone(),
            subject,
            roles,
            capabilities,
            not_before,
            expires,
            signature: Signature([0; 64]),
        };
        g.check_shape()?;
        g.signature = issuer.sign(&g.body());
        Ok(g)
    }

    fn check_shape(&self) -> Result<()> {
        if self.roles.len() + self.capabilities.len() > MAX_ENTRIES {
            return Err(Error::TooLarge {
                what: "grant entries",
                len: (self.roles.len() + self.capabilities.len()) as u64,
                max: MAX_ENTRIES as u64,
            });
        }
        for c in &self.capabilities {
            check_pattern(&c.action)?;
            check_pattern(&c.resource)?;
        }
        if self.expires <= self.not_before {
            return Err(malformed("grant", "expires before it starts"));
        }
        Ok(())
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new(DOMAIN);
        w.did(&self.issuer)
            .did(&self.subject)
            .u64(self.roles.len() as u64);
        for r in &self.roles {
            w.fixed(&[r.code()]);
        }
        w.u64(self.capabilities.len() as u64);
        for c in &self.capabilities {
            w.bytes(c.action.as_bytes()).bytes(c.resource.as_bytes());
        }
        w.u64(self.not_before.0).u64(self.expires.0).finish()
    }

    /// Checks the signature, the shape and the validity period at `now`.
    pub fn verify(&self, now: Timestamp) -> Result<()> {
        self.check_shape()?;
        self.issuer
            .verifying_key()?
            .verify(&self.body(), &self.signature)
            .map_err(|_| Error::BadSignature { what: "grant" })?;
        if now < self.not_before {
            return Err(Error::NotYetValid {
                what: "grant",
                not_before: self.not_before.0,
                now: now.0,
            });
        }
        if now >= self.expires {
            return Err(Error::Expired {
                what: "grant",
                expired_at: self.expires.0,
                now: now.0,
            });
        }
        Ok(())
    }

    /// Whether the grant (ignoring signature and time) covers `action` on `resource`.
    pub fn covers(&self, action: &str, resource: &str) -> bool {
        self.roles
            .iter()
            .any(|r| r.actions().iter().any(|a| pattern_matches(a, action)))
            || self.capabilities.iter().any(|c| {
                pattern_matches(&c.action, action) && pattern_matches(&c.resource, resource)
            })
    }

    /// The encoding: body then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decodes [`Self::to_bytes`] (does not verify).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut p = Parser::new("grant", DOMAIN, bytes)?;
        let issuer = p.did()?;
        let subject = p.did()?;
        let n_roles = p.count("grant roles", MAX_ENTRIES)?;
        let mut roles = BTreeSet::new();
        for _ in 0..n_roles {
            roles.insert(Role::from_code(p.fixed::<1>()?[0])?);
        }
        let n_caps = p.count("grant capabilities", MAX_ENTRIES)?;
        let mut capabilities = BTreeSet::new();
        for _ in 0..n_caps {
            let action = p.string(MAX_PATTERN_LEN)?.to_owned();
            let resource = p.string(MAX_PATTERN_LEN)?.to_owned();
            capabilities.insert(Capability { action, resource });
        }
        let not_before = Timestamp(p.u64()?);
        let expires = Timestamp(p.u64()?);
        let signature = p.signature()?;
        p.finish()?;
        let g = Self {
            issuer,
            subject,
            roles,
            capabilities,
            not_before,
            expires,
            signature,
        };
        g.check_shape()?;
        // One grant, one encoding: duplicate or unordered entries are refused.
        if g.to_bytes() != bytes {
            return Err(malformed(
                "grant",
                "not in canonical form (entries must be sorted and unique)",
            ));
        }
        Ok(g)
    }
}

/// Which issuers are trusted to grant permissions.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    trusted_issuers: BTreeSet<Did>,
}

impl Policy {
    /// A policy trusting `issuers`.
    pub fn new(issuers: impl IntoIterator<Item = Did>) -> Self {
        Self {
            trusted_issuers: issuers.into_iter().collect(),
        }
    }

    /// Allows `subject` to do `action` on `resource` at `now` if one of `grants` is for that
    /// subject, from a trusted issuer, valid now, and covers it. Otherwise says why not.
    ///
    /// The requested action and resource must be plain names: no `*`, and no empty, `.` or
    /// `..` segments (so `models/*` cannot be escaped with `models/../secrets`).
    pub fn check(
        &self,
        grants: &[Grant],
        subject: &Did,
        action: &str,
        resource: &str,
        now: Timestamp,
    ) -> Result<()> {
        check_name(action, '.')?;
        check_name(resource, '/')?;
        let mut reasons = Vec::new();
        for g in grants {
            if &g.subject != subject {
                continue;
            }
            if !self.trusted_issuers.contains(&g.issuer) {
                reasons.push(format!("grant from untrusted issuer {}", g.issuer));
                continue;
            }
            if let Err(e) = g.verify(now) {
                reasons.push(e.to_string());
                continue;
            }
            if g.covers(action, resource) {
                return Ok(());
            }
        }
        let why = if reasons.is_empty() {
            "no grant covers it".to_owned()
        } else {
            reasons.join("; ")
        };
        Err(Error::Denied {
            detail: format!("{subject} may not {action} on {resource}: {why}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("tool.*", "tool.invoke"));
        assert!(!pattern_matches("tool.*", "tool."));
        assert!(!pattern_matches("tool.*", "tools.invoke"));
        assert!(pattern_matches("models/*", "models/digits"));
        assert!(!pattern_matches("learning.train", "learning.trainer"));
        for bad in ["", "a*b", "*.x", "a.*.*", "with space"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }
}
