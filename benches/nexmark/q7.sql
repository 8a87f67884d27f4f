-- mode: append
-- closed-by: window_end
-- Q7: highest bid: the bids at the highest price of their 10-second window
-- (a range join of the bid stream with its windowed maximum; the window's
-- end is the aggregation side's event time, so both sides' state is
-- evicted by the watermark).
SELECT b.auction, b.price, b.bidder, b.date_time, m.window_end
FROM bid b
JOIN (SELECT max(price) AS maxprice, window_end
      FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
      GROUP BY window_start, window_end) m
  ON b.price = m.maxprice
 AND b.date_time BETWEEN m.window_end - INTERVAL '10' SECOND AND m.window_end
