//! `[[principals]]` in `squall serve`'s config file: who may call the server,
//! each with its tokens (or their SHA-256), role, prefixes and bounds, turned
//! into the service's [`Principal`]s. Read strictly, like the rest of the file.
//!
//! ```toml
//! [[principals]]
//! name = "alice"
//! token_sha256 = "0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376"  # printf alice-secret | sha256sum (or token = "alice-secret")
//! role = "user"                        # or "admin" (default: user)
//! allow = ["s3://lake/analytics/"]     # default: the server's --allow
//! max_running = 2
//! max_queued = 20
//! max_schedules = 10
//! default_deadline = "30m"
//! max_deadline = "4h"
//! default_scan_limit = "100GB"
//! max_scan_limit = "2TB"
//! default_cost_limit = 1.0
//! max_cost_limit = 20.0
//! labels = { team = "analytics" }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use squall_engine::AccessPolicy;
use squall_service::{LimitOverrides, Principal, Role, Secret};

use super::error::{CliError, Result};
use super::units;

/// One `[[principals]]` table.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalFile {
    name: String,
    token: Option<String>,
    token_sha256: Option<String>,
    role: Option<Role>,
    allow: Option<Vec<String>>,
    max_running: Option<usize>,
    max_queued: Option<usize>,
    max_schedules: Option<usize>,
    default_deadline: Option<String>,
    max_deadline: Option<String>,
    default_scan_limit: Option<String>,
    max_scan_limit: Option<String>,
    default_cost_limit: Option<f64>,
    max_cost_limit: Option<f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for PrincipalFile {
    /// Tokens are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalFile")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// What a principal's own prefixes are checked with: the server's writable
/// results folder and the folders no caller may name.
pub struct ServerFolders<'a> {
    pub results_root: &'a str,
    pub deny: &'a [String],
}

impl PrincipalFile {
    /// The principal this table describes.
    pub fn principal(self, folders: &ServerFolders<'_>) -> Result<Principal> {
        let name = self.name.clone();
        let named = |e: String| CliError::InvalidArgument(format!("principal '{name}': {e}"));
        let mut secrets = Vec::new();
        if let Some(token) = self.token {
            secrets.push(Secret::Token(token));
        }
        if let Some(hash) = &self.token_sha256 {
            secrets.push(Secret::sha256_hex(hash).map_err(|e| named(e.to_string()))?);
        }
        let mut principal = Principal::new(&self.name, self.role.unwrap_or(Role::User), secrets)?;
        if let Some(allow) = &self.allow {
            principal.access = Some(Arc::new(AccessPolicy::new(
                allow,
                &[folders.results_root.to_string()],
                folders.deny,
            )?));
        }
        let duration = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| units::parse_duration(t).map_err(|e| named(format!("{key}: {e}"))))
                .transpose()
        };
        let size = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| units::parse_size(t).map_err(|e| named(format!("{key}: {e}"))))
                .transpose()
        };
        principal.limits = LimitOverrides {
            default_deadline: duration("default_deadline", &self.default_deadline)?,
            max_deadline: duration("max_deadline", &self.max_deadline)?,
            default_scan_limit_bytes: size("default_scan_limit", &self.default_scan_limit)?,
            max_scan_limit_bytes: size("max_scan_limit", &self.max_scan_limit)?,
            default_cost_limit_usd: self.default_cost_limit,
            max_cost_limit_usd: self.max_cost_limit,
        };
        principal.max_running = self.max_running;
        principal.max_queued = self.max_queued;
        principal.max_schedules = self.max_schedules;
        principal.default_labels = self.labels;
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_table_is_read_strictly_and_into_bounds() {
        let file: PrincipalFile = toml::from_str(
            "name = \"alice\"\ntoken = \"t\"\nallow = [\"/data/\"]\nmax_running = 2\n\
             max_deadline = \"2h\"\nmax_scan_limit = \"1TB\"\nlabels = { team = \"a\" }\n",
        )
        .unwrap();
        let folders = ServerFolders {
            results_root: "file:///srv/results",
            deny: &["/srv".to_string()],
        };
        let alice = file.principal(&folders).unwrap();
        assert_eq!(alice.role, Role::User);
        assert_eq!(alice.max_running, Some(2));
        assert_eq!(alice.limits.max_deadline.map(|d| d.as_secs()), Some(7200));
        assert_eq!(alice.limits.max_scan_limit_bytes, Some(1_000_000_000_000));
        assert_eq!(alice.default_labels["team"], "a");
        let access = alice.access.as_ref().unwrap();
        assert_eq!(access.allowed(), ["file:///data/"]);
        let unknown = toml::from_str::<PrincipalFile>("name = \"a\"\ntokn = \"t\"\n").unwrap_err();
        assert!(unknown.to_string().contains("tokn"), "{unknown}");
        let role = toml::from_str::<PrincipalFile>("name = \"a\"\nrole = \"root\"\n").unwrap_err();
        assert!(role.to_string().contains("root"), "{role}");
        let no_token: PrincipalFile = toml::from_str("name = \"a\"\n").unwrap();
        assert!(no_token.principal(&folders).is_err());
        let bad: PrincipalFile =
            toml::from_str("name = \"a\"\ntoken = \"t\"\nmax_deadline = \"soon\"\n").unwrap();
        let err = bad.principal(&folders).unwrap_err().to_string();
        assert!(err.contains("principal 'a': max_deadline"), "{err}");
    }
}
