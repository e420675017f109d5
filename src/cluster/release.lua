-- Ends one request: frees its slot and hold, and counts its charge as
-- unposted on its node until that node commits it (post.lua).
--
-- KEYS: 1 leases, 2 holds, 3 unposted, 4 held (as in admit.lua).
-- ARGV: 1 request id, 2 "instance|P or C", 3 cost (micro).
redis.call('ZREM', KEYS[1], ARGV[1])
local hold = redis.call('HGET', KEYS[2], ARGV[1])
if hold then
  local source, amount = string.match(hold, '^(%a)|(%d+)$')
  redis.call('HINCRBY', KEYS[4], source, -tonumber(amount))
  redis.call('HDEL', KEYS[2], ARGV[1])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], 86400000)
end
return 1
