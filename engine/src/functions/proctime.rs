//! `PROCTIME()`: processing time as a column, as Flink's processing-time
//! attribute (Nexmark q12 windows over it). In a streaming query it is the
//! micro-batch's processing time from the query's clock (the same instant
//! `now()` gives in that batch, see [`super::batch_time`]), so every row of
//! a batch has the same one and tests drive it with the manual clock. In a
//! batch query it is the wall-clock time. It is a `TIMESTAMP` (UTC, without
//! time zone), so `window(PROCTIME(), ...)` groups by it.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use super::batch_time::BatchTime;

/// The name of the function.
pub const NAME: &str = "proctime";

/// `PROCTIME()`, unbound (wall clock) or bound to a query's batch time.
#[derive(Debug)]
pub struct ProcTime {
    time: Option<Arc<BatchTime>>,
    signature: Signature,
}

impl PartialEq for ProcTime {
    fn eq(&self, other: &Self) -> bool {
        match (&self.time, &other.time) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for ProcTime {}

impl std::hash::Hash for ProcTime {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.time.as_ref().map(|t| Arc::as_ptr(t) as usize).hash(state)
    }
}

impl ProcTime {
    /// The function reading `time` (`None`: the wall clock).
    pub fn udf(time: Option<Arc<BatchTime>>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self { time, signature: Signature::nullary(Volatility::Volatile) })
    }
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ms = match &self.time {
            Some(t) => t.millis(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(Some(ms.saturating_mul(1000)), None)))
    }
}
