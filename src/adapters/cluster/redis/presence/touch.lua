-- touch: ARGV = prefix, then (user, active in domain ms) pairs: the
-- activity a node recorded since its last flush. Only a connected user has
-- a hash; a touch racing the last close must not leave one behind.
for i = 2, #ARGV - 1, 2 do
  local lk = lkey(ARGV[i])
  if redis.call('EXISTS', lk) == 1 then
    redis.call('HSET', lk, 'active', ARGV[i + 1])
  end
end
return 0
