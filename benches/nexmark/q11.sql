-- mode: append
-- closed-by: window_end
-- no-batch-equivalent: DataFusion batch has no session-window merging (it would give one session per bid)
-- Q11: user sessions: bids per bidder per session (gap 10 seconds).
SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end
FROM SESSION(bid, date_time, INTERVAL '10' SECOND)
GROUP BY bidder, window_start, window_end
