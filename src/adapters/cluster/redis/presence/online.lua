-- online_users: ARGV = prefix, limit. Returns user, name for up to `limit`
-- users with a live entry, by latest expiry then id. The online score is
-- kept exact by settle, but each candidate is still checked against its
-- entries, so that no stale score can ever show a user online.
local limit = tonumber(ARGV[2])
local now = now_ms()
local out = {}
local offset = 0
while #out < 2 * limit do
  local batch = redis.call('ZRANGEBYSCORE', ONLINE, now, '+inf', 'LIMIT', offset, 256)
  if #batch == 0 then
    break
  end
  offset = offset + #batch
  for _, user in ipairs(batch) do
    if #out < 2 * limit and redis.call('ZCOUNT', skey(user), now, '+inf') > 0 then
      local name = redis.call('HGET', lkey(user), 'name')
      if name then
        out[#out + 1] = user
        out[#out + 1] = name
      end
    end
  end
end
return out
