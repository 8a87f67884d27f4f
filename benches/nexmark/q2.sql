-- mode: append
-- Q2: selection (RisingWave's form of the standard filter on auction ids).
SELECT auction, price FROM bid WHERE auction % 123 = 0
