-- Word count over text files: every new file in examples/data/words adds to
-- the running counts, printed in complete mode after each micro-batch.
CREATE SOURCE lines (value VARCHAR)
WITH (connector = 'files', path = 'examples/data/words', format = 'text', max_files_per_trigger = 1);

CREATE SINK word_counts WITH (
  connector = 'console',
  output_mode = 'complete',
  trigger = 'available_now',
  checkpoint = 'target/example-out/checkpoints/word_counts'
) AS
SELECT word, count(*) AS n
FROM (SELECT unnest(string_to_array(value, ' ')) AS word FROM lines)
WHERE word <> ''
GROUP BY word
ORDER BY n DESC, word;
