-- Word count over a socket (the classic Spark example). Start a server
-- first, e.g. `nc -lk 9999`, type lines, and watch the counts update.
-- The socket source is not replayable: use it for trying things out only.
CREATE SOURCE lines (value VARCHAR)
WITH (connector = 'socket', host = 'localhost', port = '9999');

CREATE SINK word_counts WITH (
  connector = 'console',
  output_mode = 'update',
  trigger = 'processing_time',
  interval = '1 second'
) AS
SELECT word, count(*) AS n
FROM (SELECT unnest(string_to_array(value, ' ')) AS word FROM lines)
WHERE word <> ''
GROUP BY word;
