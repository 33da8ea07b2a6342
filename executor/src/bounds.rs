//! What one function call may build. A SQL function whose output size the
//! query picks (`repeat(s, n)`, `lpad(s, n)`, `array_repeat(v, n)`, `range(a, b)`,
//! `replace(s, '', t)`, ...) would otherwise allocate whatever it is asked for,
//! and an allocation that fails aborts the whole process: the server's, when it
//! folds constants while planning or runs tasks in-process.
//!
//! # What belongs here
//! [`bounded_functions`]: every scalar function wrapped so that, before it is
//! called, the bytes it would build are estimated from its arguments (per value
//! and per batch, a scalar result counted once per row, as it will be
//! materialised) and refused over the caps, and after it returns, what it did
//! build is measured against the same caps. The caps are constants of the
//! server and the executors ([`ValueCaps`]): nothing in a query or a task spec
//! raises them. A refusal is an execution error naming the function, the size
//! and the cap; it is never "out of memory" (a larger pool would not help).
//!
//! How an estimate is made ([`Rule`]): most functions build at most a few times
//! what they are given, so they are measured after the call; those that
//! multiply an argument by a count or by another argument have a rule of their
//! own, applied before the call. Functions DataFusion recognises by their type
//! (`get_field`, `struct`, `log`, ...) are left as they are: their output is
//! bounded by their inputs, and a wrapper would hide them from those rewrites.
//!
//! While planning (constant folding), the caps are [`ValueCaps::FOLDING`]: a
//! value larger than that is not folded into the plan (DataFusion keeps an
//! expression whose evaluation fails), and is built by the executors under
//! their own caps, once per row, where the per-batch cap sees it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalUnit, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};

/// Largest value one function call may build in an executor.
pub const MAX_VALUE_BYTES: u64 = 64 << 20;
/// Largest output of one function call over one batch in an executor.
pub const MAX_BATCH_BYTES: u64 = 256 << 20;
/// Largest value constant folding puts into a plan (it is copied into every
/// task's plan, and a projection repeats it once per row).
pub const MAX_FOLDED_BYTES: u64 = 64 << 10;
/// Most steps a quadratic function (`levenshtein`) may take over one batch.
pub const MAX_BATCH_WORK: u64 = 1 << 32;

/// The caps a wrapped function is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueCaps {
    /// Bytes of one value.
    pub value_bytes: u64,
    /// Bytes of one call's output over a batch.
    pub batch_bytes: u64,
}

impl ValueCaps {
    /// In an executor, running a task.
    pub const EXECUTION: Self = Self {
        value_bytes: MAX_VALUE_BYTES,
        batch_bytes: MAX_BATCH_BYTES,
    };
    /// While planning: what constant folding may put into a plan.
    pub const FOLDING: Self = Self {
        value_bytes: MAX_FOLDED_BYTES,
        batch_bytes: MAX_FOLDED_BYTES,
    };
}

/// Asked before every call while planning: refuses once the planning has run
/// out of time or was abandoned; told of a call that could not succeed even
/// in an executor (a value over [`ValueCaps::EXECUTION`] from constant
/// arguments), so planning refuses the query instead of sending it to fail.
pub trait CallBudget: std::fmt::Debug + Send + Sync {
    fn check(&self) -> Result<()>;
    fn hopeless(&self, refusal: &DataFusionError);
}

/// `functions`, each wrapped to stay within `caps` (see the module doc);
/// `budget`, if given, is asked before every call.
pub fn bounded_functions(
    functions: Vec<Arc<ScalarUDF>>,
    caps: ValueCaps,
    budget: Option<Arc<dyn CallBudget>>,
) -> Vec<Arc<ScalarUDF>> {
    functions
        .into_iter()
        .map(|function| match Rule::of(function.name()) {
            None => function,
            Some(rule) => Arc::new(ScalarUDF::new_from_impl(Bounded {
                inner: function,
                rule,
                caps,
                budget: budget.clone(),
            })),
        })
        .collect()
}

