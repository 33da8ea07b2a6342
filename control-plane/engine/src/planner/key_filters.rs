//! Which joins can filter a stage feeding one side with the keys of the
//! other side, and that stage's plan once the filter is known.
//!
//! ```text
//!   stage S (source) ── ShuffleWriterExec, summarising keys k_s ─────────┐
//!                                                                        ├─▶ stage J: HashJoinExec
//!   stage T (target) ── KeyFilterExec(k_t) ── ShuffleWriterExec ─▶ ... ──┘   (k_s = k_t)
//!                       (added when S commits, before T starts)
//! ```
//!
//! A row of T whose keys S never wrote is dropped before T writes it. That is
//! exact when the join's output never holds a row of T's side without a
//! match (inner joins; a left outer or left semi/anti/mark join for its
//! right side, a right one for its left side) and a null key matches nothing
//! (`NullEqualsNothing`). T's columns are traced from the join's keys down
//! through nodes that pass, drop or group rows by them unchanged
//! (projections, filters, sorts, group-by columns, joins, across an inner
//! join's keys to its other side): a row dropped there can only have become
//! rows the join drops. S's keys are traced the same way, so they hold at
//! least every key reaching the join. T must be read by the join's stage
//! alone, and S must not depend on T.
//!
//! Whether T waits for S is [`should_wait`]; a T that has not started when S
//! commits gets the filter either way.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, JoinType, NullEquality};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
use squall_executor::keys::{KeySet, summarisable};
use squall_executor::{KeyFilter, KeyFilterExec, ShuffleReaderExec, ShuffleWriterExec};

use super::stages::{KeyFilterSite, Stage, StageDag};

/// When joins filter a stage feeding one side with the other side's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyFilterMode {
    /// Never.
    Off,
    /// The stage filtered waits for the keys where [`should_wait`] says so.
    #[default]
    Auto,
    /// Every stage filtered waits for the keys (tests, benchmarks).
    Always,
}

impl std::str::FromStr for KeyFilterMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "key filters are off, auto or always, not {other:?}"
            )),
        }
    }
}

/// A stage waits for the keys that filter it when the source (with all it
/// reads) scans at most this many times what the stage scans: the wait then
/// costs at most a few times the stage's own scan, on executors the source
/// keeps busy meanwhile, and the stage's shuffle (its largest cost after
/// the scan) is what the filter shrinks.
pub const WAIT_RATIO: u64 = 4;

/// A stage scanning less than this (with all it reads) does not wait for
/// keys (in `auto`), unless its own keys then filter another stage: its
/// shuffle is small whatever a filter drops, and the wait would put the
/// source's latency on the job's path.
pub const MIN_TARGET_SCAN_BYTES: u64 = 8 << 20;

/// Whether the stage filtered waits for the keys: see [`WAIT_RATIO`].
pub fn should_wait(mode: KeyFilterMode, source_bytes: u64, target_bytes: u64) -> bool {
    match mode {
        KeyFilterMode::Off => false,
        KeyFilterMode::Always => true,
        KeyFilterMode::Auto => source_bytes <= target_bytes.saturating_mul(WAIT_RATIO),
    }
}

/// Join types whose output holds no row of the right side without a match.
fn filters_right(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    )
}

/// Join types whose output holds no row of the left side without a match.
fn filters_left(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
            | JoinType::LeftSemi
    )
}

