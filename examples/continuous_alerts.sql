-- Alerts under the continuous trigger: rows go from the rate source through
-- the filter to the console as they arrive (a few milliseconds), and an
-- epoch is checkpointed every second. Run with
--   cargo run --release -- run examples/continuous_alerts.sql
-- and stop with Ctrl-C. Each printed table is one chunk, under its epoch.
CREATE SOURCE readings WITH (connector = 'rate', rows_per_second = '20');

CREATE SINK alerts WITH (
  connector = 'console',
  truncate = 'false',
  trigger = 'continuous',
  interval = '1 second'
) AS
SELECT timestamp, value, value % 97 AS sensor
FROM readings
WHERE value % 7 = 0;
