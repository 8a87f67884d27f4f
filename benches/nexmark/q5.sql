-- mode: append
-- closed-by: window_end
-- Q5: hot items: the auctions with the most bids in each 10-second window
-- sliding every 2 seconds (the windowed count joined, on the window, with
-- its per-window maximum, a chained aggregation of the same count).
SELECT a.auction, a.num, a.window_start, a.window_end
FROM (SELECT auction, count(*) AS num, window_start, window_end
      FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
      GROUP BY auction, window_start, window_end) a
JOIN (SELECT max(num) AS maxn, window_start, window_end
      FROM (SELECT auction, count(*) AS num, window_start, window_end
            FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
            GROUP BY auction, window_start, window_end) c
      GROUP BY window_start, window_end) m
  ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.num >= m.maxn
