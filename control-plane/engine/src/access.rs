//! Which URLs a job may read and write, on a server whose callers should reach
//! only what its operator allows.
//!
//! # What belongs here
//! [`AccessPolicy`]: the prefixes callers may read and write (`--allow`), the
//! prefixes they may only write (the server's results folder), and the
//! prefixes they may never name (the server's own data and work folders); and
//! the normalising of a caller's URL into the one URL that is checked and then
//! used. Relative paths and `memory://` are refused, `..` is resolved, and a
//! local path is checked where its symbolic links lead. `squall run` has no
//! policy: a local user reads what they can.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use url::Url;

use crate::error::{Result, SquallError};

/// What a job does with a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The URL prefixes a server lets its callers name.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Readable and writable.
    allow: Vec<Prefix>,
    /// Writable only (the server's own results folder).
    write_only: Vec<Prefix>,
    /// Never, even inside an allowed prefix (the server's data and work folders),
    /// unless a write-only prefix says otherwise.
    deny: Vec<Prefix>,
}

/// A folder: a normalised URL whose path ends with '/'.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix(Url);

impl Prefix {
    /// A prefix as an operator writes it: a URL or a path (relative to the
    /// working directory), always taken as a folder.
    fn from_operator(location: &str) -> Result<Self> {
        let url = crate::urls::to_url(location)?;
        let mut url = normalize_url(&url, location)?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Self(url))
    }

    fn contains(&self, url: &Url) -> bool {
        let (prefix, path) = (self.0.path(), url.path());
        self.0.scheme() == url.scheme()
            && self.0.host_str() == url.host_str()
            && (path.starts_with(prefix) || prefix.strip_suffix('/') == Some(path))
    }
}

impl AccessPolicy {
    /// `allow`: prefixes callers may read and write; `write_only`: prefixes they
    /// may only write; `deny`: prefixes they may not name at all. Each a URL or
    /// a path; relative paths are taken against the working directory.
    pub fn new(allow: &[String], write_only: &[String], deny: &[String]) -> Result<Self> {
        let prefixes = |list: &[String]| -> Result<Vec<Prefix>> {
            list.iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    Prefix::from_operator(l.trim()).map_err(|e| {
                        SquallError::InvalidArgument(format!("allowed prefix '{l}': {e}"))
                    })
                })
                .collect()
        };
        Ok(Self {
            allow: prefixes(allow)?,
            write_only: prefixes(write_only)?,
            deny: prefixes(deny)?,
        })
    }

    /// The readable and writable prefixes, as normalised.
    pub fn allowed(&self) -> Vec<String> {
        self.allow.iter().map(|p| p.0.to_string()).collect()
    }

    /// Normalises what a caller named (`what`, e.g. "table 'orders'") and checks
    /// that `access` to it is allowed. Returns the URL to use in its place.
    pub fn check(&self, what: &str, location: &str, access: Access) -> Result<Url> {
        let url = normalize(what, location)?;
        self.check_url(what, &url, access)?;
        Ok(url)
    }

    /// Checks a normalised URL.
    fn check_url(&self, what: &str, url: &Url, access: Access) -> Result<()> {
        let forbidden = |reason: String| SquallError::Forbidden {
            what: what.to_string(),
            url: url.to_string(),
            reason,
        };
        if access == Access::Write && self.write_only.iter().any(|p| p.contains(url)) {
            return Ok(());
        }
        if self.deny.iter().any(|p| p.contains(url)) {
            return Err(forbidden(
                "it is inside the server's own data or work folder".into(),
            ));
        }
        if self.allow.iter().any(|p| p.contains(url)) {
            return Ok(());
        }
        Err(forbidden(if self.allow.is_empty() {
            match access {
                Access::Read => "the server allows reading nothing (its operator names what \
                                 callers may use with squall serve --allow PREFIX)"
                    .into(),
                Access::Write => "outputs may go only under the server's results folder \
                                  (leave `output` out) or under a prefix the server allows \
                                  (squall serve --allow PREFIX)"
                    .into(),
            }
        } else {
            format!(
                "it is outside the prefixes the server allows: {}",
                self.allowed().join(", ")
            )
        }))
    }

    /// Checks a file a listing of `table` found, where its links lead: a local
    /// folder may hold a symbolic link to a file outside it.
    pub fn check_listed(&self, table: &str, url: &Url) -> Result<()> {
        if url.scheme() != "file" {
            return Ok(());
        }
        let Ok(path) = url.to_file_path() else {
            return Ok(());
        };
        // A file that went away since the listing is not read either.
        let Ok(real) = path.canonicalize() else {
            return Ok(());
        };
        if real == path {
            return Ok(());
        }
        let real_url = Url::from_file_path(&real).map_err(|_| {
            SquallError::InvalidArgument(format!("cannot make a URL of path {}", real.display()))
        })?;
        self.check_url(&format!("table '{table}'"), &real_url, Access::Read)
            .map_err(|e| match e {
                SquallError::Forbidden { what, reason, .. } => SquallError::Forbidden {
                    what,
                    url: url.to_string(),
                    reason: format!("it links to {real_url}, and {reason}"),
                },
                other => other,
            })
    }
}

