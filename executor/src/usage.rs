//! What a task attempt used, as an executor measures it: object-store requests
//! by kind, time, and (inside Lambda) the function's memory, architecture and
//! whether its process was fresh. The control plane prices it (`cost`).
//!
//! # What belongs here
//! [`TaskUsage`] (carried by every `TaskResult`), [`RequestCounts`], and
//! [`CountingStore`], the object-store wrapper that counts requests where they
//! are made. A task's stores are wrapped by a counted view of the executor's
//! registry ([`crate::StoreRegistry::counted`]), so requests are counted per
//! attempt even when many tasks share one process. The control plane counts its
//! own requests (planning, commits, sweeps) the same way.
//!
//! Counted as S3 bills them: a GET per ranged read after merging ranges under
//! 1 MiB apart (as object_store's default `get_ranges` does), a HEAD per
//! metadata read, a PUT per put, multipart part, create and complete, a LIST
//! per listing call plus one per further 1,000 keys (S3's page size), a DELETE
//! per object deleted, a copy as a PUT.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, OBJECT_STORE_COALESCE_DEFAULT,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    UploadPart,
};
use serde::{Deserialize, Serialize};

/// Keys one S3 LIST request returns at most.
const LIST_PAGE: u64 = 1000;

/// Requests of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    #[serde(default)]
    pub get: u64,
    #[serde(default)]
    pub head: u64,
    #[serde(default)]
    pub put: u64,
    #[serde(default)]
    pub list: u64,
    #[serde(default)]
    pub delete: u64,
    /// Reads sent a second time because the first was slow (see `hedge`);
    /// each is also a GET above.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hedged: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RequestCounts {
    pub fn add(&mut self, other: &RequestCounts) {
        self.get += other.get;
        self.head += other.head;
        self.put += other.put;
        self.list += other.list;
        self.delete += other.delete;
        self.hedged += other.hedged;
    }

    /// Requests billed (a hedged read's second copy is among the GETs).
    pub fn total(&self) -> u64 {
        self.get + self.head + self.put + self.list + self.delete
    }
}

/// Requests by store kind (the URL scheme: `s3`, `file`, `memory`).
pub type StoreRequests = BTreeMap<String, RequestCounts>;

/// Adds `other` into `into`, store by store.
pub fn add_requests(into: &mut StoreRequests, other: &StoreRequests) {
    for (store, counts) in other {
        into.entry(store.clone()).or_default().add(counts);
    }
}

/// What one attempt used. `reported` is false where no executor answered for
/// the attempt (it crashed, timed out, or its function failed): the control
/// plane then knows only how long it waited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    #[serde(default)]
    pub reported: bool,
    /// Requests made for this attempt, by store kind: the executor's, and
    /// those a backend made to move the attempt's spec or result.
    #[serde(default)]
    pub requests: StoreRequests,
    /// From the executor taking the task to its result being ready.
    #[serde(default)]
    pub duration_ms: u64,
    /// Compute time DataFusion's operators measured (`elapsed_compute` and
    /// the scans' decoding time): the task's CPU time, short of what is spent
    /// outside operators.
    #[serde(default)]
    pub cpu_ms: u64,
    /// Set by an executor running as a Lambda function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionUsage>,
    /// The 95th percentile of the attempt's ranged reads, in milliseconds,
    /// where it made enough of them to say (see `hedge`): what the stage's
    /// later attempts start hedging from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_p95_ms: Option<u64>,
}

/// What Lambda bills an invocation by, as the function sees itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionUsage {
    /// The function's configured memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
    pub memory_mb: u64,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// The first invocation of a fresh process (a cold start).
    pub cold_start: bool,
    /// On a cold start: from the process starting to this invocation starting
    /// (Lambda bills its init phase too).
    #[serde(default)]
    pub init_ms: u64,
}

/// Counts requests into per-store-kind counters.
#[derive(Debug, Default)]
pub struct RequestCounter {
    by_store: Mutex<BTreeMap<String, Arc<AtomicCounts>>>,
}

impl RequestCounter {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn counts(&self, store: &str) -> Arc<AtomicCounts> {
        let mut by_store = self.by_store.lock().unwrap_or_else(|e| e.into_inner());
        by_store.entry(store.to_string()).or_default().clone()
    }

    /// The requests counted so far.
    pub fn snapshot(&self) -> StoreRequests {
        let by_store = self.by_store.lock().unwrap_or_else(|e| e.into_inner());
        by_store
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .filter(|(_, v)| v.total() > 0)
            .collect()
    }

    /// Reads sent again to stores of kind `store` so far.
    pub fn hedges(&self, store: &str) -> u64 {
        self.counts(store).hedged.load(Ordering::Relaxed)
    }

    /// Counts a read sent again to a store of kind `store` (its second
    /// copy's GET is counted as any GET).
    pub fn count_hedge(&self, store: &str) {
        bump(&self.counts(store).hedged, 1);
    }

    /// Wraps `inner`, a store of kind `store` (the URL scheme), so that its
    /// requests are counted here.
    pub fn wrap(&self, store: &str, inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(CountingStore {
            inner,
            counts: self.counts(store),
        })
    }
}

#[derive(Debug, Default)]
struct AtomicCounts {
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    hedged: AtomicU64,
}

