-- mode: append
-- Q10: log to file system: every bid with its day and minute as Spark /
-- Flink date_format patterns (the partition columns of a files sink with
-- partition_by = 'dt, hm').
SELECT auction, bidder, price, date_time, extra,
       date_format(date_time, 'yyyy-MM-dd') AS dt, date_format(date_time, 'HH:mm') AS hm
FROM bid
