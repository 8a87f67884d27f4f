-- mode: append
-- Q13: bounded side input join: each bid joined with the static table
-- `side_input` (key 0..9999, value) on auction mod 10000 (a stream-static
-- join; Nexmark's processing-time lookup reads the same unchanging table).
SELECT b.auction, b.bidder, b.price, b.date_time, s.value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key
