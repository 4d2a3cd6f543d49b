-- live: ARGV = prefix, user ids. Returns user, status, active for each who
-- has a live entry. The defaults cover a hash lost while entries survived.
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local user = ARGV[i]
  if redis.call('ZCOUNT', skey(user), now, '+inf') > 0 then
    local h = redis.call('HMGET', lkey(user), 'status', 'active')
    out[#out + 1] = user
    out[#out + 1] = h[1] or 'online'
    out[#out + 1] = h[2] or ms(now)
  end
end
return out
