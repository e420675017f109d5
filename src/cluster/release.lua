-- Ends one request: frees its slot and hold, and records its charge as
-- pending until its node reports the ledger row that holds it.
--
-- KEYS: 1 leases, 2 holds, 3 pending, 4 pending values (as in admit.lua).
-- ARGV: 1 request id, 2 instance, 3 source (P or C), 4 cost (micro).
local UNPOSTED = 9000000000000000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if tonumber(ARGV[4]) > 0 then
  redis.call('ZADD', KEYS[3], UNPOSTED, ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|' .. now)
  redis.call('PEXPIRE', KEYS[3], 86400000)
  redis.call('PEXPIRE', KEYS[4], 86400000)
end
return 1
