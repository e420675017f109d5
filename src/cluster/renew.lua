-- Extends the leases of requests still running on the caller. A lease that
-- is gone (released, or expired because this node stalled) stays gone.
--
-- KEYS: 1 leases. ARGV: 1 lease ttl ms, 2.. request ids.
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
return renewed
