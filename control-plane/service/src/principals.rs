//! Who calls the server. Every API token belongs to a principal: a name, a
//! role, the URL prefixes it may name, and its own bounds (jobs running and
//! waiting, schedules, deadlines, scan and cost limits, default labels).
//!
//! # What belongs here
//! [`Principal`] and [`Principals`] (finding a caller by token, in constant
//! time for every token, a token given as itself or as its SHA-256).
//! A `user` sees and cancels only its own jobs and schedules, and changes
//! only the catalog tables it put; an `admin` sees and changes everything.
//! What a principal may ask for is checked where a job is taken in
//! (`submission`), using the policy and limits kept here.

use std::collections::BTreeMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::limits::{Limits, check_label_key};
use squall_engine::access::AccessPolicy;
use squall_engine::error::SquallError;

/// The name `--token` (and `SQUALL_TOKENS`, the config's `tokens`) gives its
/// principal: one admin holding every such token.
pub const TOKEN_PRINCIPAL: &str = "admin";

/// Longest principal name.
pub const MAX_PRINCIPAL_NAME: usize = 63;

/// What a principal may see and change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every job, schedule and catalog table.
    Admin,
    /// Its own jobs and schedules, the catalog tables it put (it reads all).
    User,
}

/// A token as configured: the token itself, or its SHA-256 (hex).
#[derive(Clone)]
pub enum Secret {
    Token(String),
    Sha256([u8; 32]),
}

impl Secret {
    /// A SHA-256 given as 64 hexadecimal digits.
    pub fn sha256_hex(hex: &str) -> Result<Self, SquallError> {
        let hex = hex.trim();
        let bad = || {
            SquallError::InvalidArgument(
                "a token hash must be the SHA-256 of the token as 64 hexadecimal digits".into(),
            )
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Secret::Sha256(bytes))
    }

    /// Whether `token` is this secret, in time independent of where they differ.
    fn matches(&self, token: &str, token_hash: &[u8; 32]) -> bool {
        match self {
            Secret::Token(known) => {
                !known.is_empty() && bool::from(known.as_bytes().ct_eq(token.as_bytes()))
            }
            Secret::Sha256(known) => bool::from(known.ct_eq(token_hash)),
        }
    }
}

/// A principal's own bounds, each replacing the server's where given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitOverrides {
    pub default_deadline: Option<std::time::Duration>,
    pub max_deadline: Option<std::time::Duration>,
    pub default_scan_limit_bytes: Option<u64>,
    pub max_scan_limit_bytes: Option<u64>,
    pub default_cost_limit_usd: Option<f64>,
    pub max_cost_limit_usd: Option<f64>,
}

