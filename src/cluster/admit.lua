-- Admits one request for one user, atomically across every node.
--
-- KEYS: 1 leases (ZSET request id -> expiry ms), 2 holds (HASH request id ->
-- "P|micro" or "C|micro"), 3 minute (ZSET request id -> admission ms),
-- 4 unposted (HASH "instance|P or C" -> micro settled there and not yet in a
-- committed ledger row), 5 held (HASH P and C -> the sum of the holds).
-- Rows committed lately are in "<prefix>:posted:<instance>"
-- (ZSET ledger id -> "id|P or C|micro|row ms"), one per node.
-- ARGV: 1 request id, 2 instance, 3 lease ttl ms, 4 concurrency, 5 requests
-- per minute (0: none), 6 ledger position of the caller, 7 plan daily quota
-- (-1: no plan), 8 plan usage today in the caller's memory, 9 start of today
-- ms, 10 credit balance in the caller's memory, 11 estimate, 12 key prefix.
--
-- Returns {0, source (1 plan, 2 credits), held, plan used, balance} or
-- {refusal, detail}: 1 concurrency, 2 requests per minute (detail: ms until a
-- slot frees), 3 daily quota, 4 credits held by requests in flight,
-- 5 insufficient credits.
local id, instance = ARGV[1], ARGV[2]
local ttl, concurrency, rpm = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local quota, used, day_start = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local balance, estimate = tonumber(ARGV[10]), tonumber(ARGV[11])
local DAY = 86400000

-- Leases that were not renewed belong to a node that died: their slots and
-- holds come back.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(expired))) do
    if v then
      local source, amount = string.match(v, '^(%a)|(%d+)$')
      redis.call('HINCRBY', KEYS[5], source, -tonumber(amount))
    end
  end
  redis.call('HDEL', KEYS[2], unpack(expired))
end

if redis.call('ZCARD', KEYS[1]) >= concurrency then
  return {1, concurrency}
end

if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[3]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {2, tonumber(oldest[2]) + 60000 - now}
  end
end

-- What the caller's memory lacks: every request in flight holds its part;
-- other nodes' charges are either not committed yet (unposted) or in ledger
-- rows past the caller's position.
local sums = redis.call('HMGET', KEYS[5], 'P', 'C')
local plan_held, credit_held = tonumber(sums[1]) or 0, tonumber(sums[2]) or 0
local plan_pending, credit_pending = 0, 0
local others = {}
local unposted = redis.call('HGETALL', KEYS[4])
for i = 1, #unposted, 2 do
  local from, source = string.match(unposted[i], '^(.*)|(%a)$')
  -- A node whose heartbeat stopped will never commit what it still had
  -- unposted (the crash lost it), and the rows it did commit are in the
  -- ledger, loaded everywhere within a second: its counter goes.
  if from ~= instance and redis.call('EXISTS', 'codex-proxy:node:' .. from) == 0 then
    redis.call('HDEL', KEYS[4], unposted[i])
  elseif from ~= instance then
    others[from] = true
    if source == 'C' then
      credit_pending = credit_pending + tonumber(unposted[i + 1])
    else
      plan_pending = plan_pending + tonumber(unposted[i + 1])
    end
  end
end
for from in pairs(others) do
  for _, row in ipairs(redis.call('ZRANGEBYSCORE', ARGV[12] .. ':posted:' .. from, '(' .. ARGV[6], '+inf')) do
    local source, amount, at = string.match(row, '^%d+|(%a)|(%d+)|(%d+)|%d+$')
    if source == 'C' then
      credit_pending = credit_pending + tonumber(amount)
    elseif tonumber(at) >= day_start then
      plan_pending = plan_pending + tonumber(amount)
    end
  end
end

-- The decision order of a single node, on cluster-wide figures.
local plan_used = used + plan_pending
local source, held
if quota >= 0 and plan_used + plan_held < quota then
  source, held = 'P', estimate
else
  local available = balance - credit_pending - credit_held
  if available > 0 then
    source, held = 'C', math.min(estimate, available)
  elseif quota >= 0 then
    return {3, 0}
  elseif balance - credit_pending > 0 then
    return {4, 0}
  else
    return {5, 0}
  end
end

redis.call('ZADD', KEYS[1], now + ttl, id)
redis.call('HSET', KEYS[2], id, source .. '|' .. held)
redis.call('HINCRBY', KEYS[5], source, held)
redis.call('PEXPIRE', KEYS[1], DAY)
redis.call('PEXPIRE', KEYS[2], DAY)
redis.call('PEXPIRE', KEYS[5], DAY)
if rpm > 0 then
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('PEXPIRE', KEYS[3], 61000)
end
return {0, source == 'P' and 1 or 2, held, plan_used, balance - credit_pending}
