-- mode: append
-- closed-by: window_end
-- Bids per auction per 10-second tumbling window (the issue's reference query).
SELECT auction, count(*) AS num, window_start, window_end
FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
GROUP BY auction, window_start, window_end
