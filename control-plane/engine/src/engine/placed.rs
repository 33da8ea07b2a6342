//! The engine's job-by-job choices where a backend has two places (auto):
//! the folder a job keeps its files in ([`Engine::plan_placed`]: on this
//! machine's disk where the whole job stays here), Lambda environments
//! started while a job is planned ([`Engine::prewarm`]), and, whatever the
//! job's folders, what is left of a job once it ended
//! ([`Engine::clean_up`]) and its result handed over ([`Engine::hand_over`]).

use std::sync::Arc;

use squall_executor::{StoreRegistry, TaskId, TaskSpec};

use super::{Engine, JobRequest, JobResult, read_result};
use crate::backend::{Place, StageOutlook};
use crate::cost::JobMeter;
use crate::error::Result;
use crate::planner::PlannedJob;
use crate::urls::to_url;

/// Where a job keeps its files: its folder under the work root, and under
/// the local work root where it may stay on this machine.
pub(super) struct Dirs {
    pub(super) work: String,
    pub(super) local: Option<String>,
    /// Set once the job is planned wholly here.
    pub(super) kept_here: std::sync::OnceLock<()>,
    /// The output folder the job claimed, once it did.
    pub(super) output: std::sync::OnceLock<String>,
}

/// Where a job's result may go (folder URLs without a trailing `/`): the
/// output it names, and where it goes instead when the job stays wholly
/// here ([`JobRequest::local_output`]).
pub(super) struct Outputs {
    pub(super) named: Option<String>,
    here: Option<String>,
}

impl Outputs {
    pub(super) fn of(request: &JobRequest) -> Result<Self> {
        let dir = |url: &String| -> Result<String> {
            Ok(to_url(url)?.as_str().trim_end_matches('/').to_string())
        };
        let named = request.output.as_ref().map(dir).transpose()?;
        let here = match &named {
            Some(_) => request.local_output.as_ref().map(dir).transpose()?,
            None => None,
        };
        Ok(Self { named, here })
    }

    /// The folder the result goes to, for a job keeping its files under
    /// `work` (on this machine's disk if `here`).
    fn result_dir(&self, work: &str, here: bool) -> String {
        let chosen = match here {
            true => self.here.as_ref().or(self.named.as_ref()),
            false => self.named.as_ref(),
        };
        chosen.cloned().unwrap_or_else(|| format!("{work}/result"))
    }
}

/// A job planned with the folder it keeps its files in.
pub(super) struct PlannedIn {
    pub(super) planned: PlannedJob,
    pub(super) work_dir: String,
    pub(super) result_dir: String,
    /// Why the whole job stays on this machine, where it does.
    pub(super) kept_here: Option<String>,
}

impl Engine {
    /// Plans the job with its files where they belong: under the local
    /// folder when the backend says the whole job (its scans' bytes
    /// together) stays on this machine or the job asked for that, its stages
    /// then kept here; else under the work root (planned again there when
    /// it was planned locally first). The result goes to the output the job
    /// names, or where a job kept here puts it instead.
    pub(super) async fn plan_placed(
        &self,
        stores: &Arc<StoreRegistry>,
        request: &JobRequest,
        dirs: &Dirs,
        outputs: &Outputs,
    ) -> Result<PlannedIn> {
        if let Some(local) = &dirs.local {
            let result_dir = outputs.result_dir(local, true);
            let planned = self.plan(stores, request, local, &result_dir).await?;
            let outlook = StageOutlook {
                tasks: planned
                    .dag
                    .stages
                    .iter()
                    .map(|s| s.tasks)
                    .max()
                    .unwrap_or(1),
                scan_bytes: planned.dag.stages.iter().map(|s| s.read_bytes).sum(),
                shuffle_bytes: 0,
                spent_usd: 0.0,
                limit_usd: request.cost_limit_usd,
                prices: self.prices.clone(),
            };
            let kept = match request.tasks.place {
                Some(Place::Local) => Some(None),
                _ => self.backend.keeps_here(&outlook).map(Some),
            };
            if let Some(reason) = kept {
                let _ = dirs.kept_here.set(());
                return Ok(PlannedIn {
                    planned,
                    work_dir: local.clone(),
                    result_dir,
                    kept_here: reason,
                });
            }
        }
        let result_dir = outputs.result_dir(&dirs.work, false);
        let planned = self.plan(stores, request, &dirs.work, &result_dir).await?;
        Ok(PlannedIn {
            planned,
            work_dir: dirs.work.clone(),
            result_dir,
            kept_here: None,
        })
    }

