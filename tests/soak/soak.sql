-- The soak test's query (tests/soak/soak.sh): a rate source into a windowed
-- aggregation with a watermark, written exactly once by the files sink.
CREATE SOURCE r (WATERMARK FOR timestamp AS timestamp - INTERVAL '5' SECOND)
  WITH (connector = 'rate', rows_per_second = '$SOAK_RATE');

CREATE SINK soak WITH (
  connector = 'files',
  path = '$SOAK_DIR/out',
  format = 'parquet',
  checkpoint = '$SOAK_DIR/ck',
  trigger = 'processing_time',
  interval = '1 second'
) AS
SELECT window_start, window_end, value % 100 AS k, count(*) AS n, sum(value) AS total
FROM TUMBLE(r, timestamp, INTERVAL '10' SECOND)
GROUP BY window_start, window_end, value % 100;
