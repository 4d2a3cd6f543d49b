-- expired: ARGV = prefix, max. Returns user, name, inc, session for up to
-- `max` expired entries of users who have no live entry left. Removes
-- nothing but stale online scores (a user whose entries are all gone, or
-- whose score fell behind a live entry), which only settle can leave if
-- Redis lost part of the data.
local max = tonumber(ARGV[2])
local now = now_ms()
local out = {}
local users = redis.call('ZRANGEBYSCORE', ONLINE, '-inf', '(' .. ms(now), 'LIMIT', 0, max)
for _, user in ipairs(users) do
  local sk = skey(user)
  local members = redis.call('ZRANGEBYSCORE', sk, '-inf', '(' .. ms(now))
  if #members == 0 then
    settle(user, now)
  else
    local name = redis.call('HGET', lkey(user), 'name') or ''
    for _, member in ipairs(members) do
      if #out < 4 * max then
        local inc, session = split(member)
        out[#out + 1] = user
        out[#out + 1] = name
        out[#out + 1] = inc
        out[#out + 1] = session
      end
    end
  end
end
return out
