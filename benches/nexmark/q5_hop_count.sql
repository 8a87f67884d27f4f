-- mode: append
-- closed-by: window_end
-- The windowed count inside Q5 (hot items): bids per auction per 10-second
-- window sliding every 2 seconds.
SELECT auction, count(*) AS num, window_start, window_end
FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
GROUP BY auction, window_start, window_end
