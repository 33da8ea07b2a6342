//! Stopping a running task between batches.
//!
//! Dropping a task's future stops it only where it awaits, and a DataFusion
//! operator can compute for minutes without awaiting: a cross join feeding an
//! aggregate hands over batch after batch and is never `Pending`. [`stoppable`]
//! puts a [`StopExec`] on every edge of a stage plan; once the task's
//! [`StopFlag`] is raised, the next batch any operator asks its input for is an
//! error instead, so a stopped task ends within one batch of each operator.
//! Executors that can stop a task (the in-process backend) raise the flag; a
//! Lambda invocation runs to its end and has none.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{RecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
    replace_children_if_necessary,
};
use futures::Stream;

/// Raised to stop a task; shared by the task and whoever may stop it.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `plan` with a [`StopExec`] between every operator and each of its inputs.
pub fn stoppable(plan: Arc<dyn ExecutionPlan>, flag: &StopFlag) -> Result<Arc<dyn ExecutionPlan>> {
    let children = plan.children();
    if children.is_empty() {
        return Ok(plan);
    }
    let wrapped = children
        .into_iter()
        .map(|child| {
            let inner = stoppable(child.clone(), flag)?;
            Ok(Arc::new(StopExec::new(inner, flag.clone())) as Arc<dyn ExecutionPlan>)
        })
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, wrapped)
}

/// Passes its input's batches on until the flag is raised.
#[derive(Debug)]
pub struct StopExec {
    input: Arc<dyn ExecutionPlan>,
    flag: StopFlag,
}

impl StopExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, flag: StopFlag) -> Self {
        Self { input, flag }
    }
}

impl DisplayAs for StopExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StopExec")
    }
}

impl ExecutionPlan for StopExec {
    fn name(&self) -> &str {
        "StopExec"
    }

    /// Its input's: it changes nothing about the data.
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(StopExec::new(input, self.flag.clone()))),
            Err(_) => internal_err!("StopExec takes exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(StopStream {
            inner: self.input.execute(partition, context)?,
            flag: self.flag.clone(),
            stopped: false,
        }))
    }
}

struct StopStream {
    inner: SendableRecordBatchStream,
    flag: StopFlag,
    stopped: bool,
}

impl Stream for StopStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stopped {
            return Poll::Ready(None);
        }
        if self.flag.is_raised() {
            self.stopped = true;
            return Poll::Ready(Some(Err(DataFusionError::Execution(
                "the task was stopped".into(),
            ))));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for StopStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn a_raised_flag_ends_the_plan_between_batches() {
        let ctx = SessionContext::new();
        let plan = ctx
            .sql("SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let flag = StopFlag::default();
        let plan = stoppable(plan, &flag).unwrap();
        assert!(
            plan.children()
                .iter()
                .all(|c| c.downcast_ref::<StopExec>().is_some())
        );
        // Ten billion rows to count: it ends only because the flag goes up.
        let raiser = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            raiser.raise();
        });
        let started = std::time::Instant::now();
        let err = collect(plan, ctx.task_ctx()).await.unwrap_err();
        assert!(err.to_string().contains("the task was stopped"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }
}
