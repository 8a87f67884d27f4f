-- Query of the Kafka crash-restart harness (tests/crash/kafka_crash_test.sh).
-- $BOOTSTRAP, $IN_TOPIC, $OUT_TOPIC, $CK and $TRIGGER come from the
-- environment. Input values are JSON {"id":..,"k":..,"v":..}; at most 50
-- offsets per batch, so a run is many small batches (many transactions).
CREATE SOURCE ev (
  id BIGINT,
  k VARCHAR,
  v BIGINT
) WITH (
  connector = 'kafka', bootstrap_servers = '$BOOTSTRAP', topic = '$IN_TOPIC',
  starting_offsets = 'earliest', max_offsets_per_trigger = '50', format = 'json'
);

-- Stateless ETL, Kafka to Kafka, exactly once: key is the id, the value is
-- the rest of the row as JSON ({"key":..,"id":..,"k":..,"v2":..}).
CREATE SINK out WITH (
  connector = 'kafka', bootstrap_servers = '$BOOTSTRAP', topic = '$OUT_TOPIC',
  delivery = 'exactly_once', trigger = '$TRIGGER', checkpoint = '$CK/out'
) AS
SELECT CAST(id AS VARCHAR) AS key, id, k, v * 2 AS v2 FROM ev WHERE v % 10 <> 0;