/// DataFusion's built-in scalar functions, bounded as [`bounded_functions`] says.
pub fn bounded_defaults(
    caps: ValueCaps,
    budget: Option<Arc<dyn CallBudget>>,
) -> Vec<Arc<ScalarUDF>> {
    bounded_functions(
        datafusion::execution::SessionStateDefaults::default_scalar_functions(),
        caps,
        budget,
    )
}

/// How a function's output is estimated before it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// At most a few times its inputs: measured after the call.
    Inputs,
    /// `repeat(s, n)`: `s` × `n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters of up to 4 bytes.
    Pad,
    /// `array_repeat(v, n)`: `v` × `n`.
    ArrayRepeat,
    /// `array_resize(a, n [, v])`: `n` elements.
    ArrayResize,
    /// `range(a, b [, step])`, `generate_series`: one element per step.
    Range,
    /// `replace(s, from, to)`: `to` for every `from` in `s` (every character
    /// when `from` is empty).
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: a pattern can match
    /// at every position, and a replacement can repeat what it matched.
    RegexpReplace,
    /// `array_replace*(a, from, to [, n])`: `to` for every element of `a`.
    ArrayReplace,
    /// `array_to_string(a, sep [, null])`: every element as text, separated.
    ArrayToString,
    /// `string_to_array(s, delimiter [, null])`: up to one element per byte.
    StringToArray,
    /// `levenshtein(a, b)`: a small output after `a` × `b` steps.
    Levenshtein,
}

impl Rule {
    /// The rule for the function named `name`; None: the function is not
    /// wrapped (DataFusion recognises it by type, and it builds no more than
    /// its inputs).
    pub fn of(name: &str) -> Option<Rule> {
        Some(match name {
            // Downcast by DataFusion's rewrites (GetFieldFunc, NamedStructFunc,
            // StructFunc, LogFunc, PowerFunc, InputFileNameFunc,
            // FileRowIndexFunc): left as they are.
            "get_field" | "named_struct" | "struct" | "log" | "power" | "input_file_name"
            | "file_row_index" => return None,
            "repeat" => Rule::Repeat,
            "lpad" | "rpad" => Rule::Pad,
            "array_repeat" => Rule::ArrayRepeat,
            "array_resize" => Rule::ArrayResize,
            "range" | "generate_series" => Rule::Range,
            "replace" => Rule::Replace,
            "regexp_replace" => Rule::RegexpReplace,
            "array_replace" | "array_replace_n" | "array_replace_all" => Rule::ArrayReplace,
            "array_to_string" => Rule::ArrayToString,
            "string_to_array" => Rule::StringToArray,
            "levenshtein" => Rule::Levenshtein,
            _ => Rule::Inputs,
        })
    }
}

/// A function held to caps.
#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    rule: Rule,
    caps: ValueCaps,
    budget: Option<Arc<dyn CallBudget>>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
            && self.rule == other.rule
            && self.caps == other.caps
            && match (&self.budget, &other.budget) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.rule.hash(state);
        self.caps.hash(state);
    }
}

/// What a call would build (or built).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Size {
    /// The largest value.
    value: u64,
    /// All values of the batch.
    total: u64,
    /// Steps of a quadratic function.
    work: u64,
}