/// What a caller named, as the URL the server checks and uses: an absolute
/// path or a `file://` or `s3://` URL, with `..` resolved and, for local
/// paths, symbolic links followed. Relative paths and `memory://` are refused.
pub fn normalize(what: &str, location: &str) -> Result<Url> {
    let invalid = |detail: String| SquallError::InvalidArgument(format!("{what}: {detail}"));
    let url = match Url::parse(location) {
        Ok(url) if url.scheme().len() > 1 => url,
        _ if location.starts_with('/') => {
            let path = without_dots(Path::new(location));
            let made = if location.ends_with('/') {
                Url::from_directory_path(&path)
            } else {
                Url::from_file_path(&path)
            };
            made.map_err(|_| invalid(format!("cannot make a URL of path '{location}'")))?
        }
        _ => {
            return Err(invalid(format!(
                "'{location}' is a relative path; give an absolute path or a URL \
                 (file:///data/..., s3://bucket/prefix/...)"
            )));
        }
    };
    normalize_url(&url, location).map_err(|e| match e {
        SquallError::InvalidArgument(detail) => invalid(detail),
        other => other,
    })
}

fn normalize_url(url: &Url, location: &str) -> Result<Url> {
    let invalid = |detail: String| SquallError::InvalidArgument(detail);
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "'{location}' has a query or fragment, which object URLs do not take"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!("'{location}' carries credentials")));
    }
    // The URL parser resolved literal and %2e dot segments; what is left
    // decoded must be plain names (an encoded '/' could smuggle in a '..').
    let segments = url.path().split('/').skip(1);
    for segment in segments {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        if decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\0') {
            return Err(invalid(format!(
                "'{location}' has a path segment '{segment}' that is not a plain name"
            )));
        }
    }
    match url.scheme() {
        "file" => {
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(invalid(format!(
                    "'{location}' names a host; file URLs are this machine's (file:///path)"
                )));
            }
            let path = url
                .to_file_path()
                .map_err(|_| invalid(format!("'{location}' is not a local path")))?;
            let real = follow_links(&path);
            let folder = url.path().ends_with('/') || real.is_dir();
            let made = if folder {
                Url::from_directory_path(&real)
            } else {
                Url::from_file_path(&real)
            };
            made.map_err(|_| invalid(format!("cannot make a URL of path {}", real.display())))
        }
        "s3" | "s3a" => {
            let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                invalid(format!(
                    "'{location}' names no bucket (s3://bucket/prefix/)"
                ))
            })?;
            let mut normal = Url::parse(&format!("s3://{bucket}/"))
                .map_err(|e| invalid(format!("'{location}': {e}")))?;
            normal.set_path(&s3_key_path(url.path(), location)?);
            Ok(normal)
        }
        "memory" => Err(invalid(format!(
            "'{location}': memory:// URLs are not accepted by the server"
        ))),
        other => Err(invalid(format!(
            "'{location}': unsupported URL scheme '{other}' (use s3://bucket/prefix/ or an absolute path)"
        ))),
    }
}

