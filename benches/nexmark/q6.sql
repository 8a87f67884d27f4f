-- mode: update
-- upsert-key: id
-- Q6: average selling price by seller: each auction's winning (highest)
-- bid, with the average winning price of the seller's last 10 auctions up
-- to it (ordered by close time, then id, so batch and stream agree). The
-- per-auction maxima change as bids arrive; each change retracts the
-- auction's old row from the seller's partition and re-evaluates the
-- window over it.
SELECT id, seller, final,
       AVG(final) OVER (PARTITION BY seller ORDER BY expires, id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
FROM (
  SELECT a.id, a.seller, a.expires, MAX(b.price) AS final
  FROM auction a JOIN bid b ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
  GROUP BY a.id, a.seller, a.expires
) q
