-- mode: update
-- upsert-key: category
-- Q4: average price per category: the average of each auction's winning
-- (highest) bid made while it was open, per category. The inner
-- aggregation runs in update mode; each change of an auction's maximum is
-- retracted and re-added in the outer average (a changelog).
SELECT q.category, AVG(q.final) AS avg_final FROM (
  SELECT MAX(b.price) AS final, a.category
  FROM auction a JOIN bid b ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
  GROUP BY a.id, a.category
) q GROUP BY q.category
