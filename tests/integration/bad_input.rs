//! The bad-input catalogue (issue 9): one table of inputs a user may get
//! wrong, each with the words its error must contain (the thing at fault and
//! the fix). No entry may panic or be accepted. Creation-time errors fail
//! the statement; run-time ones (malformed rows, a vanished source) fail
//! the query's first trigger. Damaged checkpoints of every kind are in
//! `checkpoint_integrity`, changed queries in `query_change`, and the data a
//! fixed restart recovers in `connectors` and `reliability`.

use std::path::Path;
use std::sync::Arc;

use futures::FutureExt;
use sluice::{execute_sql, Environment, StatementResult};

/// One bad input: `setup` must succeed, `sql` must fail (at creation or at
/// its first trigger) with an error containing every `expect` word
/// (case-insensitive). `$DIR` is a fresh directory holding `in/` (CSV
/// `id,word` files with a header, one malformed), `json/`, `empty/`.
struct Case {
    name: &'static str,
    setup: &'static [&'static str],
    sql: &'static str,
    expect: &'static [&'static str],
}

const MEM: &str = "CREATE SOURCE ev (id BIGINT, word VARCHAR) WITH (connector = 'memory')";
const TIMED: &str = "CREATE SOURCE tev (ts TIMESTAMP, k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE) WITH (connector = 'memory')";
const CSV: &str = "CREATE SOURCE csv (id BIGINT, word VARCHAR) WITH (connector = 'files', path = '$DIR/in', format = 'csv', header = 'true', mode = 'failfast')";

macro_rules! case {
    ($name:literal, [$($setup:expr),*], $sql:literal, [$($word:literal),+]) => {
        Case { name: $name, setup: &[$($setup),*], sql: $sql, expect: &[$($word),+] }
    };
}

