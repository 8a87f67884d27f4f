-- mode: append
-- Q3: local item suggestion: auctions in category 10 of sellers in Oregon,
-- Idaho or California (the generator writes states in lower case). A
-- stream-stream inner join without a time bound: both sides are kept as
-- state.
SELECT p.name, p.city, p.state, a.id
FROM auction a INNER JOIN person p ON a.seller = p.id
WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')
