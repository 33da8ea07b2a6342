//! An object store wrapper that records every request, can fail chosen ones,
//! and can hold a chosen one after it is done until the test lets it return.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A GET of the whole object (`None`) or of a byte range.
    Get(Option<String>),
    Head,
    Put,
    PutMultipart,
    List,
    Delete,
    Copy,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub op: Op,
    pub path: String,
}

/// Fails the next `remaining` requests of kind `op` whose path contains `path_contains`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: Op,
    pub path_contains: String,
    pub remaining: usize,
}

/// Wraps a store; logs every request; injects faults (a generic, retryable error).
#[derive(Debug)]
pub struct RecordingStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    log: Mutex<Vec<Request>>,
    faults: Mutex<Vec<Fault>>,
    holds: Mutex<Vec<(String, Hold)>>,
}

/// A put held after it is done: `reached` is told, and the put returns once
/// `release` is (or never, if its caller gives up first).
#[derive(Debug, Clone, Default)]
pub struct Hold {
    pub reached: Arc<tokio::sync::Notify>,
    pub release: Arc<tokio::sync::Notify>,
}

impl RecordingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            state: Arc::default(),
        })
    }

    pub fn inject(&self, fault: Fault) {
        self.state.faults.lock().unwrap().push(fault);
    }

    /// Holds the next put whose path contains `path_contains`, once done.
    pub fn hold_put(&self, path_contains: &str) -> Hold {
        let hold = Hold::default();
        self.state
            .holds
            .lock()
            .unwrap()
            .push((path_contains.to_string(), hold.clone()));
        hold
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.state.log.lock().unwrap().clear();
    }

    fn record(&self, op: Op, path: &Path) -> Result<()> {
        self.state.record(op, path)
    }
}

impl State {
    fn record(&self, op: Op, path: &Path) -> Result<()> {
        self.log.lock().unwrap().push(Request {
            op: op.clone(),
            path: path.to_string(),
        });
        let same_kind = |a: &Op, b: &Op| std::mem::discriminant(a) == std::mem::discriminant(b);
        let mut faults = self.faults.lock().unwrap();
        if let Some(fault) = faults.iter_mut().find(|f| {
            f.remaining > 0 && same_kind(&f.op, &op) && path.as_ref().contains(&f.path_contains)
        }) {
            fault.remaining -= 1;
            return Err(object_store::Error::Generic {
                store: "RecordingStore",
                source: format!("injected fault: {op:?} {path}").into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for RecordingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordingStore({})", self.inner)
    }
}

fn describe(range: &GetRange) -> String {
    match range {
        GetRange::Bounded(r) => format!("{}..{}", r.start, r.end),
        GetRange::Offset(o) => format!("{o}.."),
        GetRange::Suffix(s) => format!("-{s}"),
    }
}

#[async_trait]
impl ObjectStore for RecordingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.record(Op::Put, location)?;
        let done = self.inner.put_opts(location, payload, opts).await?;
        let hold = {
            let mut holds = self.state.holds.lock().unwrap();
            let at = holds
                .iter()
                .position(|(p, _)| location.as_ref().contains(p.as_str()));
            at.map(|i| holds.remove(i).1)
        };
        if let Some(hold) = hold {
            hold.reached.notify_one();
            hold.release.notified().await;
        }
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.record(Op::PutMultipart, location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            Op::Head
        } else {
            Op::Get(options.range.as_ref().map(describe))
        };
        self.record(op, location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let state = self.state.clone();
        let checked = locations
            .map(move |path| path.and_then(|p| state.record(Op::Delete, &p).map(|_| p)))
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        if let Err(e) = self.record(Op::List, &path) {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.record(Op::List, &prefix.cloned().unwrap_or_default())?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.record(Op::Copy, to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Wraps a store; the first ranged GET of a seeded fraction of the distinct
/// reads (object and range) whose path contains `path_contains` never
/// answers (a stalled connection); asking again for the same read answers.
/// Counts the reads it stalled, and those of them asked for again (a reader
/// may also give up a read it no longer needs, such as a join's probe side
/// once its build side turned out empty).
#[derive(Debug)]
pub struct StallingStore {
    inner: Arc<dyn ObjectStore>,
    seed: u64,
    /// Stalled reads per thousand.
    per_mille: u64,
    path_contains: String,
    seen: Mutex<std::collections::HashSet<String>>,
    stalled: std::sync::atomic::AtomicUsize,
    /// Stalled reads not yet asked for again.
    waiting: Mutex<std::collections::HashSet<String>>,
    asked_again: std::sync::atomic::AtomicUsize,
}

impl StallingStore {
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        seed: u64,
        per_mille: u64,
        path_contains: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner,
            seed,
            per_mille,
            path_contains: path_contains.into(),
            seen: Mutex::default(),
            stalled: Default::default(),
            waiting: Mutex::default(),
            asked_again: Default::default(),
        })
    }

    /// Reads stalled so far.
    pub fn stalled(&self) -> usize {
        self.stalled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stalled reads asked for again so far.
    pub fn asked_again(&self) -> usize {
        self.asked_again.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether this read of `key` stalls: its first time, for the chosen keys.
    fn stalls(&self, key: String) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (self.seed, &key).hash(&mut hasher);
        let chosen = hasher.finish() % 1000 < self.per_mille;
        let first = self.seen.lock().unwrap().insert(key);
        chosen && first
    }
}

impl fmt::Display for StallingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stalling({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for StallingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if let Some(range) = options.range.as_ref().filter(|_| !options.head)
            && location.as_ref().contains(self.path_contains.as_str())
        {
            let key = format!("{location}@{}", describe(range));
            if self.waiting.lock().unwrap().remove(&key) {
                self.asked_again
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else if self.stalls(key.clone()) {
                self.stalled
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.waiting.lock().unwrap().insert(key);
                std::future::pending::<()>().await;
            }
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
