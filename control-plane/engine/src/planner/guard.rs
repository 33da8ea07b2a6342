//! What a query may ask of the planner: how large and deep its expressions
//! are, how many query blocks and tables it has, and which values and types
//! its plan may hold. Planning recurses through every expression, and so
//! does dropping one: a chain of 200,000 `+` (the SQL parser's nesting limit
//! does not count left-to-right chains) overflows any stack, which aborts the
//! process. So the statement is measured right after parsing, on the planning
//! thread (see `pool`), before anything recurses through it.
//!
//! # What belongs here
//! The bounds ([`MAX_EXPR_DEPTH`], ...), the check of a parsed statement
//! against them ([`check_statement`]), and [`PlanGuard`], the optimizer rule
//! Squall runs after each of DataFusion's: it stops planning once its
//! [`PlanBudget`](super::pool::PlanBudget) is spent, and refuses a plan that
//! holds a literal over [`MAX_FOLDED_BYTES`] or a type whose every value is
//! larger than [`MAX_VALUE_BYTES`] (`arrow_cast(NULL, 'FixedSizeBinary(…)')`).
//! Each refusal names the bound, and its value.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::{self, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use squall_executor::bounds::{MAX_FOLDED_BYTES, MAX_VALUE_BYTES, fixed_width, scalar_bytes};
use squall_executor::human_bytes;

use super::pool::PlanBudget;
use crate::error::{Result, SquallError};

/// Deepest expression: operators nested in operators (`a + b + c` is 2 deep).
/// Planning it takes a few KiB of stack per level, running it in a task
/// about as much (measured on a debug build: 512 levels need 2 MiB).
pub const MAX_EXPR_DEPTH: usize = 256;
/// Most expression nodes in one statement (an `IN` list of 100,000 values).
pub const MAX_EXPR_NODES: usize = 100_000;
/// Most query blocks (`SELECT`s: subqueries, unions' branches) in one statement.
pub const MAX_QUERY_BLOCKS: usize = 500;
/// Most table references (each a scan, each join a level of the plan).
pub const MAX_TABLE_REFERENCES: usize = 256;

/// A bound a statement passed.
fn too_large(what: &str, value: String, limit: String) -> SquallError {
    SquallError::OverLimit {
        option: what.to_string(),
        value,
        limit,
        hint: " (simplify the query, e.g. an IN list for a chain of ORs)".into(),
    }
}

/// Counts query blocks in `sql` before it is parsed: a chain of `UNION`s
/// nests as deep as it is long. A text the tokenizer cannot read is left to
/// the parser, which says what is wrong with it.
pub fn check_text(sql: &str) -> Result<()> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let blocks = tokens
        .iter()
        .filter(|t| matches!(t, Token::Word(w) if w.keyword == Keyword::SELECT))
        .count();
    if blocks > MAX_QUERY_BLOCKS {
        return Err(too_large(
            "the query",
            format!("has {blocks} SELECTs"),
            format!("{MAX_QUERY_BLOCKS} per statement"),
        ));
    }
    Ok(())
}

/// Refuses a statement whose expressions are deeper or larger, or that
/// names more tables, than the bounds allow. Stops walking at the first
/// bound passed, so the walk itself never goes deeper than the bound.
pub fn check_statement(statement: &ast::Statement) -> Result<()> {
    let mut shape = Shape::default();
    match statement.visit(&mut shape) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(refusal) => Err(refusal),
    }
}

/// What [`check_statement`] counts.
#[derive(Default)]
struct Shape {
    depth: usize,
    nodes: usize,
    tables: usize,
}

impl Visitor for Shape {
    type Break = SquallError;

