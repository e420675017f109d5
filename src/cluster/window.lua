-- A sliding window of attempts shared by the nodes (sign-in, sign-up and
-- redemption throttles).
--
-- KEYS: 1 the window (ZSET member -> attempt ms).
-- ARGV: 1 check, hit or reset; 2 limit; 3 window ms.
-- Returns 0 when under the limit (after a hit: counted), else the ms until
-- the oldest attempt leaves the window.
if ARGV[1] == 'reset' then
  redis.call('DEL', KEYS[1])
  return 0
end
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if ARGV[1] == 'hit' then
  redis.call('ZADD', KEYS[1], now, now .. ':' .. n .. ':' .. t[2])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
if n >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
return 0
