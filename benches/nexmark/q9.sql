-- mode: update
-- upsert-key: id
-- Q9: winning bids: each auction with its highest bid made while it was
-- open (a stream-stream join feeding a Top-1 per auction; ties go to the
-- earlier bid, then the lower bidder id, so batch and stream agree).
SELECT id, item_name, seller, category, price, bidder, bid_time FROM (
  SELECT a.id, a.item_name, a.seller, a.category, b.price, b.bidder, b.date_time AS bid_time,
         ROW_NUMBER() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time, b.bidder) AS rownum
  FROM auction a JOIN bid b ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
) WHERE rownum <= 1
