-- mode: append
-- Q20: expand each bid with the information of its auction, for auctions
-- in category 10 (a stream-stream inner join, all state kept).
SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time AS bid_time, a.item_name, a.description,
       a.initial_bid, a.reserve, a.date_time AS auction_time, a.expires, a.seller, a.category
FROM bid b INNER JOIN auction a ON b.auction = a.id
WHERE a.category = 10
