//! The writer at the root of a stage plan, whatever its kind: what `run_task`
//! drives and what the control plane asks for a task's output location. Above
//! `writer` (the generic writer) and its two kinds (`result_writer`,
//! `shuffle::writer`), so that neither kind's module is imported by `writer`.

use datafusion::physical_plan::ExecutionPlan;

use crate::result_writer::ResultFiles;
use crate::shuffle::writer::ShuffleFiles;
use crate::writer::{StageWriter, WriterExec};

/// The writer at the root of a stage plan, if the plan ends in one.
pub fn stage_writer(plan: &dyn ExecutionPlan) -> Option<&dyn StageWriter> {
    if let Some(writer) = plan.downcast_ref::<WriterExec<ShuffleFiles>>() {
        return Some(writer);
    }
    plan.downcast_ref::<WriterExec<ResultFiles>>()
        .map(|writer| writer as &dyn StageWriter)
}