    /// What is left of a job that ended with `result`: a failed job's output
    /// discarded, a done one's strays; its folders swept (the work root's
    /// only if the job may have written there), and once more in the
    /// background after Lambda invocations it could not stop have ended.
    ///
    /// Whatever the outcome, nothing of the job stays under its work folder:
    /// this also catches objects the scheduler never heard of, such as the
    /// output of an attempt that timed out and finished writing later.
    /// Invocations a remote backend could not stop (losing backups on
    /// Lambda) may still write: once they have ended, sweep again, without
    /// holding the answer back (outside the job's bill). Counted before
    /// this sweep: any that end after it are waited for.
    pub(super) async fn clean_up(
        &self,
        stores: &Arc<StoreRegistry>,
        request: &JobRequest,
        result: &Result<JobResult>,
        job_id: &str,
        dirs: &Dirs,
    ) {
        // The output the job names (a server claims it when the job is
        // submitted) and the one it claimed, which differ where the result
        // went to this machine's disk instead.
        let named = request
            .output
            .as_ref()
            .and_then(|o| to_url(o).ok())
            .map(|url| url.as_str().trim_end_matches('/').to_string());
        let claimed = dirs.output.get().cloned().or_else(|| named.clone());
        match result {
            Err(_) => {
                let mut outputs: Vec<String> = claimed.into_iter().chain(named).collect();
                outputs.dedup();
                for dir in &outputs {
                    crate::commit::discard(stores, dir, job_id).await;
                }
            }
            // Losing copies of tasks stopped only now: anything they wrote
            // late is not in the manifest.
            Ok(done) => {
                if let Some(dir) = &claimed {
                    crate::commit::discard_strays(stores, dir, job_id, &done.files).await;
                }
            }
        }
        let strays = self.backend.strays(job_id);
        // A job planned wholly here wrote nothing under the work root.
        if dirs.kept_here.get().is_none() {
            crate::commit::sweep(stores, &dirs.work).await;
        }
        if let Some(local) = &dirs.local {
            crate::commit::sweep(stores, local).await;
        }
        if strays > 0 {
            let (backend, unbilled) = (self.backend.clone(), self.stores.clone());
            let (job, work) = (job_id.to_string(), dirs.work.clone());
            tokio::spawn(async move {
                backend.wait_strays(&job).await;
                crate::commit::sweep(&unbilled, &work).await;
            });
        }
    }

    /// A done job's result handed over: committed to its output (a
    /// manifest), or read back and its files removed when nobody asked to
    /// keep them.
    pub(super) async fn hand_over(
        &self,
        stores: &Arc<StoreRegistry>,
        request: &JobRequest,
        result_dir: &str,
        mut result: JobResult,
    ) -> Result<JobResult> {
        if request.output.is_some() {
            let url = crate::commit::commit(
                stores,
                result_dir,
                &result.job_id,
                &result.schema,
                &result.files,
            )
            .await?;
            result.manifest_url = Some(url);
        } else {
            let batches = read_result(stores, &result.files).await;
            let files: Vec<String> = result.files.iter().map(|f| f.url.clone()).collect();
            crate::commit::delete_all(stores, &files).await;
            result.batches = Some(batches?);
        }
        Ok(result)
    }

    /// Starts `n` Lambda environments: `n` pings at once, each billed to
    /// the job (as stage 0). A ping that fails is only logged: the job's
    /// tasks then start their environments themselves.
    pub(super) async fn prewarm(&self, n: usize, job_id: &str, run_id: &str, meter: &JobMeter) {
        if n == 0 {
            return;
        }
        let started = std::time::Instant::now();
        let pings = (0..n).map(|task| {
            let spec = ping_spec(job_id, run_id, task as u32);
            async move {
                let began = std::time::Instant::now();
                let answer = self.backend.invoke_at(Place::Lambda, spec).await;
                let usage = answer.as_ref().map(|r| r.usage.clone()).unwrap_or_default();
                meter.attempt(0, &usage, began.elapsed(), true);
                answer.is_ok()
            }
        });
        let answered = futures::future::join_all(pings)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        tracing::info!(
            job = job_id,
            asked = n,
            answered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pre-warmed Lambda environments"
        );
    }
}

/// A ping of the pre-warm: task `task` of stage 0.
fn ping_spec(job_id: &str, run_id: &str, task: u32) -> TaskSpec {
    TaskSpec::ping(TaskId {
        job_id: job_id.to_string(),
        run_id: run_id.to_string(),
        stage_id: 0,
        task,
        attempt: 0,
    })
}
