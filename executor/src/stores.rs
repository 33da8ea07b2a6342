//! Object stores, picked from the URL scheme.
//!
//! # What belongs here
//! `StoreRegistry` (DataFusion's `ObjectStoreRegistry`, so plans find their stores
//! through the runtime env) and `ObjectUrl`, the split of a URL into the store it
//! lives in and the path inside it. Stores are built lazily from the scheme:
//! `file://`, `memory://` (one per registry, shared by everything using it), and
//! `s3://bucket` configured from the standard AWS environment (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, credentials...). Tests register wrapped
//! stores (fault injection, request counting) for a URL before use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::{ObjectStoreRegistry, ObjectStoreUrl};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

use crate::hedge::{HedgedStore, Hedger};
use crate::usage::RequestCounter;

/// Whether a store of URL scheme `scheme` is on this machine (a local folder or
/// memory): reaching it costs no request, and no other machine can.
pub fn local_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("file") || scheme.eq_ignore_ascii_case("memory")
}

/// A URL split into its store (`scheme://authority`) and the path inside the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    store: ObjectStoreUrl,
    path: Path,
}

impl ObjectUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let parsed = Url::parse(url)
            .map_err(|e| DataFusionError::Execution(format!("invalid URL '{url}': {e}")))?;
        Self::from_url(&parsed)
    }

    pub fn from_url(url: &Url) -> Result<Self> {
        let store = ObjectStoreUrl::parse(format!(
            "{}://{}",
            url.scheme(),
            url.host_str().unwrap_or("")
        ))?;
        let path = Path::from_url_path(url.path()).map_err(|e| {
            DataFusionError::Execution(format!("invalid object path in URL '{url}': {e}"))
        })?;
        Ok(Self { store, path })
    }

    pub fn store_url(&self) -> &ObjectStoreUrl {
        &self.store
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Resolves URLs to object stores; builds and caches one store per scheme+authority.
/// A counted view ([`counted`](Self::counted)) shares the stores and counts the
/// requests made through it.
#[derive(Debug, Default)]
pub struct StoreRegistry {
    stores: Arc<RwLock<HashMap<String, Arc<dyn ObjectStore>>>>,
    counter: Option<Arc<RequestCounter>>,
    hedger: Option<Arc<Hedger>>,
}

impl StoreRegistry {
    /// The store an object URL lives in, and the object's path inside it.
    pub fn resolve(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let target = ObjectUrl::parse(url)?;
        let store = self.get_store(target.store_url().as_ref())?;
        Ok((store, target.path().clone()))
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// The same stores, with every request made through the view counted in
    /// `counter` (by URL scheme). Registering through the view registers the
    /// store itself, for every view.
    pub fn counted(&self, counter: Arc<RequestCounter>) -> Self {
        Self {
            stores: self.stores.clone(),
            counter: Some(counter),
            hedger: self.hedger.clone(),
        }
    }

    /// The same view, its slow ranged reads sent again by `hedger` (outside
    /// the counting: both copies are counted).
    pub fn hedged(&self, hedger: Arc<Hedger>) -> Self {
        Self {
            stores: self.stores.clone(),
            counter: self.counter.clone(),
            hedger: Some(hedger),
        }
    }

    fn view(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        let counted = match &self.counter {
            Some(counter) => counter.wrap(url.scheme(), store),
            None => store,
        };
        match &self.hedger {
            Some(hedger) => HedgedStore::wrap(counted, url.scheme(), hedger.clone()),
            None => counted,
        }
    }

    /// Uses `store` for every URL under `url`'s scheme and authority.
    pub fn register(&self, url: &str, store: Arc<dyn ObjectStore>) -> Result<()> {
        let url = Url::parse(url)
            .map_err(|e| DataFusionError::Configuration(format!("invalid URL '{url}': {e}")))?;
        self.register_store(&url, store);
        Ok(())
    }

    fn build(url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match url.scheme() {
            "file" => Ok(Arc::new(LocalFileSystem::new())),
            "memory" => Ok(Arc::new(InMemory::new())),
            "s3" | "s3a" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                    DataFusionError::Configuration(format!("S3 URL '{url}' names no bucket"))
                })?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                // Emulators (LocalStack, moto) listen on plain HTTP.
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                    .ok();
                if let Some(endpoint) = endpoint {
                    if endpoint.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                    builder = builder.with_endpoint(endpoint);
                }
                Ok(Arc::new(builder.build().map_err(|e| {
                    DataFusionError::Configuration(format!(
                        "cannot configure S3 for bucket '{bucket}': {e}"
                    ))
                })?))
            }
            other => Err(DataFusionError::Configuration(format!(
                "unsupported URL scheme '{other}' in '{url}' (use file://, memory:// or s3://)"
            ))),
        }
    }
}

fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.insert(store_key(url), store)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(self.view(url, store.clone()));
        }
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(&key) {
            return Ok(self.view(url, store.clone()));
        }
        let store = Self::build(url)?;
        stores.insert(key, store.clone());
        Ok(self.view(url, store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let u = ObjectUrl::parse("s3://bucket/a/b%20c.parquet").unwrap();
        assert_eq!(u.store_url().as_str(), "s3://bucket/");
        assert_eq!(u.path().as_ref(), "a/b c.parquet");
        let f = ObjectUrl::parse("file:///tmp/x/y").unwrap();
        assert_eq!(f.store_url().as_str(), "file:///");
        assert_eq!(f.path().as_ref(), "tmp/x/y");
        assert!(ObjectUrl::parse("not a url").is_err());
    }

    #[test]
    fn memory_store_is_shared_and_unknown_schemes_fail() {
        let registry = StoreRegistry::new();
        let url = Url::parse("memory:///").unwrap();
        let a = registry.get_store(&url).unwrap();
        let b = registry.get_store(&url).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let (c, path) = registry.resolve("memory:///x/y.json").unwrap();
        assert!(Arc::ptr_eq(&a, &c));
        assert_eq!(path.as_ref(), "x/y.json");
        let err = registry
            .get_store(&Url::parse("gopher://x/").unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("unsupported URL scheme 'gopher'"),
            "{err}"
        );
    }
}