impl Bounded {
    /// The wrapped function's implementation.
    fn function(&self) -> &dyn ScalarUDFImpl {
        self.inner.inner().as_ref()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Refuses `size` over the caps, naming the function.
    fn check(&self, size: Size, would: &str) -> Result<()> {
        let name = self.name();
        let refuse = |what: String| {
            Err(DataFusionError::Execution(format!(
                "{name} {what} (a bound of this server that queries cannot raise)"
            )))
        };
        if size.value > self.caps.value_bytes {
            return refuse(format!(
                "{would} a value of {}, over the limit of {} per value",
                human_bytes(size.value),
                human_bytes(self.caps.value_bytes)
            ));
        }
        if size.total > self.caps.batch_bytes {
            return refuse(format!(
                "{would} {} for one batch, over the limit of {} per batch",
                human_bytes(size.total),
                human_bytes(self.caps.batch_bytes)
            ));
        }
        if size.work > MAX_BATCH_WORK {
            return refuse(format!(
                "would take {} steps for one batch, over the limit of {MAX_BATCH_WORK}",
                size.work
            ));
        }
        Ok(())
    }
}

// Every method delegates to the wrapped function but `invoke_with_args`.
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    #[allow(deprecated)]
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        self.function().display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.function().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.function().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.function().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.function().return_field_from_args(args)
    }

    #[allow(deprecated)]
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        self.function().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.function().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(budget) = &self.budget {
            budget.check()?;
        }
        let rows = args.number_rows;
        let fixed = fixed_width(args.return_field.data_type());
        if let Some(width) = fixed {
            let size = Size {
                value: width,
                total: width.saturating_mul(rows.max(1) as u64),
                work: 0,
            };
            self.check(size, "would build")?;
        }
        let estimated = estimate(self.rule, &args.args, rows)?;
        if let Err(refusal) = self.check(estimated, "would build") {
            if let Some(budget) = &self.budget
                && (estimated.value > MAX_VALUE_BYTES || estimated.work > MAX_BATCH_WORK)
            {
                budget.hopeless(&refusal);
            }
            return Err(refusal);
        }
        let output = self.inner.invoke_with_args(args)?;
        if fixed.is_none() {
            self.check(measure(&output, rows)?, "built")?;
        }
        Ok(output)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.function().with_updated_config(config).map(|inner| {
            ScalarUDF::new_from_impl(Bounded {
                inner: Arc::new(inner),
                rule: self.rule,
                caps: self.caps,
                budget: self.budget.clone(),
            })
        })
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.function().simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.function().preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.function().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.function().short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.function().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.function().propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.function().struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.function().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.function().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.function().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.function().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.function().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.function().placement(args)
    }
}

/// Bytes of one value of `data_type`, when every value has the same size.
pub fn fixed_width(data_type: &DataType) -> Option<u64> {
    match data_type {
        DataType::Null => Some(0),
        DataType::Boolean => Some(1),
        DataType::FixedSizeBinary(n) => Some((*n).max(0) as u64),
        DataType::FixedSizeList(field, n) => {
            fixed_width(field.data_type()).map(|w| w.saturating_mul((*n).max(0) as u64))
        }
        DataType::Struct(fields) => fields
            .iter()
            .map(|f| fixed_width(f.data_type()))
            .try_fold(0u64, |sum, w| w.map(|w| sum.saturating_add(w))),
        other => other.primitive_width().map(|w| w as u64),
    }
}

/// One number per row of an argument: the same for every row, or each its own.
enum PerRow {
    Same(u64),
    Each(Vec<u64>),
}

impl PerRow {
    fn get(&self, row: usize) -> u64 {
        match self {
            PerRow::Same(v) => *v,
            PerRow::Each(values) => values.get(row).copied().unwrap_or(0),
        }
    }
}

/// Bytes of each row of `arg`.
fn bytes(arg: Option<&ColumnarValue>) -> Result<PerRow> {
    Ok(match arg {
        None => PerRow::Same(0),
        Some(ColumnarValue::Scalar(value)) => PerRow::Same(scalar_bytes(value)?),
        Some(ColumnarValue::Array(array)) => PerRow::Each(row_bytes(array)?),
    })
}

/// A count argument (a length, a number of repetitions) per row; null and
/// negative counts are 0.
fn counts(arg: Option<&ColumnarValue>) -> Result<PerRow> {
    let clamp = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    Ok(match arg {
        None => PerRow::Same(0),
        Some(ColumnarValue::Scalar(value)) => {
            PerRow::Same(clamp(integer(value.cast_to(&DataType::Int64)?)))
        }
        Some(ColumnarValue::Array(array)) => {
            let ints = arrow::compute::cast(array, &DataType::Int64)?;
            let ints = ints.as_primitive::<Int64Type>();
            PerRow::Each(ints.iter().map(clamp).collect())
        }
    })
}

fn integer(value: ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::Int64(v) => v,
        _ => None,
    }
}

