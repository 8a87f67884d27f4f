//! `now()` / `current_timestamp` (and `PROCTIME()`) in a streaming query: the processing time
//! of the micro-batch (Spark's semantics), from the query's clock, not the
//! time the query was planned. Each query gets its own instance, bound to a
//! cell the executor sets before each batch; it is volatile, so DataFusion
//! does not fold it into a constant at planning time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The batch time of one query, in ms since the epoch.
#[derive(Debug, Default)]
pub struct BatchTime(AtomicI64);

impl BatchTime {
    /// Set the time of the batch about to run.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// The time of the batch running.
    pub fn millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct BatchNow {
    time: Arc<BatchTime>,
    signature: Signature,
}

impl PartialEq for BatchNow {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.time, &other.time)
    }
}
impl Eq for BatchNow {}
impl std::hash::Hash for BatchNow {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.time) as usize).hash(state)
    }
}

fn tz() -> Option<Arc<str>> {
    Some("+00:00".into())
}

impl ScalarUDFImpl for BatchNow {
    fn name(&self) -> &str {
        "now"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, tz()))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ns = self.time.0.load(Ordering::SeqCst).saturating_mul(1_000_000);
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(Some(ns), tz())))
    }
}

/// Replace `now()` / `current_timestamp` in `plan` by the batch time of
/// `time`.
pub fn bind_batch_time(plan: LogicalPlan, time: &Arc<BatchTime>) -> Result<LogicalPlan> {
    let udf = Arc::new(ScalarUDF::new_from_impl(BatchNow {
        time: Arc::clone(time),
        signature: Signature::nullary(Volatility::Volatile),
    }));
    let proctime = Arc::new(super::proctime::ProcTime::udf(Some(Arc::clone(time))));
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform(|e| match &e {
                Expr::ScalarFunction(f) if matches!(f.name(), "now" | "current_timestamp") && f.args.is_empty() => {
                    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(&udf), vec![]))))
                }
                Expr::ScalarFunction(f) if f.name() == super::proctime::NAME && f.args.is_empty() => {
                    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(&proctime), vec![]))))
                }
                _ => Ok(Transformed::no(e)),
            })
        })
    })
    .map(|t| t.data)
}
