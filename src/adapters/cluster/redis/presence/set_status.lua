-- set_status: ARGV = prefix, user, status, active (domain ms).
-- Returns -1 when the user has no live entry, else 1 if the status changed, 0 if not.
local user, status, active = ARGV[2], ARGV[3], ARGV[4]
if redis.call('ZCOUNT', skey(user), now_ms(), '+inf') == 0 then
  return -1
end
local lk = lkey(user)
local old = redis.call('HGET', lk, 'status') or 'online'
redis.call('HSET', lk, 'status', status, 'active', active)
if old == status then
  return 0
end
return 1
