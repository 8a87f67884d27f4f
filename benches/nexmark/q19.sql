-- mode: update
-- upsert-key: auction, rank_number
-- Q19: auction top-10 price: the ten highest bids of each auction, with
-- their rank (the tie-break makes the order total, so batch and stream agree).
SELECT auction, bidder, price, date_time, rank_number FROM (
  SELECT auction, bidder, price, date_time,
         ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, date_time, bidder) AS rank_number
  FROM bid
) WHERE rank_number <= 10