/// Bytes a scalar holds, as one value.
pub fn scalar_bytes(value: &ScalarValue) -> Result<u64> {
    if value.is_null() {
        return Ok(0);
    }
    Ok(match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.len() as u64,
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => b.len() as u64,
        other => {
            let array = other.to_array_of_size(1)?;
            array.to_data().get_slice_memory_size()? as u64
        }
    })
}

/// Bytes of each row of `array` (its own values; offsets and nulls aside).
fn row_bytes(array: &ArrayRef) -> Result<Vec<u64>> {
    let len = array.len();
    fn from_offsets<O: Copy + Into<i64>>(offsets: &[O]) -> Vec<u64> {
        offsets
            .windows(2)
            .map(|w| (w[1].into() - w[0].into()).max(0) as u64)
            .collect()
    }
    Ok(match array.data_type() {
        DataType::Utf8 => from_offsets(array.as_string::<i32>().value_offsets()),
        DataType::Binary => from_offsets(array.as_binary::<i32>().value_offsets()),
        DataType::LargeUtf8 => from_offsets(array.as_string::<i64>().value_offsets()),
        DataType::LargeBinary => from_offsets(array.as_binary::<i64>().value_offsets()),
        DataType::Utf8View => {
            let views = array.as_string_view();
            (0..len).map(|i| views.value(i).len() as u64).collect()
        }
        DataType::BinaryView => {
            let views = array.as_binary_view();
            (0..len).map(|i| views.value(i).len() as u64).collect()
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            list_rows(list.value_offsets(), list.values())?
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            list_rows(list.value_offsets(), list.values())?
        }
        _ => {
            let average = match len {
                0 => 0,
                n => array.to_data().get_slice_memory_size()? as u64 / n as u64,
            };
            vec![average; len]
        }
    })
}

/// Bytes of each list of a list array: its elements' bytes.
fn list_rows<O: Copy + Into<i64>>(offsets: &[O], values: &ArrayRef) -> Result<Vec<u64>> {
    let elements = row_bytes(values)?;
    let mut prefix = Vec::with_capacity(elements.len() + 1);
    prefix.push(0u64);
    for e in &elements {
        prefix.push(prefix.last().copied().unwrap_or(0).saturating_add(*e));
    }
    let at = |o: i64| prefix.get(o.max(0) as usize).copied().unwrap_or(0);
    Ok(offsets
        .windows(2)
        .map(|w| {
            let (from, to) = (w[0].into(), w[1].into());
            let count = (to - from).max(0) as u64;
            at(to).saturating_sub(at(from)).saturating_add(count * 4)
        })
        .collect())
}

