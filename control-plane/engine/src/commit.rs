//! The commit protocol: how the objects a job's task attempts write become its
//! result, and how everything else is removed. The scheduler, the engine and
//! the Lambda backend follow it through this module.
//!
//! # The protocol
//! - **Attempts.** Every attempt writes exactly one object, named by job, run
//!   and attempt (the stage writer's `output_url`: `task-{t}-{run}-attempt-{a}.sqsh`
//!   for shuffle files, `part-{task}-{job}-{run}-{attempt}.parquet` for results),
//!   so no two attempts of any jobs, or of a job resumed under a new run id,
//!   write the same object. The first successful attempt of a task wins; a failed
//!   attempt's object is deleted ([`attempt_output_url`], [`delete_all`]).
//! - **Stages.** A stage is committed when every task has a winner; a
//!   [`StageJournal`] records it (the service's job store), so an interrupted job
//!   resumes from its committed stages.
//! - **Outputs.** Before any task runs, a job claims its output folder by
//!   creating `_squall_claim.json`, naming the job, with a create-if-absent put
//!   (S3's `If-None-Match: *`, a no-clobber link on local disk): of two jobs naming
//!   one folder, exactly one gets it, and the other is refused. A folder that
//!   holds another job's claim or manifest is refused too, and so is one that
//!   holds any object Squall did not write for the job (a table's files). A job that succeeds
//!   writes `_squall_manifest.json`, naming exactly its committed files, and then
//!   drops its claim ([`commit`]); a job that fails deletes the result files it
//!   wrote (found by name) and its claim, and the folder is free again
//!   ([`discard`]).
//! - **Sweep.** Whatever the outcome, nothing of a job stays under its work
//!   folder ([`sweep`]): this also catches objects nobody heard of, such as the
//!   output of an attempt that timed out and finished writing later.
//!
//! Readers follow the same marks (see `tables`): of a folder holding a manifest
//! they take only the files it names, and of a folder holding only a claim (a
//! job still writing there) nothing.

use arrow::datatypes::SchemaRef;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use squall_executor::{
    ObjectUrl, OutputFile, StoreRegistry, TaskId, is_result_file_of, stage_writer,
};

use crate::error::{Result, SquallError};

/// Name of the manifest written next to a job's result files.
pub const MANIFEST_NAME: &str = "_squall_manifest.json";

/// Name of the mark a job puts in its output folder while it writes there.
pub const CLAIM_NAME: &str = "_squall_claim.json";

/// The manifest: exactly the committed result files of one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub job_id: String,
    pub rows: u64,
    pub columns: Vec<ManifestColumn>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestColumn {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    pub url: String,
    pub rows: u64,
    pub bytes: u64,
}

impl Manifest {
    pub fn new(job_id: &str, schema: &SchemaRef, files: &[OutputFile]) -> Self {
        let rows = |f: &OutputFile| f.partitions.iter().map(|p| p.rows).sum::<u64>();
        Self {
            job_id: job_id.to_string(),
            rows: files.iter().map(rows).sum(),
            columns: schema
                .fields()
                .iter()
                .map(|f| ManifestColumn {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
            files: files
                .iter()
                .map(|f| ManifestFile {
                    url: f.url.clone(),
                    rows: rows(f),
                    bytes: f.size,
                })
                .collect(),
        }
    }
}

/// What the claim mark holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    job_id: String,
    claimed_at_ms: i64,
}

/// An output folder (`scheme://authority/path`, no trailing slash) and its store.
struct Folder {
    url: String,
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl Folder {
    fn open(stores: &StoreRegistry, dir: &str) -> Result<Self> {
        let url = dir.trim_end_matches('/').to_string();
        let bad = |e: &dyn std::fmt::Display| {
            SquallError::InvalidArgument(format!("output URL '{url}': {e}"))
        };
        let target = ObjectUrl::parse(&format!("{url}/")).map_err(|e| bad(&e))?;
        let store = stores
            .get_store(target.store_url().as_ref())
            .map_err(|e| bad(&e))?;
        Ok(Self {
            path: target.path().clone(),
            url,
            store,
        })
    }

    fn child(&self, name: &str) -> Path {
        self.path.clone().join(name)
    }

    /// The job named by the mark `name`, if the folder holds one.
    async fn mark(&self, name: &str) -> Result<Option<String>> {
        let bytes = match self.store.get(&self.child(name)).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        #[derive(Deserialize)]
        struct Named {
            job_id: String,
        }
        // A mark that cannot be read is someone's: never take it over.
        Ok(Some(
            serde_json::from_slice::<Named>(&bytes)
                .map(|n| n.job_id)
                .unwrap_or_else(|_| "(unreadable mark)".into()),
        ))
    }

    /// Refuses the folder if another job's claim is in it, or its manifest
    /// (unless `replace`: then the files that manifest names may stay).
    async fn check_free(&self, job_id: &str, replace: bool) -> Result<()> {
        if let Some(owner) = self.mark(CLAIM_NAME).await?
            && owner != job_id
        {
            return Err(SquallError::OutputClaimed {
                url: self.url.clone(),
                job_id: owner,
            });
        }
        let mut replaced = Vec::new();
        if let Some(owner) = self.mark(MANIFEST_NAME).await?
            && owner != job_id
        {
            if !replace {
                return Err(SquallError::OutputExists {
                    url: self.url.clone(),
                });
            }
            replaced = self.manifest_paths().await?;
        }
        self.check_only_ours(job_id, &replaced).await
    }

    /// The paths of the files the folder's manifest names.
    async fn manifest_paths(&self) -> Result<Vec<String>> {
        let bytes = self
            .store
            .get(&self.child(MANIFEST_NAME))
            .await?
            .bytes()
            .await?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            SquallError::InvalidArgument(format!(
                "the manifest in {} cannot be read ({e}); it is not replaced",
                self.url
            ))
        })?;
        Ok(manifest
            .files
            .iter()
            .filter_map(|f| ObjectUrl::parse(&f.url).ok())
            .map(|u| u.path().to_string())
            .collect())
    }

