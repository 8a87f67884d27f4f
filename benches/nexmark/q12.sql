-- mode: update
-- no-batch-equivalent: processing-time windows (PROCTIME() is each micro-batch's time)
-- Q12: processing-time windows: bids per bidder in 10-second windows of
-- processing time.
SELECT bidder, count(*) AS bid_count, window.start AS starttime, window.end AS endtime
FROM (SELECT bidder, PROCTIME() AS p_time FROM bid)
GROUP BY bidder, window(p_time, '10 seconds')
