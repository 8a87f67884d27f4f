//! The live status lines of `sluice run` on a terminal: one indicatif line
//! per query with its batch, rates, watermark, state and last batch time.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice::StreamingQuery;

/// One status line per query, redrawn in place on stderr.
pub struct StatusLines {
    bars: Vec<ProgressBar>,
    _multi: MultiProgress,
}

impl StatusLines {
    /// Lines for `queries`.
    pub fn new(queries: &[StreamingQuery]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        let bars = queries
            .iter()
            .map(|q| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_message(status_text(q));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .collect();
        Self { bars, _multi: multi }
    }

    /// Redraw the line of query `i`; a query that ended keeps its last line.
    pub fn update(&self, i: usize, q: &StreamingQuery) {
        let Some(bar) = self.bars.get(i) else { return };
        if bar.is_finished() {
            return;
        }
        if q.is_active() {
            bar.set_message(status_text(q));
        } else {
            bar.finish_with_message(status_text(q));
        }
    }

    /// Print a line above the status lines.
    pub fn println(&self, line: &str) {
        match self.bars.first() {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// `name: batch 12 | 10,000 rows/s in, 12,000 rows/s processed | watermark ... | state 3 rows | last batch 8 ms | status`.
pub fn status_text(q: &StreamingQuery) -> String {
    let status = match q.exception() {
        Some(e) => format!("failed: {e}"),
        None => q.status().message,
    };
    let Some(p) = q.last_progress() else {
        return format!("{}: {status}", q.name());
    };
    let watermark = p
        .watermark_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
    let state: u64 = p.state_operators.iter().map(|s| s.num_rows_total).sum();
    format!(
        "{}: batch {} | {:.0} rows/s in, {:.0} rows/s processed | watermark {watermark} | state {state} rows | last batch {} ms | {status}",
        q.name(),
        p.batch_id,
        p.input_rows_per_second,
        p.processed_rows_per_second,
        p.duration_ms.get("total").copied().unwrap_or(0),
    )
}