/// One caller of the server.
#[derive(Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    secrets: Vec<Secret>,
    /// The URLs its jobs, tables and outputs may name (None: the server's).
    pub access: Option<Arc<AccessPolicy>>,
    /// Its own bounds of what it may ask for.
    pub limits: LimitOverrides,
    /// Its jobs running at once (None: only the server's `max_running`).
    pub max_running: Option<usize>,
    /// Its jobs waiting to run (None: only the server's queue).
    pub max_queued: Option<usize>,
    /// Its schedules (None: only the server's cap).
    pub max_schedules: Option<usize>,
    /// Labels its jobs get unless they set the key themselves.
    pub default_labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for Principal {
    /// Secrets are counted, never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tokens", &format_args!("{} (hidden)", self.secrets.len()))
            .field("limits", &self.limits)
            .field("max_running", &self.max_running)
            .field("max_queued", &self.max_queued)
            .field("max_schedules", &self.max_schedules)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// A principal named `name` (`a-z 0-9 _ . -`), known by `secrets`, with
    /// the server's prefixes and bounds until given its own.
    pub fn new(name: &str, role: Role, secrets: Vec<Secret>) -> Result<Self, SquallError> {
        check_label_key(name).map_err(|_| {
            SquallError::InvalidArgument(format!(
                "principal name '{}' must be 1 to {MAX_PRINCIPAL_NAME} characters of a-z, 0-9, '_', '.', '-'",
                name.escape_default()
            ))
        })?;
        let secrets: Vec<Secret> = secrets
            .into_iter()
            .filter(|s| !matches!(s, Secret::Token(t) if t.trim().is_empty()))
            .collect();
        if secrets.is_empty() {
            return Err(SquallError::InvalidArgument(format!(
                "principal '{name}' has no token (token or token_sha256)"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            role,
            secrets,
            access: None,
            limits: LimitOverrides::default(),
            max_running: None,
            max_queued: None,
            max_schedules: None,
            default_labels: BTreeMap::new(),
        })
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this principal may see and change what `owner` owns.
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin() || self.name == owner
    }

    /// The URLs it may name: its own prefixes, or the server's.
    pub fn access<'a>(&'a self, server: &'a Arc<AccessPolicy>) -> &'a Arc<AccessPolicy> {
        self.access.as_ref().unwrap_or(server)
    }

    /// Its bounds: the server's, with its own in their place.
    pub fn limits(&self, server: &Limits) -> Limits {
        let own = &self.limits;
        Limits {
            default_deadline: own.default_deadline.unwrap_or(server.default_deadline),
            max_deadline: own.max_deadline.unwrap_or(server.max_deadline),
            default_scan_limit_bytes: own
                .default_scan_limit_bytes
                .unwrap_or(server.default_scan_limit_bytes),
            max_scan_limit_bytes: own
                .max_scan_limit_bytes
                .unwrap_or(server.max_scan_limit_bytes),
            default_cost_limit_usd: own.default_cost_limit_usd.or(server.default_cost_limit_usd),
            max_cost_limit_usd: own.max_cost_limit_usd.unwrap_or(server.max_cost_limit_usd),
            ..server.clone()
        }
    }

    /// Refuses bounds that contradict themselves (over `server`'s), and
    /// default labels that are not labels.
    pub fn validate(&self, server: &Limits) -> Result<(), SquallError> {
        let named = |e: SquallError| {
            SquallError::InvalidArgument(format!("principal '{}': {e}", self.name))
        };
        let limits = self.limits(server);
        limits.validate().map_err(named)?;
        limits.check_labels(&self.default_labels).map_err(named)?;
        if self.max_running == Some(0) || self.max_queued == Some(0) {
            return Err(named(SquallError::InvalidArgument(
                "max_running and max_queued must be at least 1".into(),
            )));
        }
        Ok(())
    }
}

/// Every principal of a server.
#[derive(Debug, Clone)]
pub struct Principals {
    all: Vec<Arc<Principal>>,
}

impl Principals {
    /// Refuses an empty list, two principals of one name, a token that two
    /// principals share, and bounds that contradict `limits`, the server's.
    pub fn new(principals: Vec<Principal>, limits: &Limits) -> Result<Self, SquallError> {
        if principals.is_empty() {
            return Err(SquallError::InvalidArgument(
                "the service needs at least one API token (--token, SQUALL_TOKENS or [[principals]])"
                    .into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for principal in &principals {
            principal.validate(limits)?;
            if !names.insert(principal.name.as_str()) {
                return Err(SquallError::InvalidArgument(format!(
                    "principal '{}' is named twice",
                    principal.name
                )));
            }
            for secret in &principal.secrets {
                let key = match secret {
                    Secret::Token(t) => sha256(t),
                    Secret::Sha256(h) => *h,
                };
                if !tokens.insert(key) {
                    return Err(SquallError::InvalidArgument(format!(
                        "a token of principal '{}' belongs to another principal too",
                        principal.name
                    )));
                }
            }
        }
        Ok(Self {
            all: principals.into_iter().map(Arc::new).collect(),
        })
    }

    /// The principal `token` belongs to. Every secret of every principal is
    /// compared, so the time taken does not say which matched, or how far.
    pub fn find(&self, token: &str) -> Option<Arc<Principal>> {
        let hash = sha256(token);
        let mut found = None;
        for principal in &self.all {
            let mut matched = false;
            for secret in &principal.secrets {
                matched |= secret.matches(token, &hash);
            }
            if matched && found.is_none() {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// The principal named `name`.
    pub fn named(&self, name: &str) -> Option<&Arc<Principal>> {
        self.all.iter().find(|p| p.name == name)
    }

    pub fn all(&self) -> &[Arc<Principal>] {
        &self.all
    }
}

/// SHA-256 of `text`.
pub fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, role: Role, secrets: Vec<Secret>) -> Principal {
        Principal::new(name, role, secrets).unwrap()
    }

    #[test]
    fn tokens_find_their_principal_as_themselves_or_as_hashes() {
        let hash: String = sha256("bob-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let limits = Limits::for_backend(2);
        let principals = Principals::new(
            vec![
                principal(
                    "alice",
                    Role::User,
                    vec![Secret::Token("alice-token".into())],
                ),
                principal("bob", Role::Admin, vec![Secret::sha256_hex(&hash).unwrap()]),
            ],
            &limits,
        )
        .unwrap();
        assert_eq!(principals.find("alice-token").unwrap().name, "alice");
        assert_eq!(principals.find("bob-token").unwrap().name, "bob");
        assert!(principals.find("alice-toke").is_none());
        assert!(principals.find(&hash).is_none(), "the hash is not a token");
        assert!(principals.find("").is_none());
        // Shown without secrets.
        let shown = format!("{:?}", principals);
        assert!(
            !shown.contains("alice-token") && !shown.contains(&hash),
            "{shown}"
        );
        // Refused: two of one name, a shared token, no token, a bad name or hash.
        let twice = Principals::new(
            vec![
                principal("a", Role::User, vec![Secret::Token("x".into())]),
                principal("a", Role::User, vec![Secret::Token("y".into())]),
            ],
            &limits,
        );
        assert!(twice.unwrap_err().to_string().contains("named twice"));
        let x_hash: String = sha256("x").iter().map(|b| format!("{b:02x}")).collect();
        let shared = Principals::new(
            vec![
                principal("a", Role::User, vec![Secret::Token("x".into())]),
                principal("b", Role::User, vec![Secret::sha256_hex(&x_hash).unwrap()]),
            ],
            &limits,
        );
        assert!(
            shared
                .unwrap_err()
                .to_string()
                .contains("another principal")
        );
        let none = Principal::new("c", Role::User, vec![Secret::Token(" ".into())]);
        assert!(none.unwrap_err().to_string().contains("no token"));
        let named = Principal::new("Bad Name", Role::User, vec![Secret::Token("t".into())]);
        assert!(named.unwrap_err().to_string().contains("principal name"));
        assert!(Secret::sha256_hex("abc").is_err());
        assert!(Principals::new(vec![], &limits).is_err());
        // Its own bounds replace the server's; the rest stay.
        let mut carol = principal("carol", Role::User, vec![Secret::Token("c".into())]);
        carol.limits.max_deadline = Some(std::time::Duration::from_secs(60));
        carol.limits.default_deadline = Some(std::time::Duration::from_secs(30));
        let own = carol.limits(&limits);
        assert_eq!(own.max_deadline.as_secs(), 60);
        assert_eq!(own.max_queued, limits.max_queued);
        carol.limits.default_deadline = Some(std::time::Duration::from_secs(120));
        let err = carol.validate(&limits).unwrap_err().to_string();
        assert!(
            err.contains("principal 'carol'") && err.contains("deadline"),
            "{err}"
        );
    }
}
