-- touch: ARGV = prefix, user, active (domain ms). Only a connected user has
-- a hash; a touch racing the last close must not leave one behind.
local lk = lkey(ARGV[2])
if redis.call('EXISTS', lk) == 1 then
  redis.call('HSET', lk, 'active', ARGV[3])
end
return 0
