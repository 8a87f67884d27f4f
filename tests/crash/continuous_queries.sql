-- The continuous crash harness's query (tests/crash/continuous_crash_test.sh):
-- a rate source with a fixed start time (so the same offsets give the same
-- rows after every restart) -> filter -> files sink, continuous trigger.
CREATE SOURCE ticks WITH (connector = 'rate', rows_per_second = '${RATE}', start_time = '${START_MS}');

CREATE SINK kept WITH (
  connector = 'files',
  path = '${OUT}',
  format = 'csv',
  trigger = 'continuous',
  interval = '${INTERVAL}',
  checkpoint = '${CK}'
) AS
SELECT value FROM ticks WHERE value % 3 <> 1;
