-- Files-to-Parquet ETL with a stream-static join.
-- New CSV files landing in examples/data/orders are joined with the static
-- products table and appended, exactly once, as Parquet under
-- target/example-out/orders_enriched. Stops when
-- every file present at start is processed (available_now).
CREATE EXTERNAL TABLE products (id BIGINT, name VARCHAR, price DOUBLE)
STORED AS CSV LOCATION 'examples/data/products.csv' OPTIONS ('format.has_header' 'true');

CREATE SOURCE orders (
  order_id BIGINT,
  ts TIMESTAMP,
  product_id BIGINT,
  qty INT,
  customer VARCHAR
) WITH (connector = 'files', path = 'examples/data/orders', format = 'csv', header = 'true');

CREATE SINK orders_enriched WITH (
  connector = 'files',
  path = 'target/example-out/orders_enriched',
  format = 'parquet',
  trigger = 'available_now',
  checkpoint = 'target/example-out/checkpoints/orders_enriched'
) AS
SELECT o.order_id, o.ts, o.customer, p.name AS product, o.qty, o.qty * p.price AS cost
FROM orders o
JOIN products p ON o.product_id = p.id;

-- The same rows on the console, one micro-batch per file.
CREATE SINK orders_console WITH (
  connector = 'console',
  trigger = 'available_now',
  checkpoint = 'target/example-out/checkpoints/orders_console'
) AS
SELECT o.order_id, o.customer, p.name AS product, o.qty * p.price AS cost
FROM orders o
LEFT JOIN products p ON o.product_id = p.id;
