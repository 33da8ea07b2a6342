//! What an ad-hoc SQL session is given (`squall sql`): text of one or more
//! statements.
//!
//! # What belongs here
//! Splitting the text into statements (on `;`, as the SQL parser reads it),
//! telling `EXPLAIN` and `EXPLAIN ANALYZE` apart from queries, and turning a
//! table named by a quoted URL or path in `FROM` (`FROM 's3://lake/t/'`)
//! into a table of its own. Whether a statement may run is the planner's
//! (`parse_checked`), as for any job.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart, visit_relations_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Result, SquallError};
use crate::tables::TableSpec;

/// One statement of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// A query, to run.
    Query(String),
    /// `EXPLAIN query` (its stage plan) or `EXPLAIN ANALYZE query` (run it,
    /// and show each stage and operator as it ran).
    Explain { analyze: bool, query: String },
}

/// The statements of `text`, in order.
pub fn statements(text: &str) -> Result<Vec<Statement>> {
    let parsed = DFParser::parse_sql_with_dialect(text, &GenericDialect {})
        .map_err(SquallError::from_planning)?;
    Ok(parsed
        .into_iter()
        .map(|statement| match statement {
            DfStatement::Explain(explain) => Statement::Explain {
                analyze: explain.options.analyze,
                query: explain.statement.to_string(),
            },
            other => Statement::Query(other.to_string()),
        })
        .collect())
}

/// The names of the tables `sql` reads (one-part names; lower case unless
/// quoted), each once.
pub fn referenced_tables(sql: &str) -> Result<Vec<String>> {
    let mut parsed = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| SquallError::InvalidArgument(format!("SQL: {e}")))?;
    let mut names: Vec<String> = Vec::new();
    let _ = visit_relations_mut(&mut parsed, |name: &mut ObjectName| {
        if let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() {
            let value = match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_ascii_lowercase(),
            };
            if !names.contains(&value) {
                names.push(value);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(names)
}

/// Most tables one query may name by URL.
const MAX_URL_TABLES: usize = 64;

/// `sql` with each table it names by a quoted URL or path (`FROM
/// 's3://lake/t/'`, `FROM "data/t.parquet"`) named `url_table_N` instead,
/// and those tables. A name of `known` stays as it is.
pub fn url_tables(sql: &str, known: &[TableSpec]) -> Result<(String, Vec<TableSpec>)> {
    let mut parsed = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| SquallError::InvalidArgument(format!("SQL: {e}")))?;
    let mut found: Vec<TableSpec> = Vec::new();
    let _ = visit_relations_mut(&mut parsed, |name: &mut ObjectName| {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return ControlFlow::<()>::Continue(());
        };
        let location = ident.value.clone();
        let quoted = ident.quote_style.is_some();
        let is_known = known.iter().any(|t| t.name.eq_ignore_ascii_case(&location));
        if !quoted || is_known || !(location.contains('/') || location.contains('.')) {
            return ControlFlow::Continue(());
        }
        let existing = found.iter().position(|t| t.url == location);
        let index = existing.unwrap_or_else(|| {
            let table = format!("url_table_{}", found.len() + 1);
            found.push(TableSpec::new(table, location.clone()));
            found.len() - 1
        });
        *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
            found[index].name.clone(),
        ))]);
        ControlFlow::Continue(())
    });
    if found.len() > MAX_URL_TABLES {
        return Err(SquallError::InvalidArgument(format!(
            "the query names {} tables by URL, over the limit of {MAX_URL_TABLES}",
            found.len()
        )));
    }
    if found.is_empty() {
        return Ok((sql.to_string(), found));
    }
    let rewritten: Vec<String> = parsed.iter().map(|s| s.to_string()).collect();
    Ok((rewritten.join(";\n"), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_tells_explain_apart() {
        let got = statements(
            "SELECT 1; explain select a from t;\nEXPLAIN ANALYZE SELECT count(*) FROM t",
        )
        .unwrap();
        assert_eq!(got[0], Statement::Query("SELECT 1".into()));
        assert!(
            matches!(&got[1], Statement::Explain { analyze: false, query } if query == "SELECT a FROM t")
        );
        assert!(matches!(&got[2], Statement::Explain { analyze: true, .. }));
        assert!(statements("SELEC 1").is_err());
        assert!(statements("").unwrap().is_empty());
    }

    #[test]
    fn quoted_urls_in_from_become_tables() {
        let (sql, tables) = url_tables(
            "SELECT count(*) FROM 's3://lake/events/' e JOIN \"data/d.parquet\" d ON e.k = d.k \
             JOIN 's3://lake/events/' f ON f.k = e.k JOIN plain ON plain.k = e.k",
            &[],
        )
        .unwrap();
        assert_eq!(tables.len(), 2, "{tables:?}");
        assert_eq!(tables[0].url, "s3://lake/events/");
        assert_eq!(tables[1].url, "data/d.parquet");
        assert!(sql.contains("FROM url_table_1 e"), "{sql}");
        assert!(sql.contains("JOIN url_table_2 d"), "{sql}");
        assert!(sql.contains("JOIN url_table_1 f"), "{sql}");
        assert!(sql.contains("JOIN plain"), "{sql}");
        // Nothing by URL: the text as it was.
        let (same, none) = url_tables("select * from t", &[]).unwrap();
        assert_eq!((same.as_str(), none.len()), ("select * from t", 0));
        let names = referenced_tables(
            "SELECT * FROM Orders o JOIN lineitem l ON 1=1 WHERE \
             o.k IN (SELECT k FROM \"Nation\") AND EXISTS (SELECT 1 FROM orders)",
        )
        .unwrap();
        assert_eq!(names, ["orders", "lineitem", "Nation"]);
        // A given table of that name stays.
        let known = [TableSpec::new("my.table", "x/")];
        let (_, none) = url_tables("select * from \"my.table\"", &known).unwrap();
        assert!(none.is_empty());
    }
}