/// What `rule` says a call over `args` (`rows` rows) would build.
fn estimate(rule: Rule, args: &[ColumnarValue], rows: usize) -> Result<Size> {
    let arg = |i: usize| args.get(i);
    let per_row = |value: &dyn Fn(usize) -> (u64, u64)| {
        let mut size = Size::default();
        for row in 0..rows.max(1) {
            let (bytes, work) = value(row);
            size.value = size.value.max(bytes);
            size.total = size.total.saturating_add(bytes);
            size.work = size.work.saturating_add(work);
        }
        size
    };
    let times = |a: u64, b: u64| a.saturating_mul(b);
    Ok(match rule {
        Rule::Inputs => Size::default(),
        Rule::Repeat => {
            let (s, n) = (bytes(arg(0))?, counts(arg(1))?);
            per_row(&|r| (times(s.get(r), n.get(r)), 0))
        }
        Rule::Pad => {
            let n = counts(arg(1))?;
            per_row(&|r| (times(n.get(r), 4), 0))
        }
        Rule::ArrayRepeat => {
            let (v, n) = (bytes(arg(0))?, counts(arg(1))?);
            per_row(&|r| (times(v.get(r).saturating_add(4), n.get(r)), 0))
        }
        Rule::ArrayResize => {
            let (a, n, v) = (bytes(arg(0))?, counts(arg(1))?, bytes(arg(2))?);
            per_row(&|r| {
                let element = v.get(r).max(8).saturating_add(4);
                (a.get(r).saturating_add(times(n.get(r), element)), 0)
            })
        }
        Rule::Range => {
            let n = range_lengths(args)?;
            per_row(&|r| (times(n.get(r), 16), 0))
        }
        Rule::Replace => {
            let (s, from, to) = (bytes(arg(0))?, bytes(arg(1))?, bytes(arg(2))?);
            per_row(&|r| {
                let hits = s.get(r) / from.get(r).max(1) + 1;
                (s.get(r).saturating_add(times(hits, to.get(r))), 0)
            })
        }
        Rule::RegexpReplace => {
            let (s, replacement) = (bytes(arg(0))?, bytes(arg(2))?);
            per_row(&|r| (times(2, times(s.get(r) + 1, replacement.get(r) + 1)), 0))
        }
        Rule::ArrayReplace => {
            let (a, to) = (bytes(arg(0))?, bytes(arg(2))?);
            per_row(&|r| (times(a.get(r) + 1, to.get(r) + 1), 0))
        }
        Rule::ArrayToString => {
            let (a, sep, null) = (bytes(arg(0))?, bytes(arg(1))?, bytes(arg(2))?);
            per_row(&|r| {
                let each = sep.get(r).saturating_add(null.get(r)).saturating_add(3);
                (times(a.get(r) + 1, each), 0)
            })
        }
        Rule::StringToArray => {
            let s = bytes(arg(0))?;
            per_row(&|r| (times(s.get(r) + 1, 17), 0))
        }
        Rule::Levenshtein => {
            let (a, b) = (bytes(arg(0))?, bytes(arg(1))?);
            per_row(&|r| (8, times(a.get(r) + 1, b.get(r) + 1)))
        }
    })
}

/// Elements of each row's `range`/`generate_series`: `(stop - start) / step`
/// in the arguments' own unit (days for dates, the timestamp's unit, an
/// interval step in its shortest length: a month as 28 days).
fn range_lengths(args: &[ColumnarValue]) -> Result<PerRow> {
    let unit = |dt: &DataType| -> Option<i64> {
        // Nanoseconds per unit of a start or stop of this type.
        match dt {
            DataType::Date32 => Some(86_400_000_000_000),
            DataType::Date64 | DataType::Timestamp(TimeUnit::Millisecond, _) => Some(1_000_000),
            DataType::Timestamp(TimeUnit::Second, _) => Some(1_000_000_000),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Some(1_000),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => Some(1),
            _ => None,
        }
    };
    let (start, stop, step) = match args {
        [stop] => (None, stop, None),
        [start, stop] => (Some(start), stop, None),
        [start, stop, step, ..] => (Some(start), stop, Some(step)),
        [] => return Ok(PerRow::Same(0)),
    };
    let nanos = unit(&stop.data_type());
    let as_ints = |v: &ColumnarValue| -> Result<ColumnarValue> {
        Ok(match v {
            ColumnarValue::Scalar(s) => ColumnarValue::Scalar(match nanos {
                Some(_) => s.cast_to(&DataType::Int64).or_else(|_| {
                    ScalarValue::try_from_array(
                        &arrow::compute::cast(&s.to_array()?, &DataType::Int64)?,
                        0,
                    )
                })?,
                None => s.cast_to(&DataType::Int64)?,
            }),
            ColumnarValue::Array(a) => {
                ColumnarValue::Array(arrow::compute::cast(a, &DataType::Int64)?)
            }
        })
    };
    let signed = |v: &ColumnarValue| -> Result<Vec<Option<i64>>> {
        Ok(match as_ints(v)? {
            ColumnarValue::Scalar(s) => vec![integer(s)],
            ColumnarValue::Array(a) => a.as_primitive::<Int64Type>().iter().collect(),
        })
    };
    let stops = signed(stop)?;
    let starts = match start {
        Some(s) => signed(s)?,
        None => vec![Some(0)],
    };
    let steps: Vec<Option<i64>> = match step {
        None => vec![Some(1)],
        Some(step) => match step.data_type() {
            DataType::Interval(_) => interval_steps(step, nanos.unwrap_or(1))?,
            _ => signed(step)?,
        },
    };
    let rows = stops.len().max(starts.len()).max(steps.len());
    let pick = |v: &[Option<i64>], r: usize| {
        if v.len() == 1 {
            v[0]
        } else {
            v.get(r).copied().flatten()
        }
    };
    let lengths = (0..rows)
        .map(
            |r| match (pick(&starts, r), pick(&stops, r), pick(&steps, r)) {
                (Some(a), Some(b), Some(step)) if step != 0 => {
                    let span = (b as i128 - a as i128).unsigned_abs();
                    (span / step.unsigned_abs() as u128 + 1).min(u64::MAX as u128) as u64
                }
                _ => 0,
            },
        )
        .collect::<Vec<_>>();
    Ok(
        if lengths.len() == 1
            && rows == 1
            && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            PerRow::Same(lengths[0])
        } else {
            PerRow::Each(lengths)
        },
    )
}

