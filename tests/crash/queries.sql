-- Queries of the crash-restart harness (tests/crash/crash_test.sh).
-- $IN, $OUT, $CK, $TRIGGER and $STATE_EVERY (the stateful queries'
-- state_checkpoint_interval) come from the environment.
CREATE SOURCE ev (
  id BIGINT,
  ts TIMESTAMP,
  k VARCHAR,
  v BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'files', path = '$IN', format = 'csv', header = 'true', max_files_per_trigger = 2);

-- The same files as a second stream, read at another pace (the two sides of
-- the join below advance at different rates).
CREATE SOURCE ev2 (
  id BIGINT,
  ts TIMESTAMP,
  k VARCHAR,
  v BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'files', path = '$IN', format = 'csv', header = 'true', max_files_per_trigger = 3);

-- Stateless ETL, files to files.
CREATE SINK etl WITH (
  connector = 'files', path = '$OUT/etl', format = 'csv',
  trigger = '$TRIGGER', checkpoint = '$CK/etl'
) AS
SELECT id, k, v * 2 AS v2 FROM ev WHERE v % 10 <> 0;

-- Windowed aggregation in append mode, files sink.
CREATE SINK win WITH (
  connector = 'files', path = '$OUT/win', format = 'csv',
  trigger = '$TRIGGER', checkpoint = '$CK/win',
  state_checkpoint_interval = '$STATE_EVERY'
) AS
SELECT window_start, window_end, k, count(*) AS n, sum(v) AS s
FROM TUMBLE(ev, ts, INTERVAL '10' SECOND)
GROUP BY window_start, window_end, k;

-- Update-mode aggregation into the at-least-once console sink: the harness
-- applies each printed batch id once and checks replays are identical.
CREATE SINK totals WITH (
  connector = 'console', output_mode = 'update',
  trigger = '$TRIGGER', checkpoint = '$CK/totals',
  state_checkpoint_interval = '$STATE_EVERY'
) AS
SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k;

-- A stream-stream inner join with a time range (state evicted by the
-- watermark), files sink: every pair once.
CREATE SINK pairs WITH (
  connector = 'files', path = '$OUT/pairs', format = 'csv',
  trigger = '$TRIGGER', checkpoint = '$CK/pairs',
  state_checkpoint_interval = '$STATE_EVERY'
) AS
SELECT a.id AS a_id, b.id AS b_id, a.k
FROM ev a JOIN ev2 b ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '3' SECOND;
