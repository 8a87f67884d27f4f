-- Word count over a Kafka topic (the seeds' word count), exactly once into
-- another topic. With a broker (`scripts/kafka.sh start`):
--
--   scripts/kafka.sh topic-create lines 2
--   scripts/kafka.sh topic-create word-counts 1
--   cargo run --release -- run examples/kafka_wordcount.sql
--   echo "to be or not to be" | scripts/kafka.sh console-produce lines    # in another shell
--   scripts/kafka.sh console-consume word-counts                           # key<TAB>{"word":..,"n":..}
--
-- Each micro-batch's changed counts are one Kafka transaction: consumers
-- reading with isolation.level=read_committed see every update once, even
-- across crashes and restarts (the checkpoint keeps the offsets and state).
CREATE SOURCE lines (value VARCHAR)
WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:19092', topic = 'lines',
      starting_offsets = 'earliest');

CREATE SINK word_counts WITH (
  connector = 'kafka',
  bootstrap_servers = '127.0.0.1:19092',
  topic = 'word-counts',
  delivery = 'exactly_once',
  output_mode = 'update',
  trigger = 'processing_time',
  interval = '1 second',
  checkpoint = 'target/example-ck/kafka_wordcount'
) AS
SELECT word AS key, word, count(*) AS n
FROM (SELECT unnest(string_to_array(value, ' ')) AS word FROM lines)
WHERE word <> ''
GROUP BY word;