impl AtomicCounts {
    fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            get: self.get.load(Ordering::Relaxed),
            head: self.head.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
            hedged: self.hedged.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// An object store that counts the requests made through it.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<AtomicCounts>,
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

/// How many requests fetching `ranges` takes once ranges less than
/// `coalesce` bytes apart are merged (object_store's `coalesce_ranges`).
fn merged_requests(ranges: &[Range<u64>], coalesce: u64) -> u64 {
    let mut sorted: Vec<&Range<u64>> = ranges.iter().collect();
    sorted.sort_unstable_by_key(|r| r.start);
    let mut requests = 0;
    let mut end: Option<u64> = None;
    for range in sorted {
        match end {
            Some(e) if range.start.saturating_sub(e) <= coalesce => {
                end = Some(e.max(range.end));
            }
            _ => {
                requests += 1;
                end = Some(range.end);
            }
        }
    }
    requests
}

/// Counts a multipart upload's parts and completion as PUTs (S3 bills
/// UploadPart and CompleteMultipartUpload at the PUT price).
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Arc<AtomicCounts>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        bump(&self.counts.put, 1);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        bump(&self.counts.put, 1);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        bump(&self.counts.delete, 1);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        bump(&self.counts.put, 1);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        bump(&self.counts.put, 1);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            counts: self.counts.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head {
            bump(&self.counts.head, 1);
        } else {
            bump(&self.counts.get, 1);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        bump(
            &self.counts.get,
            merged_requests(ranges, OBJECT_STORE_COALESCE_DEFAULT),
        );
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counts = self.counts.clone();
        let counted = locations
            .map(move |path| {
                if path.is_ok() {
                    bump(&counts.delete, 1);
                }
                path
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        count_pages(self.counts.clone(), self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        count_pages(
            self.counts.clone(),
            self.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await?;
        let keys = (listed.objects.len() + listed.common_prefixes.len()) as u64;
        bump(&self.counts.list, pages(keys));
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        bump(&self.counts.put, 1);
        self.inner.copy_opts(from, to, options).await
    }
}

/// LIST requests for a listing of `keys` keys: one, and one per further page.
fn pages(keys: u64) -> u64 {
    1 + keys.saturating_sub(1) / LIST_PAGE
}

/// Counts one LIST when the listing starts and one more per further 1,000 keys.
fn count_pages(
    counts: Arc<AtomicCounts>,
    listing: BoxStream<'static, Result<ObjectMeta>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    bump(&counts.list, 1);
    let mut seen = 0u64;
    listing
        .map(move |item| {
            seen += 1;
            if seen > LIST_PAGE && (seen - 1).is_multiple_of(LIST_PAGE) {
                bump(&counts.list, 1);
            }
            item
        })
        .boxed()
}

/// Adds the CPU time the current thread spends until it is dropped to a
/// metric: for a synchronous stretch of an operator's work (no `.await`
/// inside), measured as CPU, not as wall time that other threads' turns on a
/// busy core would inflate.
pub struct ThreadCpuTimer<'a> {
    metric: &'a datafusion::physical_plan::metrics::Time,
    started: Option<std::time::Duration>,
}

impl<'a> ThreadCpuTimer<'a> {
    pub fn start(metric: &'a datafusion::physical_plan::metrics::Time) -> Self {
        Self {
            metric,
            started: thread_cpu(),
        }
    }
}

impl Drop for ThreadCpuTimer<'_> {
    fn drop(&mut self) {
        if let (Some(started), Some(now)) = (self.started, thread_cpu()) {
            self.metric.add_duration(now.saturating_sub(started));
        }
    }
}

/// CPU time the current thread has used (None where the OS cannot say).
pub fn thread_cpu() -> Option<std::time::Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` to the pointer it is
    // given, which points to a live value of that type.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    ok.then(|| {
        std::time::Duration::new(
            now.tv_sec.max(0) as u64,
            now.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[test]
    fn merged_ranges_count_as_s3_requests() {
        assert_eq!(merged_requests(&[], 10), 0);
        assert_eq!(merged_requests(&[0..5, 8..20, 100..120], 10), 2);
        assert_eq!(merged_requests(&[100..120, 0..5], 10), 2);
        assert_eq!(merged_requests(&[0..5, 16..20], 10), 2);
        assert_eq!(pages(0), 1);
        assert_eq!(pages(1000), 1);
        assert_eq!(pages(1001), 2);
    }

    #[tokio::test]
    async fn counts_each_kind() {
        let counter = RequestCounter::new();
        let store = counter.wrap("memory", Arc::new(InMemory::new()));
        for i in 0..1001 {
            let path = Path::from(format!("d/{i:04}"));
            store
                .put(&path, PutPayload::from_static(b"hello"))
                .await
                .unwrap();
        }
        let path = Path::from("d/0000");
        store.get(&path).await.unwrap().bytes().await.unwrap();
        store.head(&path).await.unwrap();
        store.get_ranges(&path, &[0..1, 2..3]).await.unwrap();
        let listed: Vec<_> = store.list(Some(&Path::from("d"))).collect().await;
        assert_eq!(listed.len(), 1001);
        store.delete(&path).await.unwrap();
        let mut upload = store
            .put_multipart_opts(&Path::from("m"), PutMultipartOptions::default())
            .await
            .unwrap();
        upload
            .put_part(PutPayload::from_static(b"x"))
            .await
            .unwrap();
        upload.complete().await.unwrap();
        let counts = counter.snapshot()["memory"];
        assert_eq!(
            counts,
            RequestCounts {
                get: 2,
                head: 1,
                put: 1001 + 3,
                list: 2,
                delete: 1,
                hedged: 0,
            }
        );
    }

    #[test]
    fn thread_cpu_counts_work_and_not_sleep() {
        let metric = datafusion::physical_plan::metrics::Time::new();
        {
            let _cpu = ThreadCpuTimer::start(&metric);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let slept = metric.value();
        {
            let _cpu = ThreadCpuTimer::start(&metric);
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        assert!(slept < 20_000_000, "sleeping counted {slept} ns");
        assert!(
            metric.value() > slept + 1_000_000,
            "work counted {} ns",
            metric.value()
        );
    }
}
