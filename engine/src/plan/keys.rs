//! Which grouping keys of a streaming aggregation carry event time or a
//! session window.

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Aggregate, Distinct, Expr};

use super::analyze;
use super::nodes::WithinWatermarkNode;
use crate::error::{Result, SluiceError};
use crate::stateful::{DedupSpec, SessionColumns};

/// Key and output columns of a `DISTINCT` / `DISTINCT ON` deduplication.
pub(crate) fn dedup_spec(d: &Distinct, event_time: Option<usize>) -> Result<DedupSpec> {
    let Distinct::On(on) = d else { return Ok(DedupSpec::default()) };
    if on.sort_expr.is_some() {
        return Err(SluiceError::unsupported(
            "DISTINCT ON ... ORDER BY is not supported on a stream: streaming deduplication keeps the first row seen \
             for each key; remove the ORDER BY",
        ));
    }
    let schema = on.input.schema();
    let index = |e: &Expr, what: &str| -> Result<usize> {
        match e {
            Expr::Column(c) => schema.index_of_column(c).map_err(SluiceError::from),
            other => Err(SluiceError::unsupported(format!(
                "DISTINCT ON on a stream takes plain columns in its {what} list, found {other}"
            ))),
        }
    };
    let keys = on.on_expr.iter().map(|e| index(e, "ON")).collect::<Result<Vec<_>>>()?;
    let outputs = on.select_expr.iter().map(|e| index(e, "select")).collect::<Result<Vec<_>>>()?;
    let within = WithinWatermarkNode::is(on.input.as_ref());
    let within_watermark_us = match (within, event_time) {
        (false, _) => None,
        (true, None) => {
            return Err(SluiceError::unsupported(
                "drop_duplicates_within_watermark needs a watermark on an event-time column of the stream",
            ))
        }
        (true, Some(index)) => {
            let name = schema.field(index).name();
            let delay = analyze::stream_sources(&on.input)
                .into_iter()
                .filter_map(|s| s.watermark)
                .find(|w| w.column.eq_ignore_ascii_case(name))
                .map(|w| w.delay.as_micros() as i64)
                .unwrap_or(0);
            Some(delay)
        }
    };
    Ok(DedupSpec { keys, outputs, within_watermark_us })
}

/// The grouping key that carries event time: a window struct or a
/// `window_end` column over a watermarked column if there is one (a window
/// closes at its end), else the watermarked column itself. As in Spark, a key
/// merely computed from it (`to_char(ts, ...)`, `date_trunc(...)`) is an
/// ordinary key: its groups never close and no row is late for it.
pub(crate) fn event_time_group(agg: &Aggregate) -> Option<usize> {
    let derived: Vec<usize> = agg
        .group_expr
        .iter()
        .enumerate()
        .filter(|(_, e)| analyze::expr_derives_from_watermark(&agg.input, e))
        .map(|(i, _)| i)
        .collect();
    let fields = agg.schema.fields();
    derived
        .iter()
        .copied()
        .find(|i| {
            fields.get(*i).is_some_and(|f| matches!(f.data_type(), DataType::Struct(_)) || f.name() == "window_end")
        })
        .or_else(|| agg.group_expr.iter().position(|e| analyze::expr_is_watermark_column(&agg.input, e)))
}

/// The grouping keys holding a session window (computed by `sluice_session`).
pub(crate) fn session_columns(agg: &Aggregate) -> Option<SessionColumns> {
    let fields = agg.schema.fields();
    let derived: Vec<usize> = agg
        .group_expr
        .iter()
        .enumerate()
        .filter(|(_, e)| analyze::expr_derives_from_function(&agg.input, e, crate::functions::window::SESSION))
        .map(|(i, _)| i)
        .collect();
    if let Some(i) = derived.iter().copied().find(|i| matches!(fields[*i].data_type(), DataType::Struct(_))) {
        return Some(SessionColumns::Struct(i));
    }
    let named = |n: &str| derived.iter().copied().find(|i| fields[*i].name() == n);
    Some(SessionColumns::Pair { start: named("window_start")?, end: named("window_end")? })
}