/// An interval step in units of `unit_nanos` nanoseconds, at its shortest (a
/// month as 28 days), at least 1.
fn interval_steps(step: &ColumnarValue, unit_nanos: i64) -> Result<Vec<Option<i64>>> {
    let array = step.to_array(1)?;
    let array = arrow::compute::cast(&array, &DataType::Interval(IntervalUnit::MonthDayNano))?;
    let values = array.as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>();
    const DAY: i128 = 86_400_000_000_000;
    Ok(values
        .iter()
        .map(|v| {
            v.map(|v| {
                let nanos =
                    (v.months as i128 * 28 * DAY + v.days as i128 * DAY + v.nanoseconds as i128)
                        .abs();
                let units = nanos / unit_nanos.max(1) as i128;
                units.clamp(1, i64::MAX as i128) as i64
            })
        })
        .collect())
}

/// What a call built: its largest value and its bytes over the batch (a
/// scalar once per row, as it will be materialised).
fn measure(output: &ColumnarValue, rows: usize) -> Result<Size> {
    Ok(match output {
        ColumnarValue::Scalar(value) => {
            let bytes = scalar_bytes(value)?;
            Size {
                value: bytes,
                total: bytes.saturating_mul(rows.max(1) as u64),
                work: 0,
            }
        }
        ColumnarValue::Array(array) => Size {
            value: row_bytes(array)?.into_iter().max().unwrap_or(0),
            total: array.to_data().get_slice_memory_size()? as u64,
            work: 0,
        },
    })
}