    fn pre_visit_expr(&mut self, _expr: &ast::Expr) -> ControlFlow<SquallError> {
        self.depth += 1;
        self.nodes += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(too_large(
                "an expression",
                format!("is nested more than {MAX_EXPR_DEPTH} levels deep"),
                format!("{MAX_EXPR_DEPTH} levels"),
            ));
        }
        if self.nodes > MAX_EXPR_NODES {
            return ControlFlow::Break(too_large(
                "the query",
                format!("has more than {MAX_EXPR_NODES} expression terms"),
                format!("{MAX_EXPR_NODES} terms"),
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &ast::Expr) -> ControlFlow<SquallError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, _relation: &ast::ObjectName) -> ControlFlow<SquallError> {
        self.tables += 1;
        if self.tables > MAX_TABLE_REFERENCES {
            return ControlFlow::Break(too_large(
                "the query",
                format!("names tables more than {MAX_TABLE_REFERENCES} times"),
                format!("{MAX_TABLE_REFERENCES} table references"),
            ));
        }
        ControlFlow::Continue(())
    }
}

/// Refuses a literal over [`MAX_FOLDED_BYTES`] or a type whose values are all
/// over [`MAX_VALUE_BYTES`], anywhere in `plan`.
pub fn check_plan_values(plan: &LogicalPlan) -> DfResult<()> {
    plan.apply_with_subqueries(|node| {
        for field in node.schema().fields() {
            check_type(field.data_type())?;
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                match e {
                    Expr::Literal(value, _) => {
                        let bytes = scalar_bytes(value)?;
                        if bytes > MAX_FOLDED_BYTES {
                            return Err(DataFusionError::Plan(format!(
                                "a literal of {} is over the limit of {} per literal \
                                 in a plan (a bound of this server)",
                                human_bytes(bytes),
                                human_bytes(MAX_FOLDED_BYTES)
                            )));
                        }
                        check_type(&value.data_type())?;
                    }
                    Expr::Cast(cast) => check_type(cast.field.data_type())?,
                    Expr::TryCast(cast) => check_type(cast.field.data_type())?,
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map(|_| ())
}

/// Refuses a type whose every value is larger than [`MAX_VALUE_BYTES`].
fn check_type(data_type: &DataType) -> DfResult<()> {
    match fixed_width(data_type) {
        Some(width) if width > MAX_VALUE_BYTES => Err(DataFusionError::Plan(format!(
            "type {data_type} has values of {} each, over the limit of {} per value \
             (a bound of this server)",
            human_bytes(width),
            human_bytes(MAX_VALUE_BYTES)
        ))),
        _ => Ok(()),
    }
}

/// Runs after each of DataFusion's optimizer rules: stops planning once its
/// budget is spent, and checks the plan's values after the rules that fold
/// constants (and before the first and after the last rule).
#[derive(Debug)]
pub struct PlanGuard {
    budget: Arc<PlanBudget>,
    /// Check the plan's literals and types here, not only the budget.
    check_values: bool,
    name: String,
}

impl PlanGuard {
    /// DataFusion's optimizer rules with a guard after each, and one first.
    pub fn around(
        rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>,
        budget: &Arc<PlanBudget>,
    ) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
        let guard = |after: &str, check_values: bool| -> Arc<dyn OptimizerRule + Send + Sync> {
            Arc::new(PlanGuard {
                budget: budget.clone(),
                check_values,
                name: format!("squall_guard_after_{after}"),
            })
        };
        let last = rules.len().saturating_sub(1);
        let mut guarded = vec![guard("analysis", true)];
        for (i, rule) in rules.into_iter().enumerate() {
            let folds = rule.name() == "simplify_expressions";
            let name = rule.name().to_string();
            guarded.push(rule);
            guarded.push(guard(&name, folds || i == last));
        }
        guarded
    }
}

impl OptimizerRule for PlanGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        self.budget.check()?;
        if self.check_values {
            check_plan_values(&plan)?;
        }
        Ok(Transformed::no(plan))
    }
}

/// Runs after each physical optimizer rule: stops planning once its budget
/// is spent.
#[derive(Debug)]
pub struct PhysicalGuard {
    budget: Arc<PlanBudget>,
}

impl PhysicalGuard {
    /// `rules` with a guard after each.
    pub fn around(
        rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>,
        budget: &Arc<PlanBudget>,
    ) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
        let mut guarded = Vec::with_capacity(rules.len() * 2);
        for rule in rules {
            guarded.push(rule);
            guarded.push(Arc::new(PhysicalGuard {
                budget: budget.clone(),
            })
                as Arc<dyn PhysicalOptimizerRule + Send + Sync>);
        }
        guarded
    }
}

impl PhysicalOptimizerRule for PhysicalGuard {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.budget.check()?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "squall_guard"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parsed(sql: &str) -> ast::Statement {
        Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn deep_wide_and_long_statements_are_refused_by_name() {
        let chain = |n: usize, op: &str| vec!["a"; n].join(op);
        check_statement(&parsed(&format!(
            "SELECT {} FROM t",
            chain(MAX_EXPR_DEPTH, "+")
        )))
        .unwrap();
        let err = check_statement(&parsed(&format!(
            "SELECT {} FROM t",
            chain(MAX_EXPR_DEPTH + 2, "+")
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than 256 levels deep"), "{err}");
        let err = check_statement(&parsed(&format!(
            "SELECT * FROM t WHERE {}",
            chain(300, " OR a = ")
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("levels deep"), "{err}");
        // Wide but flat: an IN list of 50,000 values is fine, 150,000 is not.
        let list = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        check_statement(&parsed(&format!(
            "SELECT * FROM t WHERE a IN ({})",
            list(50_000)
        )))
        .unwrap();
        let err = check_statement(&parsed(&format!(
            "SELECT * FROM t WHERE a IN ({})",
            list(150_000)
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("100000 expression terms"), "{err}");
        let joins = (0..300)
            .map(|i| format!("t AS t{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let err = check_statement(&parsed(&format!("SELECT 1 FROM {joins}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("256 table references"), "{err}");
        let unions = vec!["SELECT 1"; 600].join(" UNION ALL ");
        let err = check_text(&unions).unwrap_err().to_string();
        assert!(err.contains("600 SELECTs"), "{err}");
        check_text(&vec!["SELECT 1"; 400].join(" UNION ALL ")).unwrap();
        // Words in strings and comments are not SELECTs.
        check_text(&format!("SELECT '{}' -- select", "select ".repeat(1000))).unwrap();
    }

    #[test]
    fn large_literals_and_fixed_types_are_refused() {
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::{LogicalPlanBuilder, lit};
        let plan = |e: Expr| {
            LogicalPlanBuilder::empty(true)
                .project(vec![e])
                .unwrap()
                .build()
                .unwrap()
        };
        check_plan_values(&plan(lit("x".repeat(1000)))).unwrap();
        let err = check_plan_values(&plan(lit("x".repeat(100_000))))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a literal of 100.0 KB is over the limit of 65.5 KB"),
            "{err}"
        );
        let huge = DataType::FixedSizeBinary(1 << 30);
        let err = check_plan_values(&plan(Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(lit(ScalarValue::Null)),
            huge,
        ))))
        .unwrap_err()
        .to_string();
        assert!(err.contains("FixedSizeBinary(1073741824)"), "{err}");
    }
}
