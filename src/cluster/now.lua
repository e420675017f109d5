-- Put before each script that needs the time: Redis's clock, in ms, so every
-- node's leases and windows run on the same one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