/// Finds where joins can filter the stages feeding them, and marks the
/// source stages' writers to summarise the keys. A site is kept only where
/// the target waits for its source (a target that starts first would not
/// get the filter, and the source would summarise its keys for nothing)
/// and the source is selective (see [`selective`]).
pub fn plan_key_filters(dag: &mut StageDag, mode: KeyFilterMode) -> Vec<KeyFilterSite> {
    if mode == KeyFilterMode::Off {
        return vec![];
    }
    let mut sites: Vec<KeyFilterSite> = Vec::new();
    for stage in &dag.stages {
        let mut joins = Vec::new();
        let _ = stage.plan.apply(|node| {
            if node.downcast_ref::<HashJoinExec>().is_some() {
                joins.push(node.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        for join in joins
            .iter()
            .filter_map(|j| j.downcast_ref::<HashJoinExec>())
        {
            for mut site in join_sites(dag, stage.id, join) {
                let known = |s: &KeyFilterSite| s.source == site.source && s.target == site.target;
                // A wait must not close a circle of waits and reads.
                site.wait = should_wait(mode, scanned(dag, site.source), scanned(dag, site.target))
                    && !reached(dag, &sites, site.source).contains(&site.target);
                if site.wait && selective(dag, &sites, site.source) && !sites.iter().any(known) {
                    sites.push(site);
                }
            }
        }
    }
    if mode == KeyFilterMode::Auto {
        drop_small_targets(dag, &mut sites);
    }
    mark_sources(dag, &mut sites);
    sites
}

/// Drops the sites whose target scans under [`MIN_TARGET_SCAN_BYTES`] and is
/// not the source of a site kept (a small dimension filtered first so that
/// its keys filter a large stage is worth its wait).
fn drop_small_targets(dag: &StageDag, sites: &mut Vec<KeyFilterSite>) {
    loop {
        let feeding: HashSet<u32> = sites.iter().map(|s| s.source).collect();
        let before = sites.len();
        sites.retain(|s| {
            scanned(dag, s.target) >= MIN_TARGET_SCAN_BYTES || feeding.contains(&s.target)
        });
        if sites.len() == before {
            return;
        }
    }
}

/// Gives each source stage's writer its sets of keys to summarise, and each
/// site the index of its set.
fn mark_sources(dag: &mut StageDag, sites: &mut [KeyFilterSite]) {
    for stage in dag.stages.iter_mut() {
        let Some(writer) = stage.plan.downcast_ref::<ShuffleWriterExec>() else {
            continue;
        };
        let mut sets: Vec<Vec<usize>> = Vec::new();
        for site in sites.iter_mut().filter(|s| s.source == stage.id) {
            site.source_set = match sets.iter().position(|k| *k == site.source_keys) {
                Some(i) => i,
                None => {
                    sets.push(site.source_keys.clone());
                    sets.len() - 1
                }
            };
        }
        if sets.is_empty() {
            continue;
        }
        let schema = writer.input().schema();
        let column =
            |i: usize| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
        // Every task's Bloom filter is sized for the rows DataFusion expects
        // the whole stage to write (twice, as estimates after filters run
        // low), the largest where it cannot say.
        let rows = StatisticsContext::new()
            .compute(writer.input().as_ref(), &StatisticsArgs::new())
            .ok()
            .and_then(|s| s.num_rows.get_value().map(|r| r.saturating_mul(2)));
        let sets = sets
            .iter()
            .map(|set| KeySet {
                keys: set.iter().map(|&i| column(i)).collect(),
                bloom_blocks: KeySet::blocks_for(rows),
            })
            .collect();
        stage.plan = Arc::new(writer.summarising(sets));
    }
}

/// Whether stage `id` or a stage it reads drops rows before its keys are
/// written (a filter, a join that keeps only matches, or the key filter of
/// one of `sites`): a source that writes every key of a table (a dimension
/// scanned whole) filters nothing.
fn selective(dag: &StageDag, sites: &[KeyFilterSite], id: u32) -> bool {
    let upstream = reached(dag, &[], id);
    if sites.iter().any(|s| s.wait && upstream.contains(&s.target)) {
        return true;
    }
    upstream.iter().filter_map(|s| dag.stage(*s)).any(|stage| {
        let mut drops = false;
        let _ = stage.plan.apply(|node| {
            drops |= node.downcast_ref::<FilterExec>().is_some()
                || node.downcast_ref::<HashJoinExec>().is_some_and(|j| {
                    matches!(
                        j.join_type(),
                        JoinType::Inner
                            | JoinType::LeftSemi
                            | JoinType::RightSemi
                            | JoinType::LeftAnti
                            | JoinType::RightAnti
                    )
                });
            Ok(if drops {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
        drops
    })
}

/// The sites of one join in stage `stage`, both ways: a stage feeding one
/// side with every key column unchanged filtered by one feeding the other.
fn join_sites(dag: &StageDag, stage: u32, join: &HashJoinExec) -> Vec<KeyFilterSite> {
    if join.null_equality() != NullEquality::NullEqualsNothing {
        return vec![];
    }
    let on = join.on();
    let left = key_sources(join.left(), on.iter().map(|(l, _)| l));
    let right = key_sources(join.right(), on.iter().map(|(_, r)| r));
    let join_type = *join.join_type();
    let mut sites = Vec::new();
    if filters_right(join_type) {
        sites.extend(side_sites(dag, stage, join_type, &left, &right));
    }
    if filters_left(join_type) {
        sites.extend(side_sites(dag, stage, join_type, &right, &left));
    }
    sites
}

/// The stages holding every one of `keys` (columns of `side`'s output)
/// unchanged, with the columns of their writers' input that do.
fn key_sources<'a>(
    side: &Arc<dyn ExecutionPlan>,
    keys: impl Iterator<Item = &'a Arc<dyn PhysicalExpr>>,
) -> Vec<(u32, Vec<usize>)> {
    let mut found: Option<Vec<(u32, Vec<usize>)>> = None;
    for key in keys {
        let Some(column) = key.downcast_ref::<Column>() else {
            return vec![];
        };
        let mut at = Vec::new();
        trace(side, column.index(), &mut at);
        found = Some(match found {
            None => at.into_iter().map(|(s, c)| (s, vec![c])).collect(),
            Some(before) => before
                .into_iter()
                .filter_map(|(s, mut columns)| {
                    let (_, c) = at.iter().find(|(t, _)| *t == s)?;
                    columns.push(*c);
                    Some((s, columns))
                })
                .collect(),
        });
    }
    found.unwrap_or_default()
}

/// Sites filtering the `targets` by one of the `sources` (the one scanning least).
fn side_sites(
    dag: &StageDag,
    stage: u32,
    join_type: JoinType,
    sources: &[(u32, Vec<usize>)],
    targets: &[(u32, Vec<usize>)],
) -> Vec<KeyFilterSite> {
    let Some((source, source_keys)) = sources.iter().min_by_key(|(s, _)| scanned(dag, *s)) else {
        return vec![];
    };
    let mut sites = Vec::new();
    for (target, target_keys) in targets {
        if target == source || !same_types(dag, (*source, source_keys), (*target, target_keys)) {
            continue;
        }
        // The target's output must reach this stage alone, once, and the
        // source must not depend on the target.
        let readers: usize = dag
            .stages
            .iter()
            .map(|s| readers_of(&s.plan, *target))
            .sum();
        if readers != 1 || reached(dag, &[], *source).contains(target) {
            continue;
        }
        sites.push(KeyFilterSite {
            source: *source,
            source_keys: source_keys.clone(),
            source_set: 0,
            target: *target,
            target_keys: target_keys.clone(),
            join: stage,
            join_type,
            wait: false,
        });
    }
    sites
}

/// The stages (and columns of their writers' input) whose values reach
/// column `column` of `plan`'s output unchanged, through nodes that only
/// drop, reorder or pass rows along (and, across an inner join's keys, the
/// other side's key). A row dropped below for a key the join cannot match
/// only removes rows that the join would have dropped.
fn trace(plan: &Arc<dyn ExecutionPlan>, column: usize, found: &mut Vec<(u32, usize)>) {
    if plan.fetch().is_some() {
        return;
    }
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        found.push((reader.stage_id(), column));
        return;
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        if let Some(c) = projection
            .expr()
            .get(column)
            .and_then(|e| e.expr.downcast_ref::<Column>())
        {
            trace(projection.input(), c.index(), found);
        }
        return;
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(p) => match p.get(column) {
                Some(c) => *c,
                None => return,
            },
            None => column,
        };
        trace(filter.input(), column, found);
        return;
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let groups = aggregate.group_expr();
        if groups.is_single()
            && aggregate.limit_options().is_none()
            && let Some((expr, _)) = groups.expr().get(column)
            && let Some(c) = expr.downcast_ref::<Column>()
        {
            trace(aggregate.input(), c.index(), found);
        }
        return;
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        trace_join(join, column, found);
        return;
    }
    let passes = plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<SortExec>().is_some()
        || plan.downcast_ref::<SortPreservingMergeExec>().is_some()
        || plan.downcast_ref::<KeyFilterExec>().is_some();
    if passes && let [child] = plan.children().as_slice() {
        trace(child, column, found);
    }
}

/// [`trace`] through a hash join's output column.
fn trace_join(join: &HashJoinExec, column: usize, found: &mut Vec<(u32, usize)>) {
    let column = match &join.projection {
        Some(p) => match p.get(column) {
            Some(c) => *c,
            None => return,
        },
        None => column,
    };
    let left_width = join.left().schema().fields().len();
    let right_width = join.right().schema().fields().len();
    let (left, right) = match join.join_type() {
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
            if column < left_width {
                (Some(column), None)
            } else {
                (None, Some(column - left_width))
            }
        }
        JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
            ((column < left_width).then_some(column), None)
        }
        JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
            (None, (column < right_width).then_some(column))
        }
    };
    // An inner join's output holds only rows whose keys are equal on both sides.
    let other = |side: usize, of_left: bool| {
        if *join.join_type() != JoinType::Inner {
            return None;
        }
        join.on().iter().find_map(|(l, r)| {
            let (mine, theirs) = if of_left { (l, r) } else { (r, l) };
            let mine = mine.downcast_ref::<Column>()?;
            let theirs = theirs.downcast_ref::<Column>()?;
            (mine.index() == side).then_some(theirs.index())
        })
    };
    if let Some(c) = left {
        trace(join.left(), c, found);
        if let Some(r) = other(c, true) {
            trace(join.right(), r, found);
        }
    }
    if let Some(c) = right {
        trace(join.right(), c, found);
        if let Some(l) = other(c, false) {
            trace(join.left(), l, found);
        }
    }
}

/// Whether the key columns of the two stages' writer inputs have the same
/// types, and types a summary can hold.
fn same_types(dag: &StageDag, source: (u32, &[usize]), target: (u32, &[usize])) -> bool {
    let schema = |id: u32| {
        let stage = dag.stage(id)?;
        let writer = stage.plan.downcast_ref::<ShuffleWriterExec>()?;
        Some(writer.input().schema())
    };
    let (Some(b), Some(p)) = (schema(source.0), schema(target.0)) else {
        return false;
    };
    source.1.len() == target.1.len()
        && source.1.iter().zip(target.1).all(|(&bi, &pi)| {
            let (Some(bf), Some(pf)) = (b.fields().get(bi), p.fields().get(pi)) else {
                return false;
            };
            bf.data_type() == pf.data_type() && summarisable(bf.data_type())
        })
}

/// How many readers of stage `id` the plan holds.
pub(super) fn readers_of(plan: &Arc<dyn ExecutionPlan>, id: u32) -> usize {
    let mut count = 0;
    let _ = plan.apply(|node| {
        if node
            .downcast_ref::<ShuffleReaderExec>()
            .is_some_and(|r| r.stage_id() == id)
        {
            count += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    count
}

/// `id` and every stage it reads or (by the waits of `sites`) waits for,
/// directly or not.
fn reached(dag: &StageDag, sites: &[KeyFilterSite], id: u32) -> HashSet<u32> {
    let mut seen = HashSet::new();
    let mut stack = vec![id];
    while let Some(next) = stack.pop() {
        if !seen.insert(next) {
            continue;
        }
        if let Some(stage) = dag.stage(next) {
            stack.extend(stage.inputs.iter().copied());
        }
        let waits = sites.iter().filter(|s| s.target == next && s.wait);
        stack.extend(waits.map(|s| s.source));
    }
    seen
}

/// Table bytes stage `id` and everything it reads scan.
fn scanned(dag: &StageDag, id: u32) -> u64 {
    reached(dag, &[], id)
        .iter()
        .filter_map(|s| dag.stage(*s))
        .map(|s| s.read_bytes)
        .sum()
}

/// `target` with `filter` applied to the rows its writer is given.
pub fn filtered_stage(
    target: &Stage,
    site: &KeyFilterSite,
    filter: Arc<KeyFilter>,
) -> Result<Stage, DataFusionError> {
    let input = target.writer_input()?;
    let schema = input.schema();
    let keys = site
        .target_keys
        .iter()
        .map(|&i| {
            let field = schema.fields().get(i).ok_or_else(|| {
                DataFusionError::Internal(format!("stage {} has no column {i}", target.id))
            })?;
            Ok(Arc::new(Column::new(field.name(), i)) as Arc<dyn PhysicalExpr>)
        })
        .collect::<Result<Vec<_>, DataFusionError>>()?;
    let filtered: Arc<dyn ExecutionPlan> =
        Arc::new(KeyFilterExec::new(input, keys, filter, site.source));
    Ok(Stage {
        plan: replace_children_if_necessary(target.plan.clone(), vec![filtered])?,
        encoded: None,
        ..target.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_waits_only_for_keys_that_cost_a_few_times_its_own_scan() {
        assert!(should_wait(KeyFilterMode::Auto, 400, 100));
        assert!(!should_wait(KeyFilterMode::Auto, 401, 100));
        assert!(should_wait(KeyFilterMode::Auto, 0, 0));
        assert!(should_wait(KeyFilterMode::Always, 100, 1));
        assert!(!should_wait(KeyFilterMode::Off, 1, 100));
        assert_eq!("always".parse(), Ok(KeyFilterMode::Always));
        assert!("sometimes".parse::<KeyFilterMode>().is_err());
    }

    #[test]
    fn a_side_is_filtered_only_where_its_unmatched_rows_never_reach_the_output() {
        use JoinType::*;
        let right = [Inner, Left, LeftSemi, LeftAnti, LeftMark, RightSemi];
        let left = [Inner, Right, RightSemi, RightAnti, RightMark, LeftSemi];
        for join_type in [
            Inner, Left, Right, Full, LeftSemi, RightSemi, LeftAnti, RightAnti, LeftMark, RightMark,
        ] {
            assert_eq!(
                filters_right(join_type),
                right.contains(&join_type),
                "{join_type}"
            );
            assert_eq!(
                filters_left(join_type),
                left.contains(&join_type),
                "{join_type}"
            );
        }
    }
}
