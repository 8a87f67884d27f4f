-- Files to Delta Lake, exactly once.
-- The CSV order files in examples/data/orders are appended to the Delta
-- table target/example-out/delta/orders (partitioned by customer), and the
-- spend per customer is merged into target/example-out/delta/spend (update
-- mode, MERGE on customer). Each micro-batch is one Delta commit carrying
-- the query id and batch id, so a restart never writes a batch twice. Stops
-- when every file present at start is processed (available_now). Read the
-- tables back with a batch query (in the shell, or any Delta reader):
--   CREATE SOURCE spend WITH (connector = 'delta', path = 'target/example-out/delta/spend');
--   SELECT * FROM spend ORDER BY customer;
CREATE SOURCE orders (
  order_id BIGINT,
  ts TIMESTAMP,
  product_id BIGINT,
  qty INT,
  customer VARCHAR
) WITH (connector = 'files', path = 'examples/data/orders', format = 'csv', header = 'true', max_files_per_trigger = 1);

CREATE SINK orders_delta WITH (
  connector = 'delta',
  path = 'target/example-out/delta/orders',
  partition_by = 'customer',
  trigger = 'available_now',
  checkpoint = 'target/example-out/checkpoints/orders_delta'
) AS
SELECT order_id, ts, product_id, qty, customer FROM orders;

CREATE SINK spend_delta WITH (
  connector = 'delta',
  path = 'target/example-out/delta/spend',
  output_mode = 'update',
  merge_keys = 'customer',
  trigger = 'available_now',
  checkpoint = 'target/example-out/checkpoints/spend_delta'
) AS
SELECT customer, count(*) AS orders, sum(qty) AS items FROM orders GROUP BY customer;
