//! Locations as URLs: what a user types (a URL, or a local path) as the URL
//! Squall works with. The lowest layer, with `error`: everything that takes a
//! location goes through here.

use url::Url;

use crate::error::{Result, SquallError};

/// A URL or a local path, as a URL (`file://` for local paths, made absolute).
pub fn to_url(location: &str) -> Result<Url> {
    if let Ok(url) = Url::parse(location) {
        // "C:\..." parses with a one-letter scheme; everything else with a scheme is a URL.
        if url.scheme().len() > 1 {
            return Ok(url);
        }
    }
    let path = std::path::absolute(location).map_err(|e| SquallError::Io {
        context: format!("cannot resolve path '{location}'"),
        source: e,
    })?;
    let is_dir = location.ends_with('/') || path.is_dir();
    let url = if is_dir {
        Url::from_directory_path(&path)
    } else {
        Url::from_file_path(&path)
    };
    url.map_err(|_| SquallError::InvalidArgument(format!("cannot make a URL of path '{location}'")))
}