/// `1234567` → `1.2 MB` (decimal units, as object stores bill).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// A session whose functions are bounded by `caps`.
    fn session(caps: ValueCaps) -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_scalar_functions(bounded_defaults(caps, None))
            .build();
        SessionContext::new_with_state(state)
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    async fn refused(ctx: &SessionContext, sql: &str, needle: &str) {
        let err = run(ctx, sql).await.expect_err(sql).to_string();
        assert!(err.contains(needle), "{sql}: {err}");
        assert!(err.contains("cannot raise"), "{sql}: {err}");
    }

    #[tokio::test]
    async fn functions_sized_by_the_query_are_refused_before_they_allocate() {
        let ctx = session(ValueCaps::EXECUTION);
        // Each would abort the process if it ran: 10^15 bytes and more.
        for (sql, needle) in [
            (
                "SELECT length(repeat(arrow_cast('x', 'LargeUtf8'), 1000000000000000))",
                "repeat would build a value of 1.0 PB",
            ),
            (
                "SELECT lpad('x', 2000000000)",
                "lpad would build a value of 8.0 GB",
            ),
            ("SELECT rpad('x', 2000000000, 'yz')", "rpad would build"),
            (
                "SELECT array_repeat(1, 4000000000)",
                "array_repeat would build",
            ),
            (
                "SELECT cardinality(range(1, 10000000000))",
                "range would build",
            ),
            (
                "SELECT cardinality(generate_series(1, 10000000000, 1))",
                "generate_series would build",
            ),
            (
                "SELECT cardinality(range(DATE '2000-01-01', DATE '9999-01-01', INTERVAL '1 day') ) + \
                 cardinality(range(TIMESTAMP '2000-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 nanosecond'))",
                "range would build",
            ),
            (
                "SELECT array_resize([1], 3000000000, 7)",
                "array_resize would build",
            ),
            (
                "SELECT replace(repeat('x', 10000000), '', repeat('y', 100))",
                "replace would build",
            ),
            (
                "SELECT regexp_replace(repeat('x', 1000000), '', repeat('y', 1000), 'g')",
                "regexp_replace would build",
            ),
            (
                "SELECT array_to_string(range(1, 1000000), repeat(',', 1000))",
                "array_to_string would build",
            ),
            (
                "SELECT levenshtein(repeat('a', 1000000), repeat('b', 1000000))",
                "levenshtein would take",
            ),
        ] {
            refused(&ctx, sql, needle).await;
        }
        // Within the caps, the same functions answer as before.
        let batches = run(
            &ctx,
            "SELECT length(repeat('ab', 1000)) AS a, cardinality(range(1, 1001)) AS b, \
             length(lpad('x', 5, '-')) AS c, levenshtein('kitten', 'sitting') AS d",
        )
        .await
        .unwrap();
        let shown = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(shown.contains("| 2000 | 1000 | 5 | 3 |"), "{shown}");
    }

    #[tokio::test]
    async fn a_value_repeated_for_every_row_counts_once_per_row() {
        let ctx = session(ValueCaps::EXECUTION);
        // 100 KB per row, fine alone; times 8192 rows of one batch it is 819 MB.
        let sql = "SELECT length(repeat(CAST(value % 2 AS VARCHAR), 100000)) \
                   FROM generate_series(1, 20000)";
        refused(&ctx, sql, "repeat would build 819.2 MB for one batch").await;
        // A scalar result is counted once per row: a projection repeats it so.
        let scalar = ColumnarValue::Scalar(ScalarValue::Utf8(Some("x".repeat(100_000))));
        let size = measure(&scalar, 8192).unwrap();
        assert_eq!((size.value, size.total), (100_000, 819_200_000));
        // Doubling a column step by step is stopped at the step that passes a cap.
        let sql = "WITH a AS (SELECT repeat(CAST(value AS VARCHAR), 2000000) AS s FROM generate_series(1, 2)), \
                   b AS (SELECT s || s || s || s || s || s || s || s AS s FROM a), \
                   c AS (SELECT concat(s, s, s, s, s, s, s, s) AS s FROM b) \
                   SELECT length(s) FROM c";
        refused(&ctx, sql, "concat built a value of").await;
    }

    #[tokio::test]
    async fn folding_leaves_large_values_to_the_executors() {
        let ctx = session(ValueCaps::FOLDING);
        let plan = ctx
            .sql("SELECT repeat('x', 100000) AS big, repeat('y', 10) AS small")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let shown = plan.display_indent().to_string();
        assert!(
            shown.contains("repeat(Utf8(\"x\"), Int64(100000))"),
            "{shown}"
        );
        assert!(shown.contains("Utf8(\"yyyyyyyyyy\")"), "{shown}");
    }

    #[test]
    fn functions_datafusion_recognises_by_type_stay_unwrapped() {
        let functions = bounded_defaults(ValueCaps::EXECUTION, None);
        let get_field = functions.iter().find(|f| f.name() == "get_field").unwrap();
        assert!(
            get_field
                .inner()
                .is::<datafusion::functions::core::getfield::GetFieldFunc>()
        );
        let repeat = functions.iter().find(|f| f.name() == "repeat").unwrap();
        assert!(repeat.inner().is::<Bounded>());
        assert_eq!(
            fixed_width(&DataType::FixedSizeBinary(1 << 30)),
            Some(1 << 30)
        );
        assert_eq!(fixed_width(&DataType::Utf8), None);
        assert_eq!(human_bytes(67_108_864), "67.1 MB");
    }
}