fn catalogue() -> Vec<Case> {
    #[allow(unused_mut)]
    let mut cases = vec![
        // --- Connectors and options at CREATE SOURCE ---
        case!("unknown source connector", [], "CREATE SOURCE x (a INT) WITH (connector = 'kafkaa')", ["unknown source connector 'kafkaa'", "valid connectors"]),
        case!("missing connector", [], "CREATE SOURCE x (a INT)", ["connector = '<name>'"]),
        case!("memory unknown option", [], "CREATE SOURCE x (a INT) WITH (connector = 'memory', path = '/tmp')", ["unknown option 'path'", "memory"]),
        case!("files unknown option", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', formatt = 'csv')", ["unknown option 'formatt'", "valid options", "format"]),
        case!("files missing path", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', format = 'csv')", ["path"]),
        case!("files bad format", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'xml')", ["'xml'", "format", "csv, json, parquet, text"]),
        case!("files bad header", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', header = 'yes')", ["'yes'", "header", "true or false"]),
        case!("files bad mode", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', mode = 'lenient')", ["'lenient'", "mode", "permissive"]),
        case!("files max_files_per_trigger zero", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', max_files_per_trigger = 0)", ["max_files_per_trigger", "positive"]),
        case!("files max_files_per_trigger negative", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', max_files_per_trigger = -1)", ["max_files_per_trigger", "positive"]),
        case!("files max_files_per_trigger text", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', max_files_per_trigger = 'many')", ["max_files_per_trigger", "'many'"]),
        case!("files latest_first not bool", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', latest_first = 'newest')", ["latest_first", "true or false"]),
        case!("files bad clean_source", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', clean_source = 'shred')", ["clean_source", "off, delete, archive"]),
        case!("files archive without dir", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', clean_source = 'archive')", ["source_archive_dir"]),
        case!("files archive inside source", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', clean_source = 'archive', source_archive_dir = '$DIR/in/old')", ["source_archive_dir", "overlap"]),
        case!("files repeated format", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', format = 'csv', format = 'json')", ["'format'", "twice"]),
        case!("files repeated path, other case", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = '$DIR/in', PATH = '$DIR/json', format = 'csv')", ["'path'", "twice"]),
        case!("files url scheme", [], "CREATE SOURCE x (a INT) WITH (connector = 'files', path = 'hdfs://nn/data', format = 'csv')", ["hdfs://", "path"]),
        case!("files text with two columns", [], "CREATE SOURCE x (a VARCHAR, b VARCHAR) WITH (connector = 'files', path = '$DIR/in', format = 'text')", ["text", "one VARCHAR column"]),
        case!("files csv struct column", [], "CREATE SOURCE x (a STRUCT<b INT>) WITH (connector = 'files', path = '$DIR/in', format = 'csv')", ["'a'", "scalar type"]),
        case!("files no columns", [], "CREATE SOURCE x WITH (connector = 'files', path = '$DIR/in', format = 'csv')", ["needs a schema", "columns"]),
        case!("rate unknown option", [], "CREATE SOURCE r WITH (connector = 'rate', rows_per_sec = '5')", ["unknown option 'rows_per_sec'", "rows_per_second"]),
        case!("rate zero rate", [], "CREATE SOURCE r WITH (connector = 'rate', rows_per_second = '0')", ["rows_per_second", "positive"]),
        case!("rate negative rate", [], "CREATE SOURCE r WITH (connector = 'rate', rows_per_second = '-5')", ["rows_per_second", "positive"]),
        case!("rate absurd rate", [], "CREATE SOURCE r WITH (connector = 'rate', rows_per_second = '1000000000000')", ["rows_per_second", "at most"]),
        case!("rate text rate", [], "CREATE SOURCE r WITH (connector = 'rate', rows_per_second = 'fast')", ["rows_per_second", "'fast'"]),
        case!("rate zero partitions", [], "CREATE SOURCE r WITH (connector = 'rate', num_partitions = '0')", ["num_partitions", "positive"]),
        case!("rate bad start_time", [], "CREATE SOURCE r WITH (connector = 'rate', start_time = 'yesterday')", ["start_time", "milliseconds"]),
        case!("rate wrong column", [], "CREATE SOURCE r (id BIGINT) WITH (connector = 'rate')", ["'id'", "timestamp TIMESTAMP, value BIGINT"]),
        case!("rate repeated option", [], "CREATE SOURCE r WITH (connector = 'rate', rows_per_second = '1', rows_per_second = '2')", ["rows_per_second", "twice"]),
        case!("socket missing port", [], "CREATE SOURCE s WITH (connector = 'socket', host = 'localhost')", ["port"]),
        case!("socket bad port", [], "CREATE SOURCE s WITH (connector = 'socket', host = 'localhost', port = '99999')", ["port", "'99999'"]),
        case!("socket unknown option", [], "CREATE SOURCE s WITH (connector = 'socket', host = 'localhost', port = '9', timeout = '1')", ["unknown option 'timeout'", "host, port"]),
        case!("nexmark unknown option", [], "CREATE SOURCE n WITH (connector = 'nexmark', speed = '1')", ["unknown option 'speed'", "nexmark"]),
        case!("source exists", [MEM], "CREATE SOURCE ev (a INT) WITH (connector = 'memory')", ["'ev'", "already exists"]),
        case!("source named like a table", ["CREATE TABLE t (a INT)"], "CREATE SOURCE t (a INT) WITH (connector = 'memory')", ["'t'", "already exists"]),
        case!("unsupported column type", [], "CREATE SOURCE x (a FANCYTYPE) WITH (connector = 'memory')", ["FANCYTYPE"]),
        // --- Watermarks ---
        case!("watermark on unknown column", [], "CREATE SOURCE x (a INT, WATERMARK FOR ts AS ts) WITH (connector = 'memory')", ["no column 'ts'", "a"]),
        case!("watermark on integer", [], "CREATE SOURCE x (n BIGINT, WATERMARK FOR n AS n - INTERVAL '1' SECOND) WITH (connector = 'memory')", ["'n'", "TIMESTAMP"]),
        case!("watermark on text", [], "CREATE SOURCE x (s VARCHAR, WATERMARK FOR s AS s) WITH (connector = 'memory')", ["'s'", "TIMESTAMP"]),
        case!("watermark on date", [], "CREATE SOURCE x (d DATE, WATERMARK FOR d AS d) WITH (connector = 'memory')", ["'d'", "TIMESTAMP"]),
        case!("watermark expression", [], "CREATE SOURCE x (ts TIMESTAMP, WATERMARK FOR ts AS ts * 2) WITH (connector = 'memory')", ["WATERMARK FOR ts", "INTERVAL"]),
        case!("watermark plus interval", [], "CREATE SOURCE x (ts TIMESTAMP, WATERMARK FOR ts AS ts + INTERVAL '1' MINUTE) WITH (connector = 'memory')", ["WATERMARK FOR ts", "ts - INTERVAL"]),
        case!("watermark bad interval", [], "CREATE SOURCE x (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL 'soon' MINUTE) WITH (connector = 'memory')", ["WATERMARK FOR ts", "INTERVAL"]),
        case!("two watermarks", [], "CREATE SOURCE x (ts TIMESTAMP, WATERMARK FOR ts AS ts, WATERMARK FOR ts AS ts) WITH (connector = 'memory')", ["more than one WATERMARK"]),
        // --- CREATE SINK: connectors and options ---
        case!("unknown sink connector", [MEM], "CREATE SINK s WITH (connector = 'nowhere') AS SELECT * FROM ev", ["unknown sink connector 'nowhere'", "memory"]),
        case!("memory sink unknown option", [MEM], "CREATE SINK s WITH (connector = 'memory', colour = 'red') AS SELECT * FROM ev", ["unknown option 'colour'", "memory"]),
        case!("console unknown option", [MEM], "CREATE SINK s WITH (connector = 'console', rows = '5') AS SELECT * FROM ev", ["unknown option 'rows'", "num_rows, truncate"]),
        case!("console bad num_rows", [MEM], "CREATE SINK s WITH (connector = 'console', num_rows = 'all') AS SELECT * FROM ev", ["num_rows", "'all'"]),
        case!("console bad truncate", [MEM], "CREATE SINK s WITH (connector = 'console', truncate = 'maybe') AS SELECT * FROM ev", ["truncate", "true or false"]),
        case!("files sink no path", [MEM], "CREATE SINK s WITH (connector = 'files', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["path", "output directory"]),
        case!("files sink no checkpoint", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/out') AS SELECT * FROM ev", ["needs a checkpoint", "checkpoint = '<dir>'"]),
        case!("files sink bad format", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/out', format = 'avro', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["'avro'", "parquet, csv, json"]),
        case!("files sink unknown option", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/out', compression = 'zstd', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["unknown option 'compression'", "partition_by"]),
        case!("files sink unknown partition column", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/out', partition_by = 'day', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["partition_by", "no column 'day'", "id, word"]),
        case!("files sink partition by every column", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/out', partition_by = 'id, word', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["partition_by", "every column"]),
        case!("files sink update mode", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/out', output_mode = 'update', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["files sink", "update", "output_mode = 'append'"]),
        case!("files sink s3 path", [MEM], "CREATE SINK s WITH (connector = 'files', path = 's3://b/x', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["path", "file://"]),
        case!("files sink repeated path", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/a', path = '$DIR/b', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["'path'", "twice"]),
        case!("bad output mode", [MEM], "CREATE SINK s WITH (output_mode = 'upsert') AS SELECT * FROM ev", ["'upsert'", "append, update, complete"]),
        case!("repeated output mode", [MEM], "CREATE SINK s WITH (output_mode = 'append', output_mode = 'update') AS SELECT * FROM ev", ["output_mode", "twice"]),
        case!("bad trigger", [MEM], "CREATE SINK s WITH (trigger = 'sometimes') AS SELECT * FROM ev", ["'sometimes'", "available_now"]),
        case!("bad interval", [MEM], "CREATE SINK s WITH (trigger = 'processing_time', interval = 'banana') AS SELECT * FROM ev", ["'banana'", "option 'interval'"]),
        case!("interval unit unknown", [MEM], "CREATE SINK s WITH (trigger = 'processing_time', interval = '5 fortnights') AS SELECT * FROM ev", ["option 'interval'", "unit"]),
        case!("interval with once", [MEM], "CREATE SINK s WITH (trigger = 'once', interval = '5 seconds') AS SELECT * FROM ev", ["interval", "trigger = 'once'", "remove the interval"]),
        case!("interval with available_now", [MEM], "CREATE SINK s WITH (trigger = 'available_now', interval = '5 seconds') AS SELECT * FROM ev", ["interval", "available_now"]),
        case!("bad watermark policy", [MEM], "CREATE SINK s WITH (watermark_policy = 'avg') AS SELECT * FROM ev", ["watermark_policy", "'min' or 'max'"]),
        case!("bad min_batches_to_retain", [MEM], "CREATE SINK s WITH (min_batches_to_retain = 'lots') AS SELECT * FROM ev", ["min_batches_to_retain", "'lots'"]),
        case!("bad reset_changed_state", [MEM], "CREATE SINK s WITH (reset_changed_state = 'please') AS SELECT * FROM ev", ["reset_changed_state", "true or false"]),
        case!("bad state_checkpoint_interval", [MEM], "CREATE SINK s WITH (state_checkpoint_interval = 'often') AS SELECT word, count(*) AS n FROM ev GROUP BY word", ["state_checkpoint_interval", "'often'", "number of batches"]),
        case!("zero state_checkpoint_interval", [MEM], "CREATE SINK s WITH (output_mode = 'update', state_checkpoint_interval = '0') AS SELECT word, count(*) AS n FROM ev GROUP BY word", ["state_checkpoint_interval", "at least 1"]),
        case!("state_checkpoint_interval with the continuous trigger", [MEM], "CREATE SINK s WITH (trigger = 'continuous', interval = '1 second', state_checkpoint_interval = '5') AS SELECT * FROM ev", ["state_checkpoint_interval", "continuous"]),
        case!("state_checkpoint_interval over state replay cannot rebuild", [MEM], "CREATE SINK s WITH (output_mode = 'update', state_checkpoint_interval = '5') AS SELECT count(*) AS n FROM ev", ["state_checkpoint_interval", "'aggregate'", "remove the option"]),
        case!("late_rows without state", [MEM], "CREATE SINK s WITH (late_rows = 'late') AS SELECT * FROM ev", ["late_rows", "watermark"]),
        case!("checkpoint url scheme", [MEM], "CREATE SINK s WITH (checkpoint = 'gs://bucket/ck') AS SELECT * FROM ev", ["checkpoint", "s3://"]),
        case!("checkpoint is a file", [MEM], "CREATE SINK s WITH (checkpoint = '$DIR/in/a.csv') AS SELECT * FROM ev", ["checkpoint", "a.csv"]),
        case!("duplicate query name", [MEM, "CREATE SINK s AS SELECT * FROM ev"], "CREATE SINK s AS SELECT * FROM ev", ["already running", "DROP SINK s"]),
        case!("drop unknown sink", [], "DROP SINK nope", ["no query named 'nope'", "SHOW QUERIES"]),
        // --- Output modes and operators ---
        case!("complete without aggregation", [MEM], "CREATE SINK s WITH (output_mode = 'complete') AS SELECT * FROM ev", ["complete output mode", "append"]),
        case!("append aggregation without watermark", [MEM], "CREATE SINK s WITH (output_mode = 'append') AS SELECT word, count(*) FROM ev GROUP BY word", ["append output mode", "watermark"]),
        case!("order by in append", [MEM], "CREATE SINK s AS SELECT * FROM ev ORDER BY id", ["ORDER BY", "complete"]),
        case!("order by in update", [MEM], "CREATE SINK s WITH (output_mode = 'update') AS SELECT word, count(*) AS n FROM ev GROUP BY word ORDER BY n", ["ORDER BY", "complete"]),
        case!("distinct in complete", [MEM], "CREATE SINK s WITH (output_mode = 'complete') AS SELECT DISTINCT word FROM ev", ["complete"]),
        case!("limit without aggregation in complete", [MEM], "CREATE SINK s WITH (output_mode = 'complete') AS SELECT * FROM ev LIMIT 3", ["complete"]),
        case!("limit over update aggregation", [MEM], "CREATE SINK s WITH (output_mode = 'update') AS SELECT word, count(*) FROM ev GROUP BY word LIMIT 3", ["LIMIT", "complete"]),
        case!("limit in a subquery", [MEM], "CREATE SINK s AS SELECT id FROM (SELECT id FROM ev LIMIT 3) t WHERE id > 1", ["LIMIT", "outermost"]),
        // --- Stream-stream joins ---
        case!("outer stream join without watermarks", [MEM], "CREATE SINK s AS SELECT a.id FROM ev a LEFT JOIN ev b ON a.id = b.id", ["LEFT OUTER", "watermark", "range condition"]),
        case!("outer stream join range on a non-event-time column", [TIMED], "CREATE SINK s AS SELECT a.k FROM tev a LEFT JOIN tev b ON a.k = b.k AND b.v BETWEEN a.v AND a.v + 10", ["watermark", "range condition", "a.ts"]),
        case!("outer stream join in update mode", [TIMED], "CREATE SINK s WITH (connector = 'memory', output_mode = 'update') AS SELECT a.k FROM tev a LEFT JOIN tev b ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' MINUTE", ["update output mode", "output_mode = 'append'"]),
        case!("stream join in complete mode", [MEM], "CREATE SINK s WITH (connector = 'memory', output_mode = 'complete') AS SELECT a.id FROM ev a JOIN ev b ON a.id = b.id", ["complete output mode", "without aggregation"]),
        case!("stream join without an equality", [MEM], "CREATE SINK s AS SELECT a.id FROM ev a JOIN ev b ON a.id < b.id", ["equality", "ON a.key = b.key"]),
        case!("stream anti join", [MEM], "CREATE SINK s AS SELECT a.id FROM ev a LEFT ANTI JOIN ev b ON a.id = b.id", ["LEFT ANTI", "not supported"]),
        case!("unwindowed aggregation feeding a stream join", [MEM], "CREATE SINK s WITH (connector = 'memory', output_mode = 'update') AS SELECT x.id FROM (SELECT id, count(*) AS n FROM ev GROUP BY id) x JOIN ev y ON x.id = y.id", ["feeding a stream-stream join", "event-time window"]),
        case!("stream join condition that cannot be planned", [MEM], "CREATE SINK s AS SELECT a.id FROM ev a JOIN ev b ON a.id = b.id AND no_such_fn(a.word)", ["no_such_fn"]),
        case!("outer join with the table outside", [MEM, "CREATE TABLE t (id BIGINT)"], "CREATE SINK s AS SELECT t.id FROM t LEFT JOIN ev ON t.id = ev.id", ["outer side must be the stream"]),
        case!("chained aggregation in update", [TIMED], "CREATE SINK s WITH (output_mode = 'update') AS SELECT k, max(n) FROM (SELECT window_start, window_end, k, count(*) AS n FROM TUMBLE(tev, ts, INTERVAL '10' MINUTE) GROUP BY window_start, window_end, k) w GROUP BY k", ["append"]),
        case!("chained aggregation without a window", [TIMED], "CREATE SINK s AS SELECT k, max(n) FROM (SELECT k, count(*) AS n FROM tev GROUP BY k) w GROUP BY k", ["window", "watermark"]),
        case!("max over an update-mode aggregation", [MEM], "CREATE SINK s WITH (connector = 'memory', output_mode = 'update') AS SELECT word, max(n) FROM (SELECT word, count(*) AS n FROM ev GROUP BY word) w GROUP BY word", ["max(w.n)", "cannot be retracted", "COUNT, SUM and AVG"]),
        case!("sum of decimals over an update-mode aggregation", [MEM], "CREATE SINK s WITH (connector = 'memory', output_mode = 'update') AS SELECT word, sum(d) FROM (SELECT id, word, max(CAST(id AS DECIMAL(10, 2))) AS d FROM ev GROUP BY id, word) x GROUP BY word", ["sum(x.d)", "Decimal", "integer and floating-point"]),
        case!("window function other than an aggregate or a Top-N", [MEM], "CREATE SINK s WITH (connector = 'memory', output_mode = 'update') AS SELECT id, lag(word) OVER (PARTITION BY id ORDER BY word) AS prev FROM ev", ["lag()", "aggregate functions", "Top-N"]),
        case!("over-window aggregate in append mode", [MEM], "CREATE SINK s WITH (connector = 'memory', output_mode = 'append') AS SELECT id, count(*) OVER (PARTITION BY id ORDER BY word) AS n FROM ev", ["update output mode", "output_mode = 'update'"]),
        case!("over-window aggregate in complete mode", [MEM], "CREATE SINK s WITH (connector = 'memory', output_mode = 'complete') AS SELECT id, count(*) OVER (PARTITION BY id ORDER BY word) AS n FROM ev", ["complete output mode", "window function", "update"]),
        case!("window slide longer than size", [TIMED], "CREATE SINK s AS SELECT window_start, window_end, count(*) FROM HOP(tev, ts, INTERVAL '20' MINUTE, INTERVAL '10' MINUTE) GROUP BY window_start, window_end", ["HOP", "slide", "longer than the window size"]),
        case!("continuous trigger over a dedup", [TIMED], "CREATE SINK s WITH (trigger = 'continuous') AS SELECT DISTINCT k FROM tev", ["continuous trigger", "deduplication", "micro-batch trigger"]),
        case!("continuous trigger in complete mode", [TIMED], "CREATE SINK s WITH (trigger = 'continuous', output_mode = 'complete') AS SELECT k, count(*) FROM tev GROUP BY k", ["complete output mode", "continuous trigger", "update"]),
        case!("window() slide longer than size", [TIMED], "CREATE SINK s AS SELECT window(ts, '5 minutes', '10 minutes') AS w, count(*) FROM tev GROUP BY window(ts, '5 minutes', '10 minutes')", ["window()", "slide"]),
        case!("session gap zero", [TIMED], "CREATE SINK s AS SELECT window_start, window_end, count(*) FROM SESSION(tev, ts, INTERVAL '0' MINUTE) GROUP BY window_start, window_end", ["SESSION", "gap", "positive"]),
        case!("append grouped off the watermark", [TIMED], "CREATE SINK s WITH (output_mode = 'append') AS SELECT k, count(*) FROM tev GROUP BY k", ["tev.ts", "window", "update"]),
        case!("window size zero", [TIMED], "CREATE SINK s AS SELECT window_start, window_end, count(*) FROM TUMBLE(tev, ts, INTERVAL '0' MINUTE) GROUP BY window_start, window_end", ["TUMBLE", "size", "positive"]),
        case!("window size not an interval", [TIMED], "CREATE SINK s AS SELECT window_start, window_end, count(*) FROM TUMBLE(tev, ts, 'soon') GROUP BY window_start, window_end", ["TUMBLE", "window size", "soon", "INTERVAL '10' MINUTE"]),
        case!("derived time key in append", [TIMED], "CREATE SINK s WITH (output_mode = 'append') AS SELECT date_trunc('hour', ts) AS h, count(*) FROM tev GROUP BY date_trunc('hour', ts)", ["append", "watermark"]),
        // --- SQL errors in the query ---
        case!("syntax error", [], "CREATE SOURCE (a INT)", ["SQL syntax error"]),
        case!("sink without AS", [MEM], "CREATE SINK s WITH (connector = 'memory')", ["SQL syntax error"]),
        case!("garbage statement", [], "FROBNICATE ALL THE THINGS", ["SQL syntax error"]),
        case!("missing semicolon between statements", [], "CREATE SOURCE a (x INT) WITH (connector = 'memory') CREATE SOURCE b (x INT) WITH (connector = 'memory')", ["expected ';'"]),
        case!("unknown table in sink", [MEM], "CREATE SINK s AS SELECT * FROM evv", ["'evv'", "did you mean 'ev'", "CREATE SOURCE"]),
        case!("unknown column", [MEM], "CREATE SINK s AS SELECT idd FROM ev", ["idd", "id"]),
        case!("type mismatch", [MEM], "CREATE SINK s AS SELECT id + word FROM ev", ["type mismatch", "BIGINT", "VARCHAR", "CAST"]),
        case!("unknown function", [MEM], "CREATE SINK s AS SELECT frobnicate(id) FROM ev", ["frobnicate"]),
        case!("batch query over a stream", [MEM], "SELECT * FROM ev", ["'ev' is a stream", "CREATE SINK"]),
        case!("aggregate without group by column", [MEM], "CREATE SINK s WITH (output_mode = 'update') AS SELECT word, count(*) FROM ev", ["word"]),
        // --- Malformed data at run time (failfast) and vanished sources ---
        case!("malformed csv value failfast", [CSV], "CREATE SINK s AS SELECT * FROM csv", ["b.csv:3", "'x'", "id"]),
        case!("csv header names other columns", ["CREATE SOURCE h (ident BIGINT, word VARCHAR) WITH (connector = 'files', path = '$DIR/in', format = 'csv', header = 'true')"], "CREATE SINK s AS SELECT * FROM h", ["ident", "header", "header = 'false'"]),
        case!("malformed json failfast", ["CREATE SOURCE j (id BIGINT, word VARCHAR) WITH (connector = 'files', path = '$DIR/json', format = 'json', mode = 'failfast')"], "CREATE SINK s AS SELECT * FROM j", ["bad.json:2", "JSON"]),
        case!("json value of the wrong type failfast", ["CREATE SOURCE j (id BIGINT, word VARCHAR) WITH (connector = 'files', path = '$DIR/jsontype', format = 'json', mode = 'failfast')"], "CREATE SINK s AS SELECT * FROM j", ["t.json:1", "id"]),
        case!("parquet file that is not parquet", ["CREATE SOURCE p (id BIGINT) WITH (connector = 'files', path = '$DIR/notparquet', format = 'parquet')"], "CREATE SINK s AS SELECT * FROM p", ["x.parquet", "not a readable Parquet file", "format"]),
        case!("parquet missing a not null column", ["CREATE SOURCE p (id BIGINT, other BIGINT NOT NULL) WITH (connector = 'files', path = '$DIR/parquet', format = 'parquet')"], "CREATE SINK s AS SELECT * FROM p", ["p.parquet", "NOT NULL", "other"]),
        case!("csv file that is not utf-8", ["CREATE SOURCE c (id BIGINT, word VARCHAR) WITH (connector = 'files', path = '$DIR/binary', format = 'csv', mode = 'failfast')"], "CREATE SINK s AS SELECT * FROM c", ["bin.csv", "UTF-8"]),
        case!("not null column missing", ["CREATE SOURCE c (id BIGINT NOT NULL, word VARCHAR) WITH (connector = 'files', path = '$DIR/nulls', format = 'csv', mode = 'failfast')"], "CREATE SINK s AS SELECT * FROM c", ["n.csv:2", "NOT NULL"]),
        case!("source directory vanished", ["CREATE SOURCE gone (id BIGINT) WITH (connector = 'files', path = '$DIR/vanishing', format = 'csv')"], "CREATE SINK s AS SELECT * FROM gone", ["vanishing"]),
        case!("socket nobody listening", ["CREATE SOURCE sock WITH (connector = 'socket', host = '127.0.0.1', port = '1')"], "CREATE SINK s AS SELECT * FROM sock", ["127.0.0.1:1"]),
        case!("csv sink of a struct column", [MEM], "CREATE SINK s WITH (connector = 'files', format = 'csv', path = '$DIR/out', checkpoint = '$DIR/ck') AS SELECT named_struct('a', id) AS st FROM ev", ["CSV", "'st'", "json"]),
        case!("comparison with an uncastable literal", [MEM], "CREATE SINK s AS SELECT * FROM ev WHERE id = 'abc'", ["'abc'", "BIGINT"]),
        case!("rate source under available_now", ["CREATE SOURCE r WITH (connector = 'rate', rows_per_second = '10')"], "CREATE SINK s WITH (trigger = 'available_now') AS SELECT * FROM r", ["available_now", "processing_time"]),
        case!("files sink path under a file", [MEM], "CREATE SINK s WITH (connector = 'files', path = '$DIR/in/a.csv/out', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["path", "a.csv"]),
        case!("checkpoint under a file", [MEM], "CREATE SINK s WITH (checkpoint = '$DIR/in/a.csv/ck') AS SELECT * FROM ev", ["checkpoint", "a.csv"]),
        // --- Reading state and plans of queries ---
        case!("sluice_state unknown query", [], "SELECT * FROM sluice_state('nope', '0')", ["no query named 'nope'", "checkpoint"]),
        case!("sluice_state one argument", [], "SELECT * FROM sluice_state('nope')", ["2 or 3 arguments", "sluice_state('<query name or checkpoint location>'"]),
        case!("sluice_state number as query", [], "SELECT * FROM sluice_state(1, '0')", ["first argument", "string"]),
        case!("sluice_state negative batch", [], "SELECT * FROM sluice_state('nope', '0', -1)", ["batch argument", "integer >= 0"]),
        case!("sluice_state unknown operator", [MEM, "CREATE SINK counts WITH (output_mode = 'complete', checkpoint = '$DIR/ck') AS SELECT word, count(*) AS n FROM ev GROUP BY word"], "SELECT * FROM sluice_state('counts', 'join')", ["unknown state operator 'join'", "'0' (aggregate)"]),
        case!("explain analyze unknown query", [], "EXPLAIN ANALYZE nope", ["no running query named 'nope'"]),
        // --- Checkpoints in use or unusable ---
        case!("checkpoint shared by two queries", [MEM, "CREATE SINK first WITH (checkpoint = '$DIR/ck') AS SELECT * FROM ev"], "CREATE SINK second WITH (checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["in use by query 'first'", "own checkpoint location"]),
    ];
    #[cfg(feature = "kafka")]
    cases.extend(kafka_cases());
    #[cfg(feature = "delta")]
    cases.extend(delta_cases());
    cases
}

/// The Delta connector's options and tables.
#[cfg(feature = "delta")]
fn delta_cases() -> Vec<Case> {
    vec![
        case!("delta sink without path", [MEM], "CREATE SINK d WITH (connector = 'delta', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["path = '<table directory>'"]),
        case!("delta sink without checkpoint", [MEM], "CREATE SINK d WITH (connector = 'delta', path = '$DIR/t') AS SELECT * FROM ev", ["checkpoint"]),
        case!("delta update without merge_keys", [MEM], "CREATE SINK d WITH (connector = 'delta', path = '$DIR/t', output_mode = 'update', checkpoint = '$DIR/ck') AS SELECT word, count(*) AS n FROM ev GROUP BY word", ["merge_keys", "update mode"]),
        case!("delta merge_keys unknown column", [MEM], "CREATE SINK d WITH (connector = 'delta', path = '$DIR/t', output_mode = 'update', merge_keys = 'nope', checkpoint = '$DIR/ck') AS SELECT word, count(*) AS n FROM ev GROUP BY word", ["no column 'nope'", "merge_keys"]),
        case!("delta sink s3 path", [MEM], "CREATE SINK d WITH (connector = 'delta', path = 's3://b/t', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["path", "file://"]),
        case!("delta sink unknown option", [MEM], "CREATE SINK d WITH (connector = 'delta', path = '$DIR/t', mergeSchema = 'true', checkpoint = '$DIR/ck') AS SELECT * FROM ev", ["unknown option 'mergeschema'", "merge_schema"]),
        case!("delta source not a table", [], "CREATE SOURCE d WITH (connector = 'delta', path = '$DIR/empty')", ["not a Delta table", "empty"]),
        case!("delta source bad version", [], "CREATE SOURCE d (a INT) WITH (connector = 'delta', path = '$DIR/empty', version = 'latest')", ["version", "'latest'"]),
        case!("delta source zero max_files_per_trigger", [], "CREATE SOURCE d (a INT) WITH (connector = 'delta', path = '$DIR/empty', max_files_per_trigger = '0')", ["max_files_per_trigger", "positive"]),
    ]
}

/// Kafka options and an unreachable broker (nothing listens on port 1): no
/// broker needed.
#[cfg(feature = "kafka")]
fn kafka_cases() -> Vec<Case> {
    vec![
        case!("kafka without a topic", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1')", ["exactly one of topic, topics", "none was given"]),
        case!("kafka with topic and topic_pattern", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a', topic_pattern = 'b.*')", ["topic and topic_pattern"]),
        case!("kafka bad topic_pattern", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic_pattern = 'a(')", ["topic_pattern", "regular expression"]),
        case!("kafka without bootstrap_servers", [], "CREATE SOURCE k WITH (connector = 'kafka', topic = 'a')", ["bootstrap_servers"]),
        case!("kafka starting_offsets not json", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a', starting_offsets = 'newest')", ["starting_offsets", "earliest, latest or JSON"]),
        case!("kafka two starting points", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a', starting_offsets = 'earliest', starting_timestamp = '5')", ["starting_timestamp", "not both"]),
        case!("kafka zero max_offsets_per_trigger", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a', max_offsets_per_trigger = '0')", ["max_offsets_per_trigger", "positive"]),
        case!("kafka owned client setting", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a', 'kafka.auto.offset.reset' = 'latest')", ["kafka.auto.offset.reset", "starting_offsets"]),
        case!("kafka unknown option", [], "CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a', max_offset_per_trigger = '5')", ["max_offset_per_trigger", "max_offsets_per_trigger"]),
        case!("kafka declared columns without format", [], "CREATE SOURCE k (id BIGINT) WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a')", ["column 'id' is not a Kafka column", "format"]),
        case!("kafka format parquet", [], "CREATE SOURCE k (id BIGINT) WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 'a', format = 'parquet')", ["json, csv or text"]),
        case!("kafka broker down", ["CREATE SOURCE k WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:1', topic = 'a', poll_timeout_ms = '1000')"], "CREATE SINK s AS SELECT * FROM k", ["127.0.0.1:1", "broker"]),
        case!("kafka sink without topic", [MEM], "CREATE SINK s WITH (connector = 'kafka', bootstrap_servers = 'h:1') AS SELECT * FROM ev", ["needs a topic"]),
        case!("kafka sink numeric value", [MEM], "CREATE SINK s WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 't') AS SELECT id AS value FROM ev", ["'value'", "VARCHAR or BYTEA"]),
        case!("kafka sink bad delivery", [MEM], "CREATE SINK s WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 't', delivery = 'exactly-twice') AS SELECT * FROM ev", ["delivery", "exactly_once"]),
        case!("kafka sink owned transactional.id", [MEM], "CREATE SINK s WITH (connector = 'kafka', bootstrap_servers = 'h:1', topic = 't', kafka.transactional.id = 'x') AS SELECT * FROM ev", ["kafka.transactional.id", "query id"]),
    ]
}

/// Lay out `$DIR`: CSV with one malformed row, bad JSON, a Parquet file with
/// an integer `id`, a non-UTF-8 CSV, a NULL in a NOT NULL column, and a
/// directory that vanishes after the source is declared.
fn lay_out(dir: &Path) {
    let write = |rel: &str, body: &[u8]| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    write("in/a.csv", b"id,word\n1,a\n");
    write("in/b.csv", b"id,word\n2,b\nx,c\n");
    write("json/bad.json", b"{\"id\": 1, \"word\": \"a\"}\n{broken\n");
    write("jsontype/t.json", b"{\"id\": \"one\", \"word\": \"a\"}\n");
    write("binary/bin.csv", b"1,\xff\xfe\n");
    write("nulls/n.csv", b"1,a\n,b\n");
    write("notparquet/x.parquet", b"these bytes are not Parquet");
    std::fs::create_dir_all(dir.join("vanishing")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "id",
        arrow::datatypes::DataType::Int64,
        true,
    )]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2]))],
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("parquet")).unwrap();
    let file = std::fs::File::create(dir.join("parquet/p.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Run one case; `Err` describes how it went wrong.
async fn run_case(case: &Case) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    lay_out(tmp.path());
    let sub = |s: &str| s.replace("$DIR", &tmp.path().display().to_string());
    let env = Environment::default();
    let session = crate::manual_session(&env, tmp.path());
    for s in case.setup {
        execute_sql(&session, &sub(s)).await.map_err(|e| format!("setup `{s}` failed: {e}"))?;
    }
    if case.name == "source directory vanished" {
        std::fs::remove_dir_all(tmp.path().join("vanishing")).unwrap();
    }
    let outcome = match execute_sql(&session, &sub(case.sql)).await {
        Err(e) => Err(e.to_string()),
        Ok(results) => {
            let mut failure = None;
            for r in results {
                if let StatementResult::Started(q) = r {
                    if let Err(e) = q.process_all_available().await {
                        failure = Some(e.to_string());
                    }
                }
            }
            failure.map_or(Ok(()), Err)
        }
    };
    session.stop_all().await.ok();
    let message = match outcome {
        Ok(()) => return Err("accepted: no error at creation or at the first trigger".into()),
        Err(m) => m,
    };
    let lower = message.to_lowercase();
    let missing: Vec<&str> = case.expect.iter().copied().filter(|w| !lower.contains(&w.to_lowercase())).collect();
    if !missing.is_empty() {
        return Err(format!("error lacks {missing:?}: {message}"));
    }
    if message.matches(&message[..message.len().min(40)]).count() > 1 && message.len() > 80 {
        return Err(format!("error repeats itself: {message}"));
    }
    Ok(())
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_error() {
    let cases = catalogue();
    assert!(cases.len() >= 100, "the catalogue has {} entries; it must keep at least 100", cases.len());
    let mut names = std::collections::BTreeSet::new();
    let mut failures = vec![];
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name '{}'", case.name);
        match std::panic::AssertUnwindSafe(run_case(case)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{}: {e}", case.name)),
            Err(_) => failures.push(format!("{}: PANICKED", case.name)),
        }
    }
    assert!(failures.is_empty(), "{} of {} bad inputs:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
