//! Table functions that generate rows (`generate_series`, `range`), made safe
//! to ship to executors.
//!
//! datafusion-proto encodes such a scan with its projected schema but not its
//! projection, so a scan projected down to no columns (`count(*)`) comes back
//! as a generator of one column under a schema of none, and fails
//! ("number of columns(1) must match number of fields(0)"). Such a scan is
//! rewritten here to generate its full row and project it away afterwards,
//! which round-trips.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::memory::LazyMemoryExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

/// `plan` with every generated scan projected to no columns rewritten as a
/// full scan under an empty projection.
pub fn unproject_generated(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(lazy) = node.downcast_ref::<LazyMemoryExec>() else {
            return Ok(Transformed::no(node));
        };
        if !lazy.schema().fields().is_empty() {
            return Ok(Transformed::no(node));
        }
        // The full row's schema, from a fresh copy of each generator.
        let mut schema = None;
        for generator in lazy.generators() {
            let fresh = generator.read().reset_state();
            let first = fresh.write().generate_next_batch()?;
            if let Some(batch) = first {
                schema = Some(batch.schema());
                break;
            }
        }
        let Some(schema) = schema else {
            // Nothing generated at all: no rows, no columns.
            return Ok(Transformed::yes(Arc::new(EmptyExec::new(lazy.schema()))));
        };
        let full = LazyMemoryExec::try_new(schema, lazy.generators().clone())?;
        let projected = ProjectionExec::try_new(Vec::<ProjectionExpr>::new(), Arc::new(full))?;
        Ok(Transformed::yes(Arc::new(projected)))
    })
    .map(|t| t.data)
}
