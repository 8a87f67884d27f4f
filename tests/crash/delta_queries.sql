-- Queries of the Delta crash-restart harness (tests/crash/delta_crash_test.sh):
-- files -> Delta, appended and merged. $IN, $OUT, $CK and $TRIGGER come
-- from the environment.
CREATE SOURCE ev (
  id BIGINT,
  ts TIMESTAMP,
  k VARCHAR,
  v BIGINT
) WITH (connector = 'files', path = '$IN', format = 'csv', header = 'true', max_files_per_trigger = 2);

-- Every kept row appended once, partitioned by k.
CREATE SINK rows_out WITH (
  connector = 'delta', path = '$OUT/rows', partition_by = 'k',
  trigger = '$TRIGGER', checkpoint = '$CK/rows'
) AS
SELECT id, k, v * 2 AS v2 FROM ev WHERE v % 10 <> 0;

-- Running totals per key merged into the table (update mode, MERGE on k).
CREATE SINK totals WITH (
  connector = 'delta', path = '$OUT/totals', output_mode = 'update', merge_keys = 'k',
  trigger = '$TRIGGER', checkpoint = '$CK/totals'
) AS
SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k;
