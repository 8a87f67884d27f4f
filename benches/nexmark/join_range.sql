-- mode: append
-- A time-bounded stream-stream join (not a Nexmark query): each bid with its
-- auction when the bid came within 10 seconds of the auction's opening.
-- The range bounds both sides' state by the watermark.
SELECT b.auction, b.bidder, b.price, b.date_time AS bid_time, a.date_time AS auction_time, a.seller
FROM bid b JOIN auction a
  ON b.auction = a.id AND b.date_time BETWEEN a.date_time AND a.date_time + INTERVAL '10' SECOND
