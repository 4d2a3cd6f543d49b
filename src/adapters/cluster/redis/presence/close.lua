-- close: ARGV = prefix, user, session.
-- Returns 1 when the entry was removed and no live entry remains, else 0.
local user, session = ARGV[2], ARGV[3]
local sk = skey(user)
local found = nil
for _, member in ipairs(redis.call('ZRANGE', sk, 0, -1)) do
  local inc, s = split(member)
  if s == session then
    found = member
    redis.call('ZREM', sk, member)
    redis.call('SREM', ikey(inc), pair(user, session))
    break
  end
end
if not found then
  return 0
end
if settle(user, now_ms()) then
  return 1
end
return 0
