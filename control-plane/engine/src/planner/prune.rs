//! Listing a job's tables, Hive-partitioned ones pruned by the query.
//!
//! # What belongs here
//! Finding each table's layout, and for a partitioned table the predicates
//! the query puts on its partition columns: the query is planned (logically
//! and optimized, as DataFusion pushes filters into scans) against each
//! partitioned table as one of its files, and the filters of every scan of
//! the table are kept. Its folders are then listed a level at a time, every
//! folder those filters rule out left unlisted and unread (`crate::hive`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::Statement as DfStatement;
use object_store::ObjectStore;
use squall_executor::StoreRegistry;

use super::pool::PlanBudget;
use super::{PlanCaches, PlanOptions, ScanSplits, job_listings, session};
use crate::error::{Result, SquallError};
use crate::hive::PartitionPredicate;
use crate::tables::{
    Located, ResolvedTable, TableSpec, locate, provisional, register_table, resolve_located,
};

/// The tables `specs` resolved (in their order): listed, a partitioned one
/// only in the folders `statement` can read.
pub(super) async fn resolve_tables(
    statement: &DfStatement,
    specs: &[&TableSpec],
    options: &PlanOptions,
    stores: &Arc<StoreRegistry>,
    caches: &PlanCaches,
    budget: &Arc<PlanBudget>,
) -> Result<Vec<ResolvedTable>> {
    let store_of = |spec: &TableSpec| -> Result<Arc<dyn ObjectStore>> {
        let url = crate::urls::to_url(&spec.url)?;
        stores.get_store(&url).map_err(|e| SquallError::Table {
            table: spec.name.clone(),
            message: e.to_string(),
        })
    };
    let located: Vec<(Arc<dyn ObjectStore>, Located)> =
        futures::future::try_join_all(specs.iter().map(|spec| async move {
            let store = store_of(spec)?;
            let located = locate(spec, &store, &options.guard).await?;
            Ok::<_, SquallError>((store, located))
        }))
        .await?;
    let partitioned = located.iter().any(|(_, l)| l.partitions().is_some());
    let predicates = if partitioned {
        predicates(statement, specs, &located, options, stores, caches, budget).await
    } else {
        HashMap::new()
    };
    futures::future::try_join_all(specs.iter().zip(&located).map(|(spec, (store, located))| {
        let predicate = predicates.get(&spec.name);
        resolve_located(spec, store, &options.guard, located, predicate)
    }))
    .await
}

/// Per partitioned table (by name), what the query's scans of it filter on
/// its partition columns. A table whose predicate cannot be found (the
/// query fails to plan against its first file, say) gets none: it is read
/// whole, and planning it for real reports what is wrong.
async fn predicates(
    statement: &DfStatement,
    specs: &[&TableSpec],
    located: &[(Arc<dyn ObjectStore>, Located)],
    options: &PlanOptions,
    stores: &Arc<StoreRegistry>,
    caches: &PlanCaches,
    budget: &Arc<PlanBudget>,
) -> HashMap<String, PartitionPredicate> {
    let found = async {
        let tables = futures::future::try_join_all(specs.iter().zip(located).map(
            |(spec, (store, located))| async move {
                match provisional(spec, located) {
                    Some(table) => Ok(table),
                    None => resolve_located(spec, store, &options.guard, located, None).await,
                }
            },
        ))
        .await?;
        let ctx = session(
            stores.clone(),
            caches.config(job_listings(&tables)?),
            Arc::new(ScanSplits::default()),
            options,
            budget,
        )?;
        futures::future::try_join_all(tables.iter().map(|t| register_table(&ctx, t))).await?;
        let state = ctx.state();
        let logical = state
            .statement_to_plan(statement.clone())
            .await
            .and_then(|plan| state.optimize(&plan))
            .map_err(SquallError::from_planning)?;
        Ok::<_, SquallError>((tables, scan_filters(&logical)))
    };
    let (tables, mut filters) = match found.await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "no partition predicates: every partition is listed");
            return HashMap::new();
        }
    };
    tables
        .iter()
        .filter(|t| !t.partitions.is_empty())
        .filter_map(|t| {
            let scans = filters.remove(&t.spec.name.to_ascii_lowercase())?;
            let predicate = PartitionPredicate::new(&t.partitions, scans);
            Some((t.spec.name.clone(), predicate))
        })
        .collect()
}

/// The filters of each scan in `plan`, by table name (lower case).
fn scan_filters(plan: &LogicalPlan) -> HashMap<String, Vec<Vec<Expr>>> {
    let mut scans: HashMap<String, Vec<Vec<Expr>>> = HashMap::new();
    let walked = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table().to_ascii_lowercase();
            scans.entry(name).or_default().push(scan.filters.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if walked.is_err() {
        return HashMap::new();
    }
    scans
}
