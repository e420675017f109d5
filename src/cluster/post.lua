-- A node committed ledger row ARGV[3] with ARGV[4] micro of its charges: they
-- move from unposted to that row, which other nodes count until their ledger
-- position reaches it. Rows older than a minute go: every live node loads a
-- committed row within about a second.
--
-- KEYS: 1 unposted, 2 this node's posted rows.
-- ARGV: 1 "instance|P or C", 2 P or C, 3 ledger id, 4 amount, 5 row time ms.
-- Never below zero: after Redis lost its data, a charge released before
-- that may be posted after it.
if redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[4])) < 0 then
  redis.call('HSET', KEYS[1], ARGV[1], 0)
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[3] .. '|' .. ARGV[2] .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. now)
redis.call('PEXPIRE', KEYS[2], 86400000)
local oldest = redis.call('ZRANGE', KEYS[2], 0, 15)
local old = {}
for _, row in ipairs(oldest) do
  if tonumber(string.match(row, '|(%d+)$')) < now - 60000 then
    table.insert(old, row)
  end
end
if #old > 0 then
  redis.call('ZREM', KEYS[2], unpack(old))
end
return 1
