//! Which grouping keys of a streaming aggregation carry event time or a
//! session window.

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::Aggregate;

use super::analyze;
use crate::stateful::SessionColumns;

/// The grouping key that carries event time: a window struct or a
/// `window_end` column if there is one (a window closes at its end), else the
/// first key derived from a watermarked column.
pub(super) fn event_time_group(agg: &Aggregate) -> Option<usize> {
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
            fields.get(*i).is_some_and(|f| {
                matches!(f.data_type(), DataType::Struct(_)) || f.name() == "window_end"
            })
        })
        .or_else(|| derived.first().copied())
}

/// The grouping keys holding a session window (computed by `sluice_session`).
pub(super) fn session_columns(agg: &Aggregate) -> Option<SessionColumns> {
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
