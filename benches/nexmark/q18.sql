-- mode: update
-- upsert-key: auction, bidder
-- Q18: find last bid: each bidder's latest bid on each auction (a Top-1 by
-- ROW_NUMBER; the tie-break makes the order total, so batch and stream agree).
SELECT auction, bidder, price, date_time FROM (
  SELECT auction, bidder, price, date_time,
         ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC) AS rank_number
  FROM bid
) WHERE rank_number <= 1