/// Characters escaped in a canonical S3 URL path: all but unreserved ones
/// and the sub-delimiters a key commonly holds. `%` is always escaped, so
/// decoding the result gives back exactly the key.
const KEY_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'=')
    .remove(b'+')
    .remove(b',')
    .remove(b'@')
    .remove(b':');

/// The path of an S3 URL as the object store reads it (percent-decoded, by
/// object_store's own parser), encoded again one way only: a check of the
/// result compares the key the store will use (`squall-wor%6B` is `squall-work`).
fn s3_key_path(path: &str, location: &str) -> Result<String> {
    let invalid = |detail: String| SquallError::InvalidArgument(detail);
    let key = object_store::path::Path::from_url_path(path)
        .map_err(|e| invalid(format!("'{location}' is not a valid object key: {e}")))?;
    let mut canonical = String::from("/");
    for (i, part) in key.parts().enumerate() {
        if i > 0 {
            canonical.push('/');
        }
        canonical.extend(percent_encoding::utf8_percent_encode(
            part.as_ref(),
            KEY_ESCAPED,
        ));
    }
    if path.ends_with('/') && canonical.len() > 1 {
        canonical.push('/');
    }
    Ok(canonical)
}

/// An absolute `path` with `.` and `..` resolved as written (`/a/b/../c` is
/// `/a/c`), as the URL parser does for URLs.
fn without_dots(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` with the symbolic links of its longest existing ancestor followed and
/// the rest (not there yet, e.g. an output folder) appended as given.
fn follow_links(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return missing.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path) -> AccessPolicy {
        AccessPolicy::new(
            &[
                format!("{}/data", dir.display()),
                "s3://bucket/shared/".into(),
            ],
            &[format!("{}/server/results", dir.display())],
            &[format!("{}/server", dir.display())],
        )
        .unwrap()
    }

    #[test]
    fn only_allowed_prefixes_pass() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("data/t")).unwrap();
        std::fs::create_dir_all(root.join("server/results")).unwrap();
        let p = policy(&root);
        let data = format!("{}/data/t/", root.display());
        let url = p.check("table 't'", &data, Access::Read).unwrap();
        assert_eq!(url.as_str(), format!("file://{data}"));
        p.check("t", &format!("file://{data}x.csv"), Access::Read)
            .unwrap();
        p.check("t", "s3://bucket/shared/a/b.parquet", Access::Read)
            .unwrap();
        p.check("t", "s3a://bucket/shared/a/", Access::Write)
            .unwrap();

        let forbidden =
            |location: &str, access| match p.check("table 't'", location, access).unwrap_err() {
                SquallError::Forbidden { url, reason, .. } => (url, reason),
                other => panic!("{location}: {other}"),
            };
        let (url, reason) = forbidden("/etc/passwd", Access::Read);
        assert_eq!(url, "file:///etc/passwd");
        assert!(reason.contains("s3://bucket/shared/"), "{reason}");
        // The same key percent-encoded: checked as the store reads it.
        let url = p
            .check("t", "s3://bucket/share%64/x/", Access::Read)
            .unwrap();
        assert_eq!(url.as_str(), "s3://bucket/shared/x/");
        let denied = AccessPolicy::new(
            &["s3://bucket/".into()],
            &[],
            &["s3://bucket/squall-work".into()],
        )
        .unwrap();
        for sneaky in [
            "s3://bucket/squall-wor%6B/evil/",
            "s3://bucket/squall-wor%6b/evil/",
            "s3://bucket/%73quall-work/evil",
        ] {
            let err = denied
                .check("the output", sneaky, Access::Write)
                .unwrap_err();
            assert!(
                err.to_string().contains("own data or work folder"),
                "{sneaky}: {err}"
            );
        }
        // A literal '%' in a key stays one: decoding the URL gives the key.
        let url = denied
            .check("t", "s3://bucket/data/100%25/x%20y.csv", Access::Read)
            .unwrap();
        assert_eq!(url.as_str(), "s3://bucket/data/100%25/x%20y.csv");
        let key = object_store::path::Path::from_url_path(url.path()).unwrap();
        assert_eq!(key.as_ref(), "data/100%/x y.csv");
        // A sibling whose name starts like the prefix, another bucket, `..`.
        forbidden(&format!("{}/database/x", root.display()), Access::Read);
        forbidden("s3://bucket/sharedx/a", Access::Read);
        forbidden("s3://other/shared/a", Access::Read);
        let (url, _) = forbidden(
            &format!("{}/data/../server/squall.db", root.display()),
            Access::Read,
        );
        assert!(url.ends_with("/server/squall.db"), "{url}");
        forbidden(
            &format!("file://{}/data/%2e%2e/server/x", root.display()),
            Access::Read,
        );
        // The results folder: written, never read; the rest of the server's folder neither.
        let results = format!("{}/server/results/job1", root.display());
        p.check("the output", &results, Access::Write).unwrap();
        forbidden(&results, Access::Read);
        let (_, reason) = forbidden(&format!("{}/server/work/x", root.display()), Access::Write);
        assert!(reason.contains("own data"), "{reason}");
    }

    #[test]
    fn callers_urls_are_checked_before_anything_else() {
        let p = AccessPolicy::default();
        for (location, expected) in [
            ("data/t/", "relative path"),
            ("../t", "relative path"),
            ("memory:///t/", "memory://"),
            ("http://example.com/t", "unsupported URL scheme 'http'"),
            ("file://otherhost/etc/passwd", "names a host"),
            ("s3://bucket/a%2F..%2Fb/", "not a plain name"),
            ("s3://bucket/t/?versionId=1", "query"),
            ("s3:///t/", "no bucket"),
            ("s3://bucket//t/", "not a valid object key"),
        ] {
            let err = p.check("table 't'", location, Access::Read).unwrap_err();
            assert!(
                matches!(err, SquallError::InvalidArgument(_)),
                "{location}: {err}"
            );
            assert!(err.to_string().contains(expected), "{location}: {err}");
            assert!(err.to_string().contains("table 't'"), "{location}: {err}");
        }
        // Nothing allowed: everything refused, saying how to allow it.
        let err = p.check("table 't'", "/data/t/", Access::Read).unwrap_err();
        assert!(err.to_string().contains("--allow"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn links_are_followed_before_checking() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::fs::write(root.join("secret/key.csv"), "k\n1\n").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("data/door")).unwrap();
        std::os::unix::fs::symlink(root.join("secret/key.csv"), root.join("data/key.csv")).unwrap();
        let p = policy(&root);
        // A link in the named path, and a link to a file outside.
        let err = p
            .check(
                "t",
                &format!("{}/data/door/key.csv", root.display()),
                Access::Read,
            )
            .unwrap_err();
        assert!(err.to_string().contains("/secret/key.csv"), "{err}");
        let listed = Url::from_file_path(root.join("data/key.csv")).unwrap();
        let err = p.check_listed("t", &listed).unwrap_err();
        assert!(err.to_string().contains("links to"), "{err}");
        // An output folder that does not exist yet, under a linked parent.
        let err = p
            .check(
                "o",
                &format!("{}/data/door/new/", root.display()),
                Access::Write,
            )
            .unwrap_err();
        assert!(matches!(err, SquallError::Forbidden { .. }), "{err}");
    }
}
