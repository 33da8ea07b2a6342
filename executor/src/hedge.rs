//! Hedged reads: a ranged GET that has not answered by the time most of the
//! task's ranged GETs had (their 95th percentile, never under a floor) is sent
//! again, once, and the first answer wins; the other is dropped (Starling's
//! duplicated reads, "The Tail at Scale"'s hedged requests). A stalled request
//! — S3's slow first byte, a connection that hangs — then costs one more GET
//! instead of the task's time.
//!
//! # What belongs here
//! [`Hedging`], the policy a task spec carries, and [`HedgedStore`], the
//! object-store wrapper a task's counted store view puts around each store.
//! Only ranged reads are hedged (shuffle partitions, Parquet column chunks and
//! footers, combine steps' whole files read as one range): their answers are
//! buffered whole anyway. Unranged GETs stream, and writes are never repeated.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, Either, select};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use serde::{Deserialize, Serialize};

use crate::usage::RequestCounter;

/// When a task re-issues a slow read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hedging {
    pub enabled: bool,
    /// A read is slow past this quantile of the task's finished reads...
    pub quantile: f64,
    /// ...and never before this many milliseconds.
    pub floor_ms: u64,
    /// Until this many reads have finished, slow means `first_ms`: the
    /// control plane sends the stage's recent 95th percentile once earlier
    /// attempts reported one, 1 s before.
    pub min_samples: usize,
    pub first_ms: u64,
}

impl Default for Hedging {
    /// Off: a spec that does not say is not hedged.
    fn default() -> Self {
        Self {
            enabled: false,
            ..Self::on()
        }
    }
}

impl Hedging {
    /// The control plane's default: past the 95th percentile, at least 250 ms
    /// (S3's first-byte latency is tens of milliseconds; its tail, seconds).
    pub fn on() -> Self {
        Self {
            enabled: true,
            quantile: 0.95,
            floor_ms: 250,
            min_samples: 16,
            first_ms: 1000,
        }
    }

    pub fn off() -> Self {
        Self::default()
    }
}

/// Reads finished lately, kept to find the hedging delay.
const WINDOW: usize = 256;

/// One task's hedging state: its policy, its reads' latencies, and where
/// hedges are counted.
#[derive(Debug)]
pub struct Hedger {
    policy: Hedging,
    latencies: Mutex<VecDeque<Duration>>,
    counter: Arc<RequestCounter>,
}

impl Hedger {
    pub fn new(policy: Hedging, counter: Arc<RequestCounter>) -> Arc<Self> {
        Arc::new(Self {
            policy,
            latencies: Mutex::default(),
            counter,
        })
    }

    pub fn enabled(&self) -> bool {
        self.policy.enabled
    }

    /// How long a read may take before it is sent again: the quantile of
    /// the task's reads, or `first_ms` (the stage's, where the control plane
    /// knows it) until there are enough; never under the floor.
    pub fn delay(&self) -> Duration {
        let floor = Duration::from_millis(self.policy.floor_ms);
        self.quantile()
            .unwrap_or(Duration::from_millis(self.policy.first_ms))
            .max(floor)
    }

    /// The policy's quantile of the reads finished, once there are
    /// `min_samples` of them.
    pub fn quantile(&self) -> Option<Duration> {
        let latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if latencies.len() < self.policy.min_samples.max(1) {
            return None;
        }
        let mut sorted: Vec<Duration> = latencies.iter().copied().collect();
        sorted.sort_unstable();
        let q = self.policy.quantile.clamp(0.0, 1.0);
        let at = ((sorted.len() - 1) as f64 * q).round() as usize;
        Some(sorted[at.min(sorted.len() - 1)])
    }

    fn finished(&self, took: Duration) {
        let mut latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if latencies.len() == WINDOW {
            latencies.pop_front();
        }
        latencies.push_back(took);
    }

    /// Runs `read`; if it has not answered after [`delay`](Self::delay),
    /// starts it again and takes whichever answers first with success (an
    /// error is taken only when both fail, or from the one copy there is).
    pub async fn read<T: Send + 'static>(
        &self,
        store: &str,
        read: impl Fn() -> BoxFuture<'static, Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let first = read();
        let timer = Box::pin(tokio::time::sleep(self.delay()));
        let answer = match select(first, timer).await {
            Either::Left((answer, _)) => answer,
            Either::Right(((), first)) => {
                self.counter.count_hedge(store);
                tracing::debug!(
                    store,
                    after_ms = started.elapsed().as_millis() as u64,
                    "read hedged"
                );
                match select(first, read()).await {
                    Either::Left((Ok(v), _)) | Either::Right((Ok(v), _)) => Ok(v),
                    Either::Left((Err(_), other)) | Either::Right((Err(_), other)) => other.await,
                }
            }
        };
        if answer.is_ok() {
            self.finished(started.elapsed());
        }
        answer
    }
}