    /// Refuses the folder if it holds an object Squall did not write for job
    /// `job_id` (anything but its marks, whose owners are checked above, and
    /// its own result files): once the job's manifest lands, readers of the
    /// folder would see only the job's files, and whatever table was there
    /// would be gone for them.
    async fn check_only_ours(&self, job_id: &str, replaced: &[String]) -> Result<()> {
        let mut listing = self.store.list(Some(&self.path));
        while let Some(meta) = listing.try_next().await? {
            let direct = meta
                .location
                .prefix_match(&self.path)
                .is_some_and(|rest| rest.count() == 1);
            let name = meta.location.filename().unwrap_or_default();
            let ours = direct
                && (name == CLAIM_NAME
                    || name == MANIFEST_NAME
                    || is_result_file_of(name, job_id)
                    || replaced.iter().any(|p| p == meta.location.as_ref()));
            if !ours {
                return Err(SquallError::OutputNotEmpty {
                    url: self.url.clone(),
                    object: meta.location.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Makes `dir` the output of job `job_id`, atomically: refused if another job
/// claimed it or left its result there. Claiming again for the same job (a
/// resumed job) succeeds.
pub async fn claim(stores: &StoreRegistry, dir: &str, job_id: &str) -> Result<()> {
    claim_replacing(stores, dir, job_id, false).await
}

/// [`claim`]; with `replace`, a folder holding another job's committed
/// result (and nothing else) is claimed too: that result is replaced when
/// this job commits ([`commit`]).
pub async fn claim_replacing(
    stores: &StoreRegistry,
    dir: &str,
    job_id: &str,
    replace: bool,
) -> Result<()> {
    let folder = Folder::open(stores, dir)?;
    folder.check_free(job_id, replace).await?;
    let body = serde_json::to_vec(&Claim {
        job_id: job_id.to_string(),
        claimed_at_ms: chrono::Utc::now().timestamp_millis(),
    })
    .map_err(|source| SquallError::Encode {
        what: "the output claim".into(),
        source,
    })?;
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let location = folder.child(CLAIM_NAME);
    match folder
        .store
        .put_opts(&location, PutPayload::from(body.clone()), options)
        .await
    {
        Ok(_) => Ok(()),
        // Someone created it since the check: whoever it names owns the folder.
        Err(object_store::Error::AlreadyExists { .. }) => match folder.mark(CLAIM_NAME).await? {
            Some(owner) if owner == job_id => Ok(()),
            Some(owner) => Err(SquallError::OutputClaimed {
                url: folder.url.clone(),
                job_id: owner,
            }),
            None => Err(SquallError::OutputClaimed {
                url: folder.url.clone(),
                job_id: "(a claim since removed)".into(),
            }),
        },
        // A store without conditional puts: checked above, then put.
        Err(object_store::Error::NotImplemented { .. }) => {
            tracing::warn!(
                output = folder.url,
                "the store cannot create objects conditionally; output claimed without a lock"
            );
            folder.store.put(&location, PutPayload::from(body)).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the manifest of job `job_id`'s committed `files` into `dir` and drops
/// the job's claim. Returns the manifest's URL. A result of another job the
/// manifest replaces (the job claimed with `replace`) has its files removed
/// once the new manifest is in place: a reader sees one result or the other.
pub async fn commit(
    stores: &StoreRegistry,
    dir: &str,
    job_id: &str,
    schema: &SchemaRef,
    files: &[OutputFile],
) -> Result<String> {
    let folder = Folder::open(stores, dir)?;
    let replaced = match folder.mark(MANIFEST_NAME).await? {
        Some(owner) if owner != job_id => folder.manifest_paths().await?,
        _ => Vec::new(),
    };
    let manifest = Manifest::new(job_id, schema, files);
    let body = serde_json::to_vec_pretty(&manifest).map_err(|source| SquallError::Encode {
        what: "the manifest".into(),
        source,
    })?;
    folder
        .store
        .put(&folder.child(MANIFEST_NAME), PutPayload::from(body))
        .await?;
    // The manifest now says whose the folder is.
    release_claim(&folder, job_id).await;
    let kept: Vec<String> = files
        .iter()
        .filter_map(|f| ObjectUrl::parse(&f.url).ok())
        .map(|u| u.path().to_string())
        .collect();
    for path in replaced.iter().filter(|p| !kept.contains(p)) {
        let location = Path::parse(path).unwrap_or_else(|_| Path::from(path.as_str()));
        if let Err(e) = folder.store.delete(&location).await {
            tracing::warn!(
                output = folder.url,
                "cannot remove the replaced file {path}: {e}"
            );
        }
    }
    Ok(format!("{}/{MANIFEST_NAME}", folder.url))
}

/// Removes what job `job_id` wrote into `dir` (its manifest, if it got that
/// far, first, so readers never see a manifest whose files are gone; its
/// result files of every run, found by name; its claim); other jobs' objects
/// stay. Failures are logged.
pub async fn discard(stores: &StoreRegistry, dir: &str, job_id: &str) {
    let Ok(folder) = Folder::open(stores, dir) else {
        return;
    };
    if matches!(folder.mark(MANIFEST_NAME).await, Ok(Some(owner)) if owner == job_id)
        && let Err(e) = folder.store.delete(&folder.child(MANIFEST_NAME)).await
    {
        tracing::warn!(output = folder.url, "cannot remove the job's manifest: {e}");
    }
    remove_results(&folder, job_id, &[]).await;
    release_claim(&folder, job_id).await;
}

/// Removes job `job_id`'s result files in `dir` that its manifest does not
/// name (`kept`): objects of attempts that lost to another copy or answered
/// too late, written after the scheduler deleted what it knew of.
pub async fn discard_strays(stores: &StoreRegistry, dir: &str, job_id: &str, kept: &[OutputFile]) {
    if let Ok(folder) = Folder::open(stores, dir) {
        let kept: Vec<String> = kept.iter().map(|f| f.url.clone()).collect();
        remove_results(&folder, job_id, &kept).await;
    }
}

/// Deletes the result files of job `job_id` directly in `folder`, but those
/// whose URL is in `kept`.
async fn remove_results(folder: &Folder, job_id: &str, kept: &[String]) {
    let prefix = folder.path.clone();
    let owner = job_id.to_string();
    let kept: std::collections::HashSet<Path> = kept
        .iter()
        .filter_map(|url| ObjectUrl::parse(url).ok())
        .map(|u| u.path().clone())
        .collect();
    let owned = folder
        .store
        .list(Some(&folder.path))
        .try_filter(move |meta| {
            let direct = meta
                .location
                .prefix_match(&prefix)
                .is_some_and(|rest| rest.count() == 1);
            let ours = direct
                && !kept.contains(&meta.location)
                && meta
                    .location
                    .filename()
                    .is_some_and(|name| is_result_file_of(name, &owner));
            futures::future::ready(ours)
        })
        .map_ok(|meta| meta.location)
        .boxed();
    delete_quietly(folder.store.as_ref(), owned, &folder.url).await;
}

/// Deletes the folder's claim if it is job `job_id`'s.
async fn release_claim(folder: &Folder, job_id: &str) {
    match folder.mark(CLAIM_NAME).await {
        Ok(Some(owner)) if owner == job_id => {
            let one = futures::stream::iter([Ok(folder.child(CLAIM_NAME))]).boxed();
            delete_quietly(folder.store.as_ref(), one, &folder.url).await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(output = folder.url, "cannot read the output claim: {e}"),
    }
}

/// Records committed stages somewhere durable (the service's job store).
pub trait StageJournal: Send + Sync {
    fn committed(
        &self,
        stage: u32,
        outputs: &[OutputFile],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The object an attempt of a stage whose plan is `plan` writes.
pub fn attempt_output_url(plan: &Arc<dyn ExecutionPlan>, id: &TaskId) -> Option<String> {
    stage_writer(plan.as_ref()).map(|writer| writer.output_url(id))
}

/// Deletes objects by URL, ignoring those already gone. Failures are logged:
/// cleanup must not hide the job's own outcome. Objects of one store go in one
/// `delete_stream` (batched DeleteObjects on S3).
pub async fn delete_all(stores: &StoreRegistry, urls: &[String]) {
    let mut by_store: HashMap<String, (Arc<dyn ObjectStore>, Vec<Path>)> = HashMap::new();
    for url in urls {
        let Ok(target) = ObjectUrl::parse(url) else {
            continue;
        };
        let key = target.store_url().as_str().to_string();
        let Ok(store) = stores.get_store(target.store_url().as_ref()) else {
            continue;
        };
        by_store
            .entry(key)
            .or_insert_with(|| (store, Vec::new()))
            .1
            .push(target.path().clone());
    }
    for (key, (store, paths)) in by_store {
        let locations = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        delete_quietly(store.as_ref(), locations, &key).await;
    }
}

/// Removes every object under the folder `dir` (a URL). Failures are logged.
pub async fn sweep(stores: &StoreRegistry, dir: &str) {
    let Ok(target) = ObjectUrl::parse(&format!("{}/", dir.trim_end_matches('/'))) else {
        return;
    };
    let Ok(store) = stores.get_store(target.store_url().as_ref()) else {
        return;
    };
    let locations = store
        .list(Some(target.path()))
        .map_ok(|meta| meta.location)
        .boxed();
    delete_quietly(store.as_ref(), locations, dir).await;
}

/// Deletes `locations` from `store` in one `delete_stream` (batched DeleteObjects
/// on S3), ignoring objects already gone and logging other failures (naming
/// `what`): cleanup must not hide a job's own outcome.
pub async fn delete_quietly(
    store: &dyn ObjectStore,
    locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    what: &str,
) {
    let mut deleted = store.delete_stream(locations);
    while let Some(outcome) = deleted.next().await {
        match outcome {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!("could not delete from {what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn names(stores: &StoreRegistry) -> Vec<String> {
        let (store, _) = stores.resolve("memory:///").unwrap();
        let mut names: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    #[tokio::test]
    async fn one_job_owns_an_output_until_it_fails() {
        let stores = StoreRegistry::new();
        let dir = "memory:///out";
        claim(&stores, dir, "a").await.unwrap();
        // Again for the same job (a resume): fine. Another job: refused, naming the owner.
        claim(&stores, dir, "a").await.unwrap();
        let err = claim(&stores, dir, "b").await.unwrap_err();
        assert!(matches!(&err, SquallError::OutputClaimed { job_id, .. } if job_id == "a"));
        assert!(err.to_string().contains("memory:///out"), "{err}");

        // Job a wrote two attempts; job b's file (from another run) and a user's file stay.
        let (store, _) = stores.resolve("memory:///").unwrap();
        for name in [
            "out/part-00000-a-r1-0.parquet",
            "out/part-00000-a-r2-1.parquet",
            "out/part-00000-b-r1-0.parquet",
            "out/notes.txt",
            "out/deeper/part-00000-a-r1-0.parquet",
        ] {
            store
                .put(&Path::from(name), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        discard(&stores, dir, "a").await;
        assert_eq!(
            names(&stores).await,
            [
                "out/deeper/part-00000-a-r1-0.parquet",
                "out/notes.txt",
                "out/part-00000-b-r1-0.parquet"
            ]
        );
        // Free of claims again, but not empty: a folder holding anything this
        // job did not write is refused, naming what is there.
        let err = claim(&stores, dir, "b").await.unwrap_err();
        assert!(
            matches!(&err, SquallError::OutputNotEmpty { object, .. } if object == "out/deeper/part-00000-a-r1-0.parquet"),
            "{err}"
        );
        for name in names(&stores).await {
            store.delete(&Path::from(name)).await.unwrap();
        }
        store
            .put(
                &Path::from("out/part-00000-b-r1-0.parquet"),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
        // Its own result files (a resumed run's) do not stop a job.
        claim(&stores, dir, "b").await.unwrap();
    }

    #[tokio::test]
    async fn a_committed_output_is_kept_by_its_manifest() {
        let stores = StoreRegistry::new();
        let dir = "memory:///done/";
        claim(&stores, dir, "a").await.unwrap();
        let schema = Arc::new(arrow::datatypes::Schema::empty());
        let url = commit(&stores, dir, "a", &schema, &[]).await.unwrap();
        assert_eq!(url, "memory:///done/_squall_manifest.json");
        assert_eq!(names(&stores).await, ["done/_squall_manifest.json"]);
        let err = claim(&stores, dir, "b").await.unwrap_err();
        assert!(matches!(err, SquallError::OutputExists { .. }), "{err}");
        // Its own job may write it again (resumed after the manifest was written).
        claim(&stores, dir, "a").await.unwrap();
    }
}
