-- open: ARGV = prefix, inc, user, session, name, active (domain ms), limit, ttl ms.
-- Returns -1 at the limit (nothing written), 1 when the user came online, 0 otherwise.
local inc, user, session, name = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local active, limit, ttl = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local now = now_ms()
local sk, lk = skey(user), lkey(user)
-- Expired entries do not count: their node is gone, and the reaper will
-- close them (it needs to see them to announce the offline).
local live = redis.call('ZCOUNT', sk, now, '+inf')
if live >= limit then
  return -1
end
local expiry = ms(now + ttl)
redis.call('ZADD', sk, expiry, inc .. '/' .. session)
redis.call('SADD', ikey(inc), pair(user, session))
if live == 0 then
  redis.call('HSET', lk, 'name', name, 'status', 'online', 'active', active)
else
  redis.call('HSET', lk, 'name', name, 'active', active)
end
redis.call('ZADD', ONLINE, 'GT', expiry, user)
if live == 0 then
  return 1
end
return 0