/// A store whose ranged reads are hedged (see the module's documentation).
#[derive(Debug)]
pub struct HedgedStore {
    inner: Arc<dyn ObjectStore>,
    /// The store's kind (URL scheme), as requests are counted by.
    kind: String,
    hedger: Arc<Hedger>,
}

impl HedgedStore {
    pub fn wrap(
        inner: Arc<dyn ObjectStore>,
        kind: &str,
        hedger: Arc<Hedger>,
    ) -> Arc<dyn ObjectStore> {
        if !hedger.enabled() {
            return inner;
        }
        Arc::new(Self {
            inner,
            kind: kind.to_string(),
            hedger,
        })
    }
}

impl fmt::Display for HedgedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hedged({})", self.inner)
    }
}

/// A ranged GET's answer, read whole.
struct Whole {
    meta: ObjectMeta,
    range: Range<u64>,
    attributes: object_store::Attributes,
    bytes: Bytes,
}

#[async_trait::async_trait]
impl ObjectStore for HedgedStore {
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
        if options.head || options.range.is_none() {
            return self.inner.get_opts(location, options).await;
        }
        let (inner, location) = (self.inner.clone(), location.clone());
        let whole = self
            .hedger
            .read(&self.kind, move || {
                let (inner, location, options) = (inner.clone(), location.clone(), options.clone());
                async move {
                    let answer = inner.get_opts(&location, options).await?;
                    let (meta, range, attributes) = (
                        answer.meta.clone(),
                        answer.range.clone(),
                        answer.attributes.clone(),
                    );
                    let bytes = answer.bytes().await?;
                    Ok(Whole {
                        meta,
                        range,
                        attributes,
                        bytes,
                    })
                }
                .boxed()
            })
            .await?;
        let bytes = whole.bytes;
        Ok(GetResult {
            payload: GetResultPayload::Stream(
                futures::stream::once(async move { Ok(bytes) }).boxed(),
            ),
            meta: whole.meta,
            range: whole.range,
            attributes: whole.attributes,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let (inner, location, ranges) = (self.inner.clone(), location.clone(), ranges.to_vec());
        self.hedger
            .read(&self.kind, move || {
                let (inner, location, ranges) = (inner.clone(), location.clone(), ranges.clone());
                async move { inner.get_ranges(&location, &ranges).await }.boxed()
            })
            .await
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

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hedger(policy: Hedging) -> Arc<Hedger> {
        Hedger::new(policy, RequestCounter::new())
    }

    #[test]
    fn the_delay_is_the_quantile_of_finished_reads_never_under_the_floor() {
        let h = hedger(Hedging {
            min_samples: 4,
            first_ms: 700,
            floor_ms: 30,
            ..Hedging::on()
        });
        assert_eq!(h.delay(), Duration::from_millis(700), "too few reads yet");
        assert_eq!(h.quantile(), None);
        for ms in 1..=100 {
            h.finished(Duration::from_millis(ms));
        }
        assert_eq!(h.delay(), Duration::from_millis(95));
        assert_eq!(h.quantile(), Some(Duration::from_millis(95)));
        let low = hedger(Hedging {
            min_samples: 1,
            floor_ms: 250,
            ..Hedging::on()
        });
        low.finished(Duration::from_millis(3));
        assert_eq!(low.delay(), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_slow_read_is_sent_again_once_and_the_first_answer_wins() {
        let counter = RequestCounter::new();
        let h = Hedger::new(
            Hedging {
                first_ms: 10,
                floor_ms: 10,
                ..Hedging::on()
            },
            counter.clone(),
        );
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let read = {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        std::future::pending::<()>().await;
                    }
                    Ok(n)
                }
                .boxed()
            }
        };
        assert_eq!(h.read("s3", read).await.unwrap(), 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(counter.hedges("s3"), 1);
        // A read that fails first waits for its other copy.
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failing = {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(if n == 0 { 30 } else { 60 })).await;
                    if n == 0 {
                        Err(object_store::Error::Generic {
                            store: "test",
                            source: "reset".into(),
                        })
                    } else {
                        Ok(n)
                    }
                }
                .boxed()
            }
        };
        assert_eq!(h.read("s3", failing).await.unwrap(), 1);
        // A fast read is sent once.
        let once = || async { Ok(7) }.boxed();
        assert_eq!(h.read("s3", once).await.unwrap(), 7);
        assert_eq!(counter.hedges("s3"), 2);
    }
}
