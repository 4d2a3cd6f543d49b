-- refresh: ARGV = prefix, inc, ttl ms, then user, session, name per session.
-- Re-adds missing entries without the limit check: they are sessions this
-- node still serves, lost by Redis or reaped by another node during an
-- outage, and refusing them now would not close them.
local inc, ttl = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local expiry = ms(now + ttl)
local ik = ikey(inc)
for i = 4, #ARGV, 3 do
  local user, session, name = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local lk = lkey(user)
  redis.call('ZADD', skey(user), expiry, inc .. '/' .. session)
  redis.call('SADD', ik, pair(user, session))
  redis.call('HSET', lk, 'name', name)
  redis.call('HSETNX', lk, 'status', 'online')
  redis.call('HSETNX', lk, 'active', ms(now))
  redis.call('ZADD', ONLINE, 'GT', expiry, user)
end
return 0
